"""mlheads.compare: grid parsing, errors before training, the runs, the tables, reruns."""

import json
import os
import pathlib
import re
import shutil
import subprocess

from matplotlib import image
import numpy as np
import pytest

from conftest import ROOT, run_cli, tiny_headline_config
from mlheads import errors
from mlheads import train
from mlheads.commands import compare
from mlheads.commands import compare_report

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
GRID = ['heads.main.kind=sigmoid,softmax']
SEEDS = [0, 1]


def _flat(d, prefix=''):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[prefix + k] = v
  return out


def tiny_sets(data_dir: str, epochs: int = 2) -> list[str]:
  """tests/conftest.py's tiny headline config as compare's --set overrides."""
  from experiments import headline  # pylint: disable=g-import-not-at-top
  tiny = tiny_headline_config(data_dir)
  tiny.epochs = epochs
  base, small = (_flat(c.to_dict()) for c in (headline.get_config(), tiny))
  sets = []
  for k, v in small.items():
    if v != base[k] and k != 'progress':
      sets.append(f'{k}={v!r}' if isinstance(v, tuple) else f'{k}={v}')
  return sets


@pytest.fixture(scope='module')
def grid_run(tmp_path_factory):
  """Two grid points x two seeds of the tiny headline model, trained once for the module."""
  root = tmp_path_factory.mktemp('compare')
  workdir = str(root / 'cmp')
  sets = tiny_sets(str(root / 'tfds'))
  with open(os.devnull, 'w') as devnull:
    doc = compare.compare('headline', GRID, SEEDS, sets, workdir, out=devnull)
  return workdir, sets, doc


# ----------------------------------------------------------------------------
# Parsing and errors (no training).


def test_values_split_on_top_level_commas_only():
  assert compare.split_values('sigmoid, softmax') == ['sigmoid', 'softmax']
  assert compare.split_values('(32,),(64, 64)') == ['(32,)', '(64, 64)']
  assert compare.split_values("'a,b',c") == ["'a,b'", 'c']
  with pytest.raises(errors.UsageError, match='unbalanced'):
    compare.split_values('(32,')


def test_grid_points_are_the_product_of_the_axes_in_order():
  axes = compare.parse_grid(['heads.main.kind=sigmoid,softmax', 'learning_rate=0.1,0.01'])
  points = compare.point_names(axes)
  assert [n for n, _ in points] == [
      'kind-sigmoid__learning_rate-0.1', 'kind-sigmoid__learning_rate-0.01',
      'kind-softmax__learning_rate-0.1', 'kind-softmax__learning_rate-0.01']
  assert points[1][1] == {'heads.main.kind': 'sigmoid', 'learning_rate': '0.01'}
  assert [n for n, _ in compare.point_names(compare.parse_grid(['epochs=1,2']))] == ['1', '2']
  assert compare.point_names([]) == [('default', {})]


@pytest.mark.parametrize('grid, sets, seeds, message', [
    (['heads.mian.kind=sigmoid'], [], '0', 'mian'),                     # misspelt key
    (['heads.main.kind=sigmoid'], ['epochs=three'], '0', 'epochs=three'),  # wrong type
    (['heads.main.kind=sigmoid'], ['learning_rate=fast'], '0', 'learning_rate'),
    (['heads.main.kind=sigmoid,sigmod'], [], '0', "unknown kind 'sigmod'"),  # bad value
    (['heads.main.kind=sigmoid'], ['epochs=0'], '0', 'epochs must be an integer from 1'),
    (['seed=0,1'], [], '0', '--seeds'),
    (['epochs=1,1'], [], '0', 'repeated'),
    (['epochs=1,2'], ['epochs=3'], '0', 'both'),
    (['epochs'], [], '0', 'KEY=VALUE'),
    (['heads.main.kind=sigmoid'], [], '0,x', 'integers'),
])
def test_bad_settings_raise_one_line_before_anything_trains(tmp_path, monkeypatch, grid, sets,
                                                            seeds, message):
  monkeypatch.setattr(train, 'train_and_evaluate', lambda *a: pytest.fail('trained'))
  with pytest.raises(errors.UsageError) as e:
    compare.compare('headline', grid, compare.parse_seeds(seeds), sets, str(tmp_path / 'w'))
  assert message in str(e.value) and '\n' not in str(e.value)
  assert not (tmp_path / 'w').exists()


@pytest.mark.slow
def test_the_cli_exits_2_with_one_line_and_writes_nothing(tmp_path):
  r = run_cli('-m', 'mlheads.commands.compare', '--experiment=headline', '--grid=heads.main.kind=sigmod',
              f'--workdir={tmp_path / "w"}', timeout=120)
  assert r.returncode == 2, r.stderr
  lines = [l for l in r.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith('error: ') and 'sigmod' in lines[0], r.stderr
  assert not (tmp_path / 'w').exists()
  r = subprocess.run([str(ROOT / 'launch.sh'), 'compare', '../headline'], cwd=ROOT,
                     capture_output=True, text=True, timeout=60, check=False)
  assert r.returncode == 2 and 'unknown experiment' in r.stderr


# ----------------------------------------------------------------------------
# A real comparison: 2 points x 2 seeds.


def _metrics_json(workdir, point, seed):
  return json.loads(pathlib.Path(workdir, point, f'seed{seed}', 'metrics.json').read_text())


@pytest.mark.slow
def test_two_points_and_two_seeds_make_four_runs(grid_run):
  workdir, _, doc = grid_run
  assert [(r['point'], r['seed']) for r in doc['runs']] == [
      ('sigmoid', 0), ('sigmoid', 1), ('softmax', 0), ('softmax', 1)]
  for r in doc['runs']:
    m = _metrics_json(workdir, r['point'], r['seed'])
    assert m['steps'] == r['steps'] == 48  # 192 train rows / batch 8 x 2 epochs
    config = json.loads(pathlib.Path(workdir, r['dir'], 'config.json').read_text())
    assert config['seed'] == r['seed'] and config['heads']['main']['kind'] == r['point']
  # Seeds differ in their results (they are not one run copied).
  a, b = (_metrics_json(workdir, 'sigmoid', s)['test']['main'] for s in SEEDS)
  assert a['loss'] != b['loss']


@pytest.mark.slow
def test_compare_json_holds_each_runs_metrics_json(grid_run):
  workdir, _, _ = grid_run
  doc = json.loads(pathlib.Path(workdir, 'compare.json').read_text())
  assert doc['points'] == ['sigmoid', 'softmax'] and doc['seeds'] == SEEDS
  assert sorted(doc['outputs']) == ['aux', 'main']
  for r in doc['runs']:
    m = _metrics_json(workdir, r['point'], r['seed'])
    for split in ('test', 'test_tuned', 'validation'):
      assert r[split] == m[split]
    assert r['parameters'] == m['parameters'] and r['wall_s'] > 0
    assert r['overrides'] == {'heads.main.kind': r['point']}
    assert r['curves']['main']['epoch'] == [1, 2]


def _stats(workdir, point, split, out, key):
  vals = np.array([_metrics_json(workdir, point, s)[split][out][key] for s in SEEDS])
  return vals.mean(), vals.std(ddof=1)


@pytest.mark.slow
def test_mean_and_std_over_seeds_match_numpy(grid_run):
  workdir, _, doc = grid_run
  for out in ('main', 'aux'):
    for point in ('sigmoid', 'softmax'):
      for _, split, key in compare_report.TEST_COLUMNS:
        mean, std = _stats(workdir, point, split, out, key)
        got = doc['summary'][out][point][f'{split}/{key}']
        np.testing.assert_allclose([got['mean'], got['std']], [mean, std], rtol=1e-12)
        assert got['n'] == 2


def _md_table(md: str, out: str, title: str) -> dict[str, list[str]]:
  section = md.split(f'## Output `{out}`')[1].split(f'### {title}')[1]
  table = section.strip().split('\n\n')[0]  # the table ends at the first blank line.
  rows = [l for l in table.splitlines() if l.startswith('| `')]
  cells = [[c.strip() for c in l.strip('|').split('|')] for l in rows]
  return {c[0].strip('`'): c[1:] for c in cells}


@pytest.mark.slow
def test_compare_md_shows_the_numbers_of_the_runs(grid_run):
  workdir, _, _ = grid_run
  md = pathlib.Path(workdir, 'compare.md').read_text()
  for out in ('main', 'aux'):
    table = _md_table(md, out, 'Test')
    assert set(table) == {'sigmoid', 'softmax'}
    for point, cells in table.items():
      for cell, (_, split, key) in zip(cells, compare_report.TEST_COLUMNS):
        mean, std = _stats(workdir, point, split, out, key)
        assert cell == f'{mean:.3f} ± {std:.3f}', (out, point, key)
    speed = _md_table(md, out, 'Speed of learning and cost')
    params = _metrics_json(workdir, 'softmax', 0)['parameters']
    assert speed['softmax'][5] == f'{params:,}'


@pytest.mark.slow
def test_val_map_at_epoch_1_and_epochs_to_target_follow_the_curves(grid_run):
  workdir, _, doc = grid_run
  target = doc['speed']['main']['target_val_map']
  finals = {}
  for p in ('sigmoid', 'softmax'):
    curves = []
    for s in SEEDS:
      lines = [json.loads(l) for l in
               pathlib.Path(workdir, p, f'seed{s}', 'metrics.jsonl').read_text().splitlines()]
      curves.append({l['epoch']: l['average_precision_macro'] for l in lines
                     if l['split'] == 'validation/main'})
    finals[p] = np.mean([_metrics_json(workdir, p, s)['validation']['main']
                         ['average_precision_macro'] for s in SEEDS])
    got = doc['summary']['main'][p]
    assert got['speed/val_map_epoch1']['mean'] == pytest.approx(np.mean([c[1] for c in curves]))
    reached = [next((e for e in (1, 2) if c[e] >= target), None) for c in curves]
    assert got['speed/epochs_to_target']['values'] == reached
  assert target == pytest.approx(0.95 * max(finals.values()))


@pytest.mark.slow
def test_curves_png_is_a_valid_png(grid_run):
  workdir, _, _ = grid_run
  path = os.path.join(workdir, 'curves.png')
  with open(path, 'rb') as f:
    assert f.read(8) == PNG_MAGIC
  h, w, _ = image.imread(path).shape
  assert h > 400 and w > 800


@pytest.mark.slow
def test_a_rerun_trains_nothing(grid_run, monkeypatch):
  workdir, sets, _ = grid_run
  before = {p: (p.stat().st_mtime_ns, p.read_bytes())
            for p in pathlib.Path(workdir).glob('*/seed*/metrics.json*')}
  assert len(before) == 8
  monkeypatch.setattr(train, 'train_and_evaluate', lambda *a: pytest.fail('retrained'))
  with open(os.devnull, 'w') as devnull:
    doc = compare.compare('headline', GRID, SEEDS, sets, workdir, out=devnull)
  after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in before}
  assert after == before
  assert len(doc['runs']) == 4


@pytest.mark.slow
def test_an_unrecorded_run_resumes_from_its_checkpoint_without_training(grid_run, tmp_path,
                                                                         monkeypatch):
  """A run whose record is missing (killed after training) is re-evaluated, not retrained."""
  workdir, sets, _ = grid_run
  copy = tmp_path / 'cmp'
  shutil.copytree(workdir, copy)
  run = copy / 'softmax' / 'seed1'
  os.remove(run / compare.RUN_RECORD)
  train_lines = lambda: [l for l in (run / 'metrics.jsonl').read_text().splitlines()
                         if '"split": "train"' in l]
  before = train_lines()
  calls = []
  real = train.train_and_evaluate
  def counting(config, wd):
    calls.append(wd)
    return real(config, wd)
  monkeypatch.setattr(train, 'train_and_evaluate', counting)
  out = tmp_path / 'log.txt'
  with open(out, 'w') as f:
    doc = compare.compare('headline', GRID, SEEDS, sets, str(copy), out=f)
  assert calls == [str(run)]
  assert train_lines() == before  # no training step was taken again
  assert doc['runs'][3]['resumed'] and doc['runs'][3]['steps'] == 48
  assert re.search(r'\[4/4\] softmax seed 1: resumed and finished', out.read_text())
  assert out.read_text().count('already finished, skipped') == 3


@pytest.mark.slow
def test_time_apart_from_compiling_and_a_paired_test_against_the_best_on_validation(grid_run):
  workdir, _, doc = grid_run
  for r in doc['runs']:
    assert 0 < r['compile_s'] < r['wall_s']
    assert r['run_s'] == pytest.approx(r['wall_s'] - r['compile_s'])
  for out in ('main', 'aux'):
    p = doc['paired'][out]
    val = {pt: np.mean([_metrics_json(workdir, pt, s)['validation'][out]
                        ['average_precision_macro'] for s in SEEDS]) for pt in doc['points']}
    assert p['reference'] == max(val, key=val.get)
    (c,) = p['comparisons']
    other = next(pt for pt in doc['points'] if pt != p['reference'])
    test = lambda pt: np.array([_metrics_json(workdir, pt, s)['test'][out]
                                ['average_precision_macro'] for s in SEEDS])
    assert c['point'] == other and c['n'] == 2
    assert c['mean_diff'] == pytest.approx(np.mean(test(other) - test(p['reference'])))
  md = pathlib.Path(workdir, 'compare.md').read_text()
  assert 'p (Holm)' in md and 'compiling (s)' in md
