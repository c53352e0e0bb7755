"""mlheads.tune: the grid, the choice on validation only, the report, reruns train nothing."""

import io
import json
import os
import sys

import pytest

from conftest import ROOT, run_cli
from mlheads import errors
from mlheads.commands import compare
from mlheads.commands import tune

from commands.test_compare import tiny_sets  # pylint: disable=g-bad-import-order


def test_axes_split_on_top_level_semicolons():
  assert tune.split_axes('trunk.kind=bag,text; learning_rate=0.003,0.01') == [
      'trunk.kind=bag,text', 'learning_rate=0.003,0.01']
  assert tune.split_axes("trunk.hidden=(8,),(4,4);x='a;b'") == ['trunk.hidden=(8,),(4,4)',
                                                                "x='a;b'"]
  with pytest.raises(errors.UsageError, match='no axes'):
    tune.split_axes(' ; ')


def test_config_flags_become_settings_of_every_candidate():
  assert tune.as_sets(['tune', '--config.epochs=2', '--seeds=0', '--config.trunk.hidden=(8,)']
                      ) == ['tune', '--set=epochs=2', '--seeds=0', '--set=trunk.hidden=(8,)']


def test_without_grid_the_experiment_must_declare_one():
  with pytest.raises(errors.UsageError, match='declares no TUNE_GRID'):
    tune.experiment_grid('headline')


def _result(run, val, test):
  """What compare.run_all returns for one run, with the given validation and test AUC."""
  return {'point': run['point'], 'overrides': run['overrides'], 'seed': run['seed'],
          'dir': run['dir'], 'steps': 10,
          'validation': {'main': {'roc_auc_macro': val, 'loss': 1 - val}},
          'test': {'main': {'roc_auc_macro': test, 'average_precision_macro': test}},
          'test_tuned': {'main': {'f1_micro': test}}}


def test_the_choice_reads_validation_only_and_reports_the_chosen_runs_test():
  runs = compare.plan('headline', ['learning_rate=0.001,0.01,0.1'], [0, 1], [])
  # (validation, test) per candidate and seed: the best on test is never the best on validation.
  scores = {'0.001': [(0.70, 0.90), (0.72, 0.92)], '0.01': [(0.80, 0.60), (0.78, 0.62)],
            '0.1': [(0.79, 0.99), (float('nan'), 0.99)]}
  results = [_result(r, *scores[r['point']][r['seed']]) for r in runs]
  doc = tune.choose(runs, results)
  assert doc['metric'] == 'main/roc_auc_macro' and doc['mode'] == 'max'
  assert doc['chosen']['point'] == '0.01'
  assert doc['chosen']['validation']['main/roc_auc_macro']['mean'] == pytest.approx(0.79)
  assert doc['chosen']['test']['main']['roc_auc_macro']['values'] == [0.60, 0.62]
  assert doc['chosen']['dirs'] == ['0.01/seed0', '0.01/seed1']
  # A candidate undefined on one seed is scored on what it has, but never chosen.
  assert doc['candidates'][2]['validation']['main/roc_auc_macro']['n'] == 1
  assert doc['why'].startswith('chose 0.01 (learning_rate=0.01): validation main/roc_auc_macro '
                               '0.7900 ± 0.0141 (mean of 2 seeds), the highest of 3 candidates')
  assert 'next 0.1 0.7900' in doc['why'] and doc['why'].endswith('on validation only')


def test_a_lower_is_better_metric_picks_the_lowest():
  runs = compare.plan('headline', ['learning_rate=0.001,0.01'], [0], ['best_metric=main/loss'])
  results = [_result(r, v, 0.5) for r, v in zip(runs, (0.6, 0.9))]  # loss 0.4 and 0.1
  doc = tune.choose(runs, results)
  assert doc['mode'] == 'min' and doc['chosen']['point'] == '0.01'
  assert 'the lowest of 2 candidates' in doc['why']


def test_bad_settings_are_one_line_before_anything_trains(tmp_path):
  r = run_cli('-m', 'mlheads.commands.tune', '--experiment=headline',
              '--grid=learning_rate=0.01;trunk.lstm_unitz=4', f'--workdir={tmp_path}/t')
  assert r.returncode == 2, r.stderr[-2000:]
  assert r.stderr.strip().splitlines()[-1].startswith('error: --grid trunk.lstm_unitz=4')
  assert not os.path.exists(tmp_path / 't')


@pytest.mark.slow
def test_a_tiny_grid_trains_chooses_on_validation_and_a_rerun_trains_nothing(tmp_path):
  workdir = str(tmp_path / 'tune')
  sets = tiny_sets(str(tmp_path / 'tfds'), epochs=1)
  grid = 'learning_rate=0.001,0.03'
  out = io.StringIO()
  doc = tune.tune('headline', grid, [0], sets, workdir, out=out)
  with open(os.path.join(workdir, 'tune.json'), encoding='utf-8') as f:
    assert json.load(f) == json.loads(json.dumps(doc))
  vals = {}
  for point in ('0.001', '0.03'):
    with open(os.path.join(workdir, point, 'seed0', 'metrics.json'), encoding='utf-8') as f:
      vals[point] = json.load(f)
  best = max(vals, key=lambda p: vals[p]['validation']['main']['roc_auc_macro'])
  assert doc['chosen']['point'] == best
  assert doc['chosen']['test']['main']['roc_auc_macro']['mean'] == (
      vals[best]['test']['main']['roc_auc_macro'])
  log = out.getvalue()
  assert f'chose {best} (learning_rate={best})' in log and 'chosen, test: main mAP' in log

  again = io.StringIO()
  assert tune.tune('headline', grid, [0], sets, workdir, out=again)['chosen'] == doc['chosen']
  assert again.getvalue().count('already finished, skipped') == 2
  assert 'training in' not in again.getvalue()
