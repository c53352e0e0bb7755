"""The evaluate CLI: a good run writes JSON; bad input is one line, exit 2."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from mlheads import errors
from mlheads.commands import score
from mlheads.evaluation import metrics

# The score CLI in subprocesses.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'mlheads.commands.score', *args],
                        capture_output=True, text=True, env=env, timeout=120,
                        check=False)


@pytest.fixture(name='files')
def _files(tmp_path):
  rng = np.random.default_rng(0)
  labels = (rng.random((20, 3)) < 0.4).astype(np.int8)
  labels[:, 2] = 0
  scores = rng.random((20, 3)).astype(np.float32)
  paths = {}
  for name, a in [('labels', labels), ('scores', scores),
                  ('mask', np.ones((20, 3), np.int8))]:
    paths[name] = str(tmp_path / f'{name}.npy')
    np.save(paths[name], a)
  return paths, labels, scores


def test_good_run_writes_json_where_asked_and_only_there(files, tmp_path):
  paths, labels, scores = files
  out = str(tmp_path / 'out' / 'm.json')
  os.makedirs(os.path.dirname(out))
  before = set(os.listdir(tmp_path))
  r = _run(f'--labels={paths["labels"]}', f'--scores={paths["scores"]}',
           f'--mask={paths["mask"]}', '--threshold=0.4', f'--output={out}')
  assert r.returncode == 0, r.stderr
  assert 'f1_macro' in r.stdout and 'undefined' in r.stdout
  assert set(os.listdir(tmp_path)) == before  # nothing next to the inputs
  with open(out) as f:
    result = json.load(f)
  expected = metrics.compute(labels, scores, threshold=0.4)
  for key, v in expected.items():
    got = result['metrics'][key]
    assert (got is None and np.isnan(v)) or got == pytest.approx(v), key
  assert result['per_class']['roc_auc'][2] is None
  assert result['classes_left_out_of_macro_ap_auc'] == [2]


def test_npz_csv_and_logits_give_the_same_metrics(files, tmp_path):
  """One .npz holding labels and logits, or CSV tables with a header of class names, scored
  with --from_logits, equal the .npy probabilities; without --output nothing is written."""
  _, labels, scores = files
  logits = np.log(scores) - np.log1p(-scores)
  np.savez(tmp_path / 'preds.npz', labels=labels, logits=logits)
  header = 'Comedy,Drama,Short'
  np.savetxt(tmp_path / 'y.csv', labels, fmt='%d', delimiter=',', header=header, comments='')
  np.savetxt(tmp_path / 'z.csv', logits, fmt='%.17g', delimiter=',', header=header,
             comments='')
  before = set(os.listdir(tmp_path))
  expected = metrics.compute(labels, scores)
  for args in ([f'--labels={tmp_path}/preds.npz', f'--scores={tmp_path}/preds.npz'],
               [f'--labels={tmp_path}/preds.npz:labels', f'--scores={tmp_path}/preds.npz:logits'],
               [f'--labels={tmp_path}/y.csv', f'--scores={tmp_path}/z.csv']):
    out = tmp_path / 'o.json'
    r = _run(*args, '--from_logits', f'--output={out}')
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    out.unlink()
    for key, v in expected.items():
      got = result['metrics'][key]
      assert (got is None and np.isnan(v)) or got == pytest.approx(v, abs=1e-6), (args, key)
    assert result['inputs']['from_logits'] is True
    if args[0].endswith('.csv'):
      assert result['classes'] == header.split(',')
      assert 'Comedy' in r.stdout  # the per-class table names the classes
  r = _run(f'--labels={tmp_path}/y.csv', f'--scores={tmp_path}/z.csv', '--from_logits')
  assert r.returncode == 0 and 'wrote' not in r.stdout
  assert set(os.listdir(tmp_path)) == before


@pytest.mark.parametrize('make,name,expect', [
    (lambda p: np.savez(p / 'x.npz', a=np.zeros(3), b=np.zeros(3)), 'x.npz',
     "holds arrays ['a', 'b']; name one"),
    (lambda p: (p / 'x.csv').write_text('a,b\n1,x\n'), 'x.csv',
     "x.csv, line 2, column 'b' is 'x', not a number"),
    (lambda p: (p / 'x.csv').write_text('a,b\n1,\n'), 'x.csv',
     "x.csv, line 2, column 'b' is empty; scores must be numbers"),
    (lambda p: (p / 'x.txt').write_text('1'), 'x.txt', 'expected a .npy, .npz, .csv or .tsv'),
])
def test_bad_files_name_the_file_and_the_cell(tmp_path, make, name, expect):
  make(tmp_path)
  with pytest.raises(errors.UsageError, match=re.escape(expect)) as e:
    score.load('scores', str(tmp_path / name))
  assert '\n' not in str(e.value)


def test_output_into_a_missing_directory_is_refused_before_reading(files, tmp_path):
  paths, _, _ = files
  r = _run(f'--labels={paths["labels"]}', f'--scores={paths["scores"]}',
           f'--output={tmp_path}/nope/m.json')
  assert r.returncode == 2 and r.stderr.strip().splitlines() == [
      f'error: --output={tmp_path}/nope/m.json: no such directory'], r.stderr


def _bad(tmp_path, name, array):
  path = str(tmp_path / f'bad_{name}.npy')
  np.save(path, array, allow_pickle=True)
  return path


def _with(array, i, j, value):
  out = array.astype(np.float64)
  out[i, j] = value
  return out


@pytest.mark.parametrize('case', ['label_2', 'nan_score', 'score_1.5',
                                  'shape', 'pickle'])
def test_bad_input_is_one_line_exit_2(files, tmp_path, case):
  paths, labels, scores = files
  name, array, expect = {
      'label_2': ('labels', _with(labels, 3, 1, 2), '[3, 1] = 2.0'),
      'nan_score': ('scores', _with(scores, 4, 0, np.nan), '[4, 0] = nan'),
      'score_1.5': ('scores', _with(scores, 5, 2, 1.5), '[5, 2] = 1.5'),
      'shape': ('scores', scores[:, :2], '(20, 2)'),
      'pickle': ('labels', np.array([{'a': 1}], dtype=object), 'cannot read'),
  }[case]
  paths = dict(paths, **{name: _bad(tmp_path, name, array)})
  r = _run(f'--labels={paths["labels"]}', f'--scores={paths["scores"]}')
  assert r.returncode == 2
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1, r.stderr
  assert paths[name] in lines[0] and expect in lines[0], lines[0]
  assert 'Traceback' not in r.stderr


def test_missing_file_and_missing_flag(files, tmp_path):
  paths, _, _ = files
  r = _run(f'--labels={tmp_path}/nope.npy', f'--scores={paths["scores"]}')
  assert r.returncode == 2 and 'nope.npy' in r.stderr
  assert len(r.stderr.strip().splitlines()) == 1
  r = _run(f'--labels={paths["labels"]}')
  assert r.returncode == 2 and '--scores' in r.stderr
  r = _run(f'--labels={paths["labels"]}', f'--scores={paths["scores"]}',
           '--threshold=abc')
  assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
