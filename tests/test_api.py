"""The Python API: configs, DataFrames, data, models and metrics on arrays; `pip install -e .`
and the example script, from outside the checkout without PYTHONPATH."""

import os
import re
import subprocess
import sys
import tomllib

import jax
import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from mlheads import api
from mlheads.data import pipeline
from mlheads.evaluation import metrics as metrics_lib
from mlheads.evaluation import thresholds as thresholds_lib


def test_pyproject_declares_the_package_and_the_pinned_requirements():
  project = tomllib.loads((ROOT / 'pyproject.toml').read_text())
  assert project['project']['name'] == 'mlheads'
  assert project['tool']['setuptools']['packages']['find']['include'] == ['mlheads*']
  assert 'pytest' in project['tool']  # the pytest section is still there
  pins = lambda lines: {re.split(r'\s|#', l.strip())[0] for l in lines
                        if l.strip() and not l.strip().startswith('#')}
  required = pins((ROOT / 'requirements.txt').read_text().splitlines())
  declared = pins(project['project']['dependencies'])
  declared |= pins(project['project']['optional-dependencies']['test'])
  assert declared == required  # the same versions the suite runs with, no drift


def test_config_takes_dotted_keys_nested_dicts_and_keywords(tmp_path):
  c = api.config('movie_genres', {'heads.genres.kind': 'softmax', 'trunk': {'hidden': (8,)}},
                 epochs=2, data={'max_rows': 300})
  assert (c.heads.genres.kind, c.trunk.hidden, c.epochs, c.data.max_rows) == (
      'softmax', (8,), 2, 300)
  assert c.experiment == 'movie_genres' and c.is_locked
  # A list of names for a comma-separated field; from_csv is checked against the file's header.
  table = tmp_path / 't.csv'
  table.write_text('a,b,y\n1,2,0\n3,4,1\n')
  c = api.config('from_csv', data={'path': str(table), 'features': ['a', 'b'], 'labels': ['y']})
  assert c.data.features == 'a,b'
  with pytest.raises(api.UsageError, match='from_csv needs --config.data.path'):
    api.config('from_csv', data={'features': ['a', 'b']})


@pytest.mark.parametrize('kwargs,message', [
    ({'epoch': 2}, "unknown config key 'epoch': the config has"),
    ({'data': {'max_row': 2}}, "unknown config key 'data.max_row': data has"),
    ({'heads.genre.kind': 'x'}, "unknown config key 'heads.genre'"),
    ({'epochs': 'two'}, "config key 'epochs'"),
    ({'epochs': 0}, 'epochs must be an integer from 1 to 100,000, got 0'),
    ({'heads': {'genres': {'kind': 'nope'}}}, "unknown kind 'nope'"),
])
def test_config_errors_are_one_line_usage_errors(kwargs, message):
  with pytest.raises(api.UsageError, match=re.escape(message)) as e:
    api.config('movie_genres', **kwargs)
  assert '\n' not in str(e.value)


def _frame(n=80, seed=0):
  rng = np.random.default_rng(seed)
  words = ['night', 'day', 'love', 'war', 'the', 'man', 'city', 'blue']
  return pd.DataFrame({
      'title': [' '.join(rng.choice(words, size=3)) for _ in range(n)],
      'year': 1950 + np.arange(n) % 50,
      'genres': [[g for g in ('Comedy', 'Drama') if rng.random() < 0.5] or '|'
                 for _ in range(n)],
  })


def test_from_dataframe_writes_its_rows_once_and_loads_them(tmp_path):
  df = _frame()
  c = api.from_dataframe(df, data_dir=str(tmp_path), text='title', features=['year'],
                         label_list='genres', max_len=4, vocab_size=20,
                         overrides={'batch_size': 8})
  assert c.data.path.startswith(str(tmp_path / 'from_csv' / 'frames'))
  assert c.data.features == 'year' and c.batch_size == 8
  again = api.from_dataframe(df.copy(), data_dir=str(tmp_path), text='title', features='year',
                             label_list='genres')
  other = api.from_dataframe(df.iloc[1:], data_dir=str(tmp_path), text='title',
                             features='year', label_list='genres')
  assert again.data.path == c.data.path != other.data.path  # content-addressed
  data = api.load_data(c)
  assert sum(data.sizes().values()) == len(df)
  assert data.class_names('labels') == ['Comedy', 'Drama']
  # A list cell is a list of names: the labels read back are the DataFrame's.
  # Label lists are stored sparse (class indices per row); the field densifies them.
  field = data.dataset.targets['labels']
  labels = np.concatenate([field.densify(data.arrays[s], 'labels')[0]
                           for s in ('train', 'validation', 'test')])
  expect = np.array([[g in v for g in ('Comedy', 'Drama')] if isinstance(v, list) else [0, 0]
                     for v in df['genres']], np.float32)
  assert labels.sum(0).tolist() == expect.sum(0).tolist()
  # The model the config names, on the data's inputs.
  model, heads = api.build_model(c, data)
  params = model.init(jax.random.key(0), data.example_inputs())['params']
  batch = next(data.batches('test', batch_size=4))
  assert model.apply({'params': params}, batch['inputs'])['labels'].shape == (4, 2)
  assert set(heads) == {'labels'} and set(batch) == {'inputs', 'targets', 'masks', 'valid'}
  assert data.example_inputs().keys() == pipeline.example_inputs(data.dataset).keys()


def test_from_dataframe_rejects_what_is_not_a_table():
  with pytest.raises(api.UsageError, match='non-empty pandas DataFrame'):
    api.from_dataframe(pd.DataFrame(), text='x', label_list='y')


def test_metrics_on_arrays_are_the_librarys_and_take_logits():
  rng = np.random.default_rng(0)
  labels = (rng.random((50, 4)) < 0.4).astype(int)
  logits = rng.normal(size=(50, 4)) * 3
  mask = (rng.random((50, 4)) < 0.9).astype(int)
  probs = 1 / (1 + np.exp(-logits))
  got = api.metrics(labels, logits, threshold=0.3, mask=mask, from_logits=True)
  ref = metrics_lib.compute(labels, probs, 0.3, mask)
  assert got.keys() == ref.keys()
  for k in ref:
    assert got[k] == pytest.approx(ref[k], abs=1e-6, nan_ok=True), k
  pc = api.per_class_metrics(labels, probs, mask=mask)
  np.testing.assert_allclose(pc['f1'], metrics_lib.per_class(labels, probs, 0.5, mask)['f1'])
  np.testing.assert_allclose(api.tune_thresholds(labels, probs, mask),
                             thresholds_lib.tune(labels, probs, mask)[0])


@pytest.mark.slow
def test_pip_install_e_and_the_example_run_from_anywhere(tmp_path):
  """`pip install -e .` into a fresh environment (the suite's packages borrowed through a .pth
  file, so nothing is downloaded but the build backend), then examples/api_tour.py from another
  folder with no PYTHONPATH: the package imports from the install, and the example trains,
  predicts and scores through the public API only."""
  venv = tmp_path / 'venv'
  subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True)
  python = str(venv / 'bin' / 'python')
  site = subprocess.run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                        capture_output=True, text=True, check=True).stdout.strip()
  deps = [p for p in sys.path if p.endswith('site-packages')]
  with open(os.path.join(site, '_suite_packages.pth'), 'w', encoding='utf-8') as f:
    f.write('\n'.join(deps) + '\n')
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  env['JAX_PLATFORMS'] = 'cpu'
  r = subprocess.run([python, '-m', 'pip', 'install', '--no-deps', '--disable-pip-version-check',
                      '-e', str(ROOT)], capture_output=True, text=True, env=env, timeout=600,
                     check=False)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  where = subprocess.run([python, '-c', 'import mlheads.api, mlheads; print(mlheads.__file__)'],
                         cwd=tmp_path, capture_output=True, text=True, env=env, check=False)
  assert where.returncode == 0, where.stderr[-2000:]
  assert where.stdout.strip() == str(ROOT / 'mlheads' / '__init__.py')
  r = subprocess.run([python, str(ROOT / 'examples' / 'api_tour.py'), f'--workdir={tmp_path}/w',
                      '--rows=600', '--epochs=1'], cwd=tmp_path, capture_output=True, text=True,
                     env=env, timeout=900, check=False)
  assert r.returncode == 0, r.stderr[-3000:]
  out = r.stdout
  assert 'mAP (macro AP)' in out and 'labels:predicted' in out and 'held-out films: mAP' in out
  assert 'Downloading and preparing' not in out
  assert os.path.exists(f'{tmp_path}/w/run/metrics.json')
