"""mlheads.thresholds: tuned F1 equals the brute-force best candidate."""

import numpy as np
import pytest
from sklearn import metrics as skm

from mlheads.evaluation import thresholds

N, K = 40, 5


def _data(seed, ties=True):
  rng = np.random.default_rng(seed)
  labels = (rng.random((N, K)) < 0.3).astype(int)
  scores = rng.random((N, K)).astype(np.float32)
  if ties:
    scores = np.round(scores, 1).astype(np.float32)
  labels[:, 0] = 0  # A class without positives.
  return labels, scores


def _candidates(s):
  """Every threshold that gives a distinct prediction, and some more."""
  v = np.unique(s)
  return np.concatenate([[-1.0, 0.5], (v[1:] + v[:-1]) / 2, v, [2.0]])


def _f1(y, pred):
  return skm.f1_score(y, pred, zero_division=0)


@pytest.mark.parametrize('seed,ties', [(0, True), (1, False), (2, True)])
def test_per_class_and_global_reach_brute_force_best(seed, ties):
  labels, scores = _data(seed, ties)
  per_class, global_t = thresholds.tune(labels, scores)
  assert per_class.shape == (K,)
  assert per_class[0] == 0.5
  for c in range(1, K):
    y, s = labels[:, c], scores[:, c]
    best = max(_f1(y, s > t) for t in _candidates(s))
    tuned = _f1(y, s > per_class[c])
    assert tuned == pytest.approx(best, abs=1e-6)
    assert tuned >= _f1(y, s > 0.5) - 1e-9
  y, s = labels.ravel(), scores.ravel()
  best = max(_f1(y, s > t) for t in _candidates(s))
  assert _f1(y, s > global_t) == pytest.approx(best, abs=1e-6)
  assert _f1(y, s > global_t) >= _f1(y, s > 0.5) - 1e-9


def test_mask_leaves_entries_out():
  labels, scores = _data(3)
  rng = np.random.default_rng(3)
  mask = (rng.random((N, K)) > 0.3).astype(int)
  junk_l = np.where(mask == 1, labels, 9)
  junk_s = np.where(mask == 1, scores, np.nan)
  per_class, global_t = thresholds.tune(junk_l, junk_s, mask)
  for c in range(1, K):
    v = mask[:, c] == 1
    y, s = labels[v, c], scores[v, c]
    best = max(_f1(y, s > t) for t in _candidates(s))
    assert _f1(y, s > per_class[c]) == pytest.approx(best, abs=1e-6)
  v = mask == 1
  best = max(_f1(labels[v], scores[v] > t) for t in _candidates(scores[v]))
  assert _f1(labels[v], scores[v] > global_t) == pytest.approx(best, abs=1e-6)


def test_edge_thresholds():
  # Everything positive scores 0: the threshold must go below 0.
  per_class, _ = thresholds.tune([[1], [1]], [[0.0], [0.0]])
  assert per_class[0] < 0
  # Adjacent float32 values: the threshold must separate them.
  a = np.float32(0.3)
  b = np.nextafter(a, np.float32(1))
  per_class, _ = thresholds.tune([[0], [1]], np.array([[a], [b]]))
  assert a <= per_class[0] < b
  # No positive anywhere: the default.
  per_class, global_t = thresholds.tune(np.zeros((3, 2)), np.full((3, 2), .9))
  np.testing.assert_array_equal(per_class, [0.5, 0.5])
  assert global_t == 0.5
