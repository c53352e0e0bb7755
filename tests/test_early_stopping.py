"""Early stopping (`config.patience`): when it stops, what it evaluates, how it resumes."""

import json

import pytest

from mlheads import errors
from mlheads import train
from mlheads.evaluation import runner

M = 'main/roc_auc_macro'


def _stopper(values, patience=2, mode='max'):
  s = runner.EarlyStopping(patience, M, mode)
  for epoch, v in enumerate(values, 1):
    s.update(epoch, {'main': {'roc_auc_macro': v}})
  return s


@pytest.mark.parametrize('values,mode,stops', [
    ([0.5, 0.7, 0.6], 'max', False),          # one epoch since the best
    ([0.5, 0.7, 0.6, 0.65], 'max', True),     # two
    ([0.5, 0.7, 0.7, 0.7], 'max', True),      # a tie is no improvement (the earlier is best)
    ([0.5, 0.7, 0.6, 0.71], 'max', False),    # improved at the last epoch
    ([0.9, 0.7, 0.8], 'min', False),
    ([0.9, 0.7, 0.8, 0.75], 'min', True),
    ([float('nan'), float('nan')], 'max', True),  # never defined: never improves
    ([float('nan'), 0.5, float('nan')], 'max', False),
])
def test_stops_after_patience_epochs_without_a_strict_improvement(values, mode, stops):
  s = _stopper(values, mode=mode)
  assert s.should_stop() is stops
  assert not _stopper(values, patience=0, mode=mode).should_stop()  # 0 = off


def test_the_curve_alone_restores_the_counter_and_is_strict_json():
  full = _stopper([0.5, 0.7, 0.6, 0.65])
  prefix = _stopper([0.5, 0.7, 0.6])
  resumed = runner.EarlyStopping(2, M, 'max', json.loads(json.dumps(prefix.curve)))
  assert not resumed.should_stop()
  resumed.update(4, {'main': {'roc_auc_macro': 0.65}})
  assert resumed.curve == full.curve and resumed.should_stop()
  assert resumed.best() == (2, 0.7)
  assert 'has not improved for 2 epochs (patience 2; best 0.7000 at epoch 2)' in resumed.reason()
  nan = _stopper([float('nan')])
  assert nan.curve == [[1, None]]
  json.dumps(nan.curve, allow_nan=False)


@pytest.mark.parametrize('bad', [-1, -5])
def test_a_bad_patience_is_refused_before_anything_runs(tiny_config, bad):
  tiny_config.patience = bad
  with pytest.raises(errors.UsageError, match='--config.patience must be an integer from 0 to'):
    train.check_config(tiny_config)


def _scripted(monkeypatch, values):
  """Validation `roc_auc_macro` of output main in the loop's evaluations follows `values`;
  the calls after them (the final evaluation) are the real metrics."""
  real, left = runner.metrics_of, list(values)

  def fake(evals, which='own'):
    m = {name: dict(v) for name, v in real(evals, which).items()}
    if left and which == 'own':
      m['main']['roc_auc_macro'] = left.pop(0)
    return m
  monkeypatch.setattr(runner, 'metrics_of', fake)
  return left


@pytest.mark.slow
def test_a_run_stops_evaluates_its_best_epoch_and_resumes_exactly(
    tiny_config, tmp_path, monkeypatch, caplog):
  spe = 192 // 8
  c = tiny_config
  c.patience, c.epochs, c.best_metric = 2, 10, M
  curve = [0.5, 0.7, 0.6, 0.65]  # best at epoch 2; two epochs later it stops.

  left = _scripted(monkeypatch, curve)
  with caplog.at_level('INFO'):
    whole = train.train_and_evaluate(c, str(tmp_path / 'whole'))
  assert not left
  assert whole['steps'] == 4 * spe and whole['evaluated_step'] == 2 * spe
  assert whole['stopped_early'] is True
  assert sum('early stopping after epoch 4' in r.getMessage() for r in caplog.records) == 1
  epochs = [json.loads(l)['epoch'] for l in open(tmp_path / 'whole' / 'metrics.jsonl')
            if json.loads(l)['split'] == 'validation/main']
  assert epochs == [1, 2, 3, 4]

  # Killed after epoch 3 (here: a run of 3 epochs), then the same command with 10: the counter
  # comes back from the checkpoint, so it stops where the uninterrupted run did.
  part = tmp_path / 'part'
  c.epochs = 3
  _scripted(monkeypatch, curve[:3])
  first = train.train_and_evaluate(c, str(part))
  assert first['steps'] == 3 * spe and first['stopped_early'] is False
  c.epochs = 10
  _scripted(monkeypatch, curve[3:])
  resumed = train.train_and_evaluate(c, str(part))
  for key in ('steps', 'evaluated_step', 'stopped_early', 'validation', 'test', 'test_tuned',
              'thresholds'):
    assert resumed[key] == whole[key], key

  # A finished, stopped run trains nothing more when run again.
  _scripted(monkeypatch, [])
  with caplog.at_level('INFO'):
    again = train.train_and_evaluate(c, str(part))
  assert again['steps'] == 4 * spe and again['test'] == whole['test']
  assert any('Training already stopped early' in r.getMessage() for r in caplog.records)
