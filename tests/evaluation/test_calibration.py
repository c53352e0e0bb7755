"""Per-class Platt scaling: the optimum of its objective, lower ECE, rankings unchanged."""

import numpy as np
import pytest
from scipy import optimize

from mlheads.evaluation import calibration
from mlheads.evaluation import metrics

N, K = 400, 4


def _overconfident(seed, n=N):
  """Labels and scores whose logits are 3x too large and shifted per class."""
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(n, K)) * 1.5
  labels = (rng.random((n, K)) < 1 / (1 + np.exp(-z))).astype(np.int64)
  scores = 1 / (1 + np.exp(-(3 * z + np.array([-1.0, 0.0, 1.0, 2.0]))))
  return labels, scores.astype(np.float32)


def _objective(ab, z, y):
  """Platt's: cross-entropy against (N+ + 1) / (N+ + 2) and 1 / (N- + 2)."""
  n_pos = y.sum()
  t = np.where(y > 0, (n_pos + 1) / (n_pos + 2), 1 / (len(y) - n_pos + 2))
  u = ab[0] * z + ab[1]
  return np.sum(np.logaddexp(0, u) - t * u)


def test_fit_reaches_the_objectives_minimum():
  labels, scores = _overconfident(0)
  a, b = (np.asarray(x) for x in calibration.fit(scores.T, labels.T, np.ones((K, N), bool)))
  z = np.log(scores) - np.log1p(-scores)
  for c in range(K):
    ref = optimize.minimize(_objective, [1.0, 0.0], args=(z[:, c], labels[:, c]), method='BFGS')
    assert np.abs(ref.jac).max() < 1e-3  # at the minimum
    np.testing.assert_allclose([a[c], b[c]], ref.x, rtol=1e-3, atol=1e-3)
    assert 0.2 < a[c] < 0.5  # it found the 3x overconfidence


def test_calibration_lowers_ece_and_keeps_each_class_ranking():
  labels, scores = _overconfident(1)
  test_labels, test_scores = _overconfident(2)
  valid = np.ones((K, N), bool)
  a, b = calibration.fit(scores.T, labels.T, valid)
  after = calibration.apply_numpy(test_scores, a, b)
  before_ece = calibration.ece(calibration.bins(test_scores.T, test_labels.T, valid))
  after_ece = calibration.ece(calibration.bins(after.T, test_labels.T, valid))
  assert after_ece < 0.5 * before_ece
  raw, cal = metrics.compute(test_labels, test_scores), metrics.compute(test_labels, after)
  for key in ('average_precision_macro', 'roc_auc_macro'):
    assert cal[key] == pytest.approx(raw[key], abs=1e-7), key
  pc_raw, pc_cal = metrics.per_class(test_labels, test_scores), metrics.per_class(test_labels,
                                                                                  after)
  for key in ('average_precision', 'roc_auc'):
    np.testing.assert_allclose(pc_cal[key], pc_raw[key], atol=1e-7)


def test_temperature_has_no_bias_and_degenerate_classes_stay_finite():
  labels, scores = _overconfident(3)
  labels[:, 1] = 0  # no positive: Platt's targets still give a finite fit
  valid = np.ones((K, N), bool)
  valid[3] = False  # no entry: the identity
  a, b = (np.asarray(x) for x in calibration.fit(scores.T, labels.T, valid, 'temperature'))
  np.testing.assert_array_equal(b, 0.0)
  assert np.all(np.isfinite(a)) and np.all(a >= calibration.A_MIN)
  assert a[3] == 1.0
  a, b = (np.asarray(x) for x in calibration.fit(scores.T, labels.T, valid))
  assert np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.all(a >= calibration.A_MIN)
  assert calibration.apply_numpy(scores, a, b)[:, 1].max() < 0.05  # never positive on val


def test_ece_and_reliability_by_hand():
  # One class, 4 entries: bin 1 holds scores .1, .1 (1 positive), bin 13 holds .9, .9 (2).
  stats = calibration.bins(np.array([[0.1, 0.1, 0.9, 0.9]], np.float32),
                           np.array([[1, 0, 1, 1]]), np.ones((1, 4), bool))
  assert calibration.ece(stats) == pytest.approx(0.5 * abs(0.5 - 0.1) + 0.5 * abs(1 - 0.9))
  rel = calibration.reliability(stats)
  assert rel['count'][1] == 2 and rel['positive'][1] == 0.5 and rel['score'][13] == (
      pytest.approx(0.9))
  assert rel['score'][0] is None
