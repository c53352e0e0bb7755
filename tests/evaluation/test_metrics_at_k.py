"""The @k metrics against the formulas of Jain, Prabhu and Varma (KDD 2016) written out in
NumPy, and against scikit-learn's `ndcg_score` and `top_k_accuracy_score`."""

import itertools

import numpy as np
import pytest
from sklearn import metrics as skm

from mlheads.evaluation import metrics

N, K = 24, 6
KS = metrics.TOP_K
TOL = 1e-5


def _data(seed, ties=False, p=0.3):
  rng = np.random.default_rng(seed)
  labels = (rng.random((N, K)) < p).astype(np.int64)
  scores = rng.random((N, K)).astype(np.float32)
  if ties:
    scores = np.round(scores * 3) / 3  # groups of about two labels a row
    scores = scores.astype(np.float32)
  return labels, scores


def _paper_propensity(labels, mask, a=0.55, b=1.5):
  """p_l = 1 / (1 + C e^{-A log(N_l + B)}), C = (log N - 1)(B + 1)^A."""
  n = (mask.sum(1) > 0).sum()
  n_l = (labels * mask).sum(0)
  c = (np.log(n) - 1) * (b + 1) ** a
  return 1 / (1 + c * np.exp(-a * np.log(n_l + b)))


def _paper_row(y, order, inv_p, k):
  """One row's metrics for one ranking `order` (label indices, best first), as in the paper:
  P@k = 1/k sum_{l in rank_k} y_l, DCG@k = sum y_l / log(l + 1), nDCG@k = DCG@k / sum_{l <=
  min(k, |y|)} 1 / log(l + 1), PSP@k = 1/k sum y_l / p_l, PSnDCG@k = PSDCG@k / sum_{l<=k}
  1 / log(l + 1). (Fewer than k labels: k becomes their number.)"""
  k = min(k, len(order))
  top = order[:k]
  disc = 1 / np.log2(np.arange(2, k + 2))
  n_pos = y.sum()
  ideal = (1 / np.log2(np.arange(2, min(k, n_pos) + 2))).sum()
  return {
      'precision': y[top].sum() / k,
      'recall': y[top].sum() / n_pos if n_pos else 0.0,
      'ndcg': (y[top] * disc).sum() / ideal if n_pos else 0.0,
      'psp': (y[top] * inv_p[top]).sum() / k,
      'psndcg': (y[top] * inv_p[top] * disc).sum() / disc.sum(),
  }


def _reference(labels, scores, mask, propensity):
  """Mean over rows (with an unmasked label) of the paper's metrics, each row's value the
  mean over every order of its tied labels (the expectation the module promises)."""
  inv_p = 1 / propensity
  rows = {f'{m}_at_{k}': [] for m in ('precision', 'recall', 'ndcg', 'psp', 'psndcg')
          for k in KS}
  for y, s, v in zip(labels * mask, scores, mask.astype(bool)):
    if not v.any():
      continue
    idx = np.flatnonzero(v)
    orders = [o for o in itertools.permutations(idx)
              if all(s[o[i]] >= s[o[i + 1]] for i in range(len(o) - 1))]
    for k in KS:
      per = [_paper_row(y, np.array(o), inv_p, k) for o in orders]
      for m in per[0]:
        rows[f'{m}_at_{k}'].append(np.mean([p[m] for p in per]))
  return {key: np.mean(v) for key, v in rows.items()}


@pytest.mark.parametrize('ties,masked', [(False, False), (True, False), (True, True)])
def test_at_k_equal_the_papers_formulas(ties, masked):
  labels, scores = _data(0 + ties + 2 * masked, ties)
  mask = np.ones_like(labels)
  if masked:
    mask = (np.random.default_rng(1).random(labels.shape) > 0.25).astype(np.int64)
    mask[2] = 0  # a fully masked row is absent
    mask[3, 1:] = 0  # a row with one label left: k takes that one
  labels[4] = 0  # a row without a positive
  want = _reference(labels, scores, mask, _paper_propensity(labels, mask))
  got = metrics.compute(labels, scores, mask=mask)
  for key, v in want.items():
    assert got[key] == pytest.approx(v, abs=TOL), key


def test_given_propensities_are_used_and_checked():
  labels, scores = _data(5)
  p = np.linspace(0.2, 1.0, K)
  want = _reference(labels, scores, np.ones_like(labels), p)
  got = metrics.compute(labels, scores, propensity=p)
  assert got['psp_at_3'] == pytest.approx(want['psp_at_3'], abs=TOL)
  # All propensities 1: the propensity-scored metrics are the plain ones.
  ones = metrics.compute(labels, scores, propensity=np.ones(K))
  assert ones['psp_at_5'] == pytest.approx(ones['precision_at_5'], abs=TOL)
  with pytest.raises(ValueError, match='propensity'):
    metrics.compute(labels, scores, propensity=np.zeros(K))


def test_propensities_follow_the_paper():
  p = metrics.propensities([0, 10, 1000], rows=10_000, a=0.6, b=2.6)
  c = (np.log(10_000) - 1) * 3.6 ** 0.6
  np.testing.assert_allclose(p, 1 / (1 + c * (np.array([0, 10, 1000]) + 2.6) ** -0.6),
                             rtol=1e-6)
  assert p[0] < p[1] < p[2] < 1  # rare labels are the likely missing ones


@pytest.mark.parametrize('ties', [False, True])
def test_ndcg_equals_sklearn(ties):
  labels, scores = _data(6, ties, p=0.4)
  got = metrics.compute(labels, scores)
  for k in KS:
    assert got[f'ndcg_at_{k}'] == pytest.approx(skm.ndcg_score(labels, scores, k=k), abs=TOL)


def test_recall_and_precision_at_k_equal_sklearn_top_k_accuracy():
  rng = np.random.default_rng(7)
  truth = rng.integers(0, K, N)
  labels = np.eye(K, dtype=np.int64)[truth]  # one label a row: R@k is top-k accuracy
  scores = rng.random((N, K)).astype(np.float32)
  got = metrics.compute(labels, scores)
  for k in KS:
    acc = skm.top_k_accuracy_score(truth, scores, k=k, labels=np.arange(K))
    assert got[f'recall_at_{k}'] == pytest.approx(acc, abs=TOL)
    assert got[f'precision_at_{k}'] == pytest.approx(acc / k, abs=TOL)
