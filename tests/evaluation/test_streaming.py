"""streaming.Accumulator: batches, class blocks and the spill file change no number."""

import numpy as np
import pytest

from mlheads.evaluation import metrics
from mlheads.evaluation import streaming
from mlheads.evaluation import thresholds

N, K = 60, 7


def _data(seed=0):
  rng = np.random.default_rng(seed)
  labels = (rng.random((N, K)) < 0.3).astype(np.int64)
  scores = np.round(rng.random((N, K)), 1).astype(np.float32)  # ties
  mask = (rng.random((N, K)) > 0.2).astype(np.int64)
  mask[5] = 0
  return metrics.check_inputs(labels, scores, 0.5, mask)


def _run(y, s, valid, batch, **kw):
  t = np.linspace(0.2, 0.7, K).astype(np.float32)
  acc = streaming.Accumulator(K, N, thresholds={'own': 0.5, 'tuned': t},
                              inv_propensity=np.linspace(1, 3, K), **kw)
  for lo in range(0, N, batch):
    acc.add(y[lo:lo + batch], s[lo:lo + batch], valid[lo:lo + batch])
  return acc.finish(tune=True, calibrate='platt', columns=3)


@pytest.mark.parametrize('kw', [
    dict(batch=16),  # a short last batch, padded
    dict(batch=N, block_entries=2 * N),  # 4 blocks of 2 classes (the last padded)
    dict(batch=7, block_entries=3 * N, in_memory_bytes=0),  # spilled to a file
])
def test_batches_blocks_and_spill_change_nothing(kw, tmp_path):
  y, s, _, valid = _data()
  one = _run(y, s, valid, batch=N)
  got = _run(y, s, valid, directory=str(tmp_path), **kw)
  for name in ('own', 'tuned'):
    assert got.metrics[name] == pytest.approx(one.metrics[name], rel=1e-6, abs=1e-6)
    for key, v in one.per_class[name].items():
      np.testing.assert_allclose(got.per_class[name][key], v, rtol=1e-6, equal_nan=True)
  np.testing.assert_array_equal(got.tuned, one.tuned)
  assert got.tuned_global == one.tuned_global
  for a, b in zip(got.calibration, one.calibration):
    np.testing.assert_allclose(a, b, rtol=1e-5)
  assert got.ece == pytest.approx(one.ece)
  assert sorted(got.columns) == sorted(one.columns) and len(got.columns) == 3
  for c, col in one.columns.items():
    for key in col:
      np.testing.assert_array_equal(got.columns[c][key], col[key])
  assert list(tmp_path.iterdir()) == []  # the spill file is gone


def test_calibration_a_chunk_of_classes_at_a_time_changes_nothing(monkeypatch):
  y, s, _, valid = _data()
  one = _run(y, s, valid, batch=N)
  monkeypatch.setattr(streaming, 'CALIBRATION_ENTRIES', 2 * N)  # 4 chunks of 2 (the last padded)
  got = _run(y, s, valid, batch=N)
  for a, b in zip(got.calibration, one.calibration):
    np.testing.assert_allclose(a, b, rtol=1e-5)
  assert got.ece == pytest.approx(one.ece)
  assert got.reliability['before'] == one.reliability['before']
  assert got.reliability['after']['count'] == one.reliability['after']['count']
  assert got.reliability['after']['score'] == pytest.approx(one.reliability['after']['score'])


def test_tuned_thresholds_equal_the_whole_array_tuner():
  y, s, _, valid = _data(1)
  r = _run(y, s, valid, batch=13, block_entries=2 * N)
  per_class, global_t = thresholds.tune(y, s, valid)
  np.testing.assert_array_equal(r.tuned, per_class)
  assert r.tuned_global == global_t


def test_kept_columns_are_the_most_frequent_classes():
  y, s, _, valid = _data(2)
  r = _run(y, s, valid, batch=N)
  support = (y * valid).sum(0)
  assert set(r.columns) == set(np.argsort(-support, kind='stable')[:3])
  c = next(iter(r.columns))
  np.testing.assert_array_equal(r.columns[c]['labels'][valid[:, c]], y[valid[:, c], c])


def test_a_wrong_row_count_is_refused():
  y, s, _, valid = _data()
  acc = streaming.Accumulator(K, N + 1, thresholds={'own': 0.5})
  acc.add(y, s, valid)
  with pytest.raises(ValueError, match='61'):
    acc.finish()
  with pytest.raises(ValueError, match='120 rows added to an accumulator of 61'):
    acc.add(y, s, valid)
