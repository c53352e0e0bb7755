"""Whole runs on a user's table: resuming over edited data is refused (B28), --dry_run trains
nothing, k-fold cross-validation reports mean ± std of every test metric."""

import hashlib
import io
import json
import os

import numpy as np
import pytest

from experiments import from_csv as from_csv_exp
from mlheads import errors
from mlheads import train
from mlheads.commands import cv
from mlheads.data import fingerprint
from mlheads.state import workdir as workdir_lib


def _films(path, n):
  rng = np.random.default_rng(0)
  words = ['night', 'day', 'love', 'war', 'the', 'man', 'city', 'blue']
  lines = ['title,year,genres'] + [
      f'{" ".join(rng.choice(words, 2))} {i},{1950 + i % 40},'
      f'{["Drama", "Comedy", "Drama|Comedy", "|"][i % 4]}' for i in range(n)]
  path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
  return str(path)


def _config(tmp_path, path):
  c = from_csv_exp.get_config()
  c.data.path, c.data.text, c.data.features, c.data.label_list = path, 'title', 'year', 'genres'
  c.data.dir, c.data.max_len, c.data.vocab_size = str(tmp_path / 'tfds'), 4, 30
  c.data.hash_buckets = 64  # the bag's n-gram tables, tiny
  c.trunk.embed_dim, c.trunk.lstm_units, c.trunk.hidden = 4, 4, (4,)
  c.epochs, c.batch_size, c.eval_batch_size, c.progress = 1, 8, 16, False
  return c


def _snapshot(root):
  out = {}
  for d, _, files in os.walk(root):
    for f in files:
      p = os.path.join(d, f)
      with open(p, 'rb') as fh:
        out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
  return out


def test_fingerprint_differences_say_what_changed():
  then = {'rows': {'train': 8, 'validation': 2, 'test': 2},
          'records': {'train': 'a', 'validation': 'b', 'test': 'c'},
          'meta': {'tokenizer': 't', 'scaling': 's', 'truncated': 'x'}}
  assert fingerprint.differences(then, then) == []
  now = {**then, 'records': {**then['records'], 'test': 'z'}}
  assert fingerprint.differences(then, now) == ['the test records differ']
  now = {'rows': {'train': 4, 'validation': 2, 'test': 2}, 'records': then['records'],
         'meta': {'tokenizer': 'u', 'scaling': 's', 'truncated': 'y'}}
  assert fingerprint.differences(then, now) == [
      'examples train 4 (checkpoints 8)', 'the tokenizer (vocabulary) differs']
  with pytest.raises(errors.UsageError, match=r'other data than this run reads: examples train '
                     r'4 \(checkpoints 8\).*new --workdir'):
    workdir_lib.check_same_data('W', then, now)
  workdir_lib.check_same_data('W', None, now)  # older checkpoints: nothing to compare


@pytest.mark.slow
def test_b28_resuming_over_an_edited_csv_is_refused_before_training_naming_what_changed(
    tmp_path):
  path = _films(tmp_path / 'films.csv', 80)
  run = str(tmp_path / 'run')
  first = train.train_and_evaluate(_config(tmp_path, path), run)
  # The same data resumes (a finished run is evaluated again, to the same numbers).
  again = train.train_and_evaluate(_config(tmp_path, path), run)
  assert again['test'] == first['test']
  before = _snapshot(run)
  _films(tmp_path / 'films.csv', 40)  # the same file cut to half its rows
  config = _config(tmp_path, path)
  config.epochs = 2
  with pytest.raises(errors.UsageError) as e:
    train.train_and_evaluate(config, run)
  msg = str(e.value)
  assert '\n' not in msg and f'workdir {run} holds checkpoints trained on other data' in msg
  assert 'examples train 32 (checkpoints 64)' in msg and 'the tokenizer' in msg
  assert 'new --workdir' in msg
  assert _snapshot(run) == before  # nothing in the workdir changed


@pytest.mark.slow
def test_dry_run_prints_config_sizes_and_parameters_and_trains_nothing(tmp_path):
  path = _films(tmp_path / 'films.csv', 80)
  config = _config(tmp_path, path)
  out = io.StringIO()
  plan = train.dry_run(config, out)
  text = out.getvalue()
  assert plan['sizes'] == {'train': 64, 'validation': 8, 'test': 8}
  assert plan['config']['trunk']['kind'] == 'bag'  # '' resolved from the inputs
  assert plan['config']['heads']['labels']['loss'] == 'bce'
  assert 'train 64, validation 8, test 8 examples' in text
  assert f'total parameters: {plan["parameters"]:,}' in text and 'trunk/table_chargrams' in text
  # The parameter count is the real model's.
  summary = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert summary['parameters'] == plan['parameters']


@pytest.mark.slow
def test_cv_reports_the_mean_and_std_of_every_test_metric_over_the_folds(tmp_path):
  path = _films(tmp_path / 'films.csv', 72)
  config = _config(tmp_path, path)
  config.experiment = 'from_csv'
  with pytest.raises(errors.UsageError, match='at least 3 folds'):
    cv.cross_validate(config, 2, str(tmp_path / 'cv'))
  result = cv.cross_validate(config, 3, str(tmp_path / 'cv'), out=io.StringIO())
  folds = [json.load(open(tmp_path / 'cv' / f'fold{i}' / 'metrics.json')) for i in range(3)]
  for metric in ('average_precision_macro', 'f1_micro', 'loss'):
    values = [f['test']['labels'][metric] for f in folds]
    st = result['test']['labels'][metric]
    assert st['n'] == 3 and st['folds'] == values
    np.testing.assert_allclose(st['mean'], np.mean(values))
    np.testing.assert_allclose(st['std'], np.std(values, ddof=1))
  assert os.path.exists(tmp_path / 'cv' / 'cv.md')
  config.data.name = 'movie_genres'
  with pytest.raises(errors.UsageError, match='fixed splits'):
    cv.fold_configs(config, 3)
