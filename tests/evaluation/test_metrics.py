"""mlheads.metrics against scikit-learn, key by key, on awkward inputs."""

import jax
import numpy as np
import pytest
from sklearn import metrics as skm

from mlheads.evaluation import metrics

N, K = 64, 6  # One shape for most tests: one compilation.
TOL = 1e-6


def _data(seed, n=N, k=K, ties=False, p=0.3):
  rng = np.random.default_rng(seed)
  labels = (rng.random((n, k)) < p).astype(np.int64)
  scores = rng.random((n, k)).astype(np.float32)
  if ties:
    scores = np.round(scores, 1).astype(np.float32)
  return labels, scores


def _mask(seed, n=N, k=K, p=0.3):
  """Random 0/1 mask; each row keeps 0 or >= 2 entries (sklearn's ranking
  metrics reject a single-label row), and one row is fully masked."""
  rng = np.random.default_rng(seed + 1000)
  mask = (rng.random((n, k)) > p).astype(np.int64)
  mask[mask.sum(1) == 1, :2] = 1
  mask[3] = 0
  return mask


def _prf(y, p, average):
  return (skm.precision_score(y, p, average=average, zero_division=0),
          skm.recall_score(y, p, average=average, zero_division=0),
          skm.f1_score(y, p, average=average, zero_division=0))


def _both_classes(y):
  return (y.sum(0) > 0) & (y.sum(0) < y.shape[0])


def _reference_unmasked(y, s, thr):
  """scikit-learn's multilabel calls on full arrays."""
  p = (s > thr).astype(np.int64)
  kept = _both_classes(y)
  ref = {
      'hamming_loss': skm.hamming_loss(y, p),
      'label_accuracy': 1 - skm.hamming_loss(y, p),
      'subset_accuracy': skm.accuracy_score(y, p),
      'average_precision_micro': skm.average_precision_score(
          y, s, average='micro'),
      'roc_auc_micro': skm.roc_auc_score(y, s, average='micro'),
      'label_ranking_average_precision':
          skm.label_ranking_average_precision_score(y, s),
      'coverage_error': skm.coverage_error(y, s),
      'label_ranking_loss': skm.label_ranking_loss(y, s),
  }
  if kept.any():
    ref['average_precision_macro'] = skm.average_precision_score(
        y[:, kept], s[:, kept], average='macro')
    ref['roc_auc_macro'] = skm.roc_auc_score(
        y[:, kept], s[:, kept], average='macro')
  for avg in ('micro', 'macro', 'samples'):
    for name, v in zip(('precision', 'recall', 'f1'), _prf(y, p, avg)):
      ref[f'{name}_{avg}'] = v
  return ref


def _reference_masked(y, s, thr, mask):
  """scikit-learn on unmasked subsets: flat for micro and entry metrics, per
  column for macro, per row for sample-wise and ranking metrics."""
  valid = mask == 1
  p = (s > np.broadcast_to(thr, y.shape)).astype(np.int64)
  yv, pv, sv = y[valid], p[valid], s[valid]
  ref = {'hamming_loss': skm.hamming_loss(yv, pv),
         'label_accuracy': skm.accuracy_score(yv, pv),
         'average_precision_micro': skm.average_precision_score(yv, sv),
         'roc_auc_micro': skm.roc_auc_score(yv, sv)}
  for name, v in zip(('precision', 'recall', 'f1'), _prf(yv, pv, 'binary')):
    ref[f'{name}_micro'] = v
  cols = [_prf(y[valid[:, c], c], p[valid[:, c], c], 'binary')
          for c in range(y.shape[1])]
  for i, name in enumerate(('precision', 'recall', 'f1')):
    ref[f'{name}_macro'] = np.mean([c[i] for c in cols])
  aps, aucs = [], []
  for c in range(y.shape[1]):
    yc, sc = y[valid[:, c], c], s[valid[:, c], c]
    if 0 < yc.sum() < len(yc):
      aps.append(skm.average_precision_score(yc, sc))
      aucs.append(skm.roc_auc_score(yc, sc))
  ref['average_precision_macro'] = np.mean(aps)
  ref['roc_auc_macro'] = np.mean(aucs)
  rows = {k: [] for k in ('subset_accuracy', 'precision_samples',
                          'recall_samples', 'f1_samples',
                          'label_ranking_average_precision',
                          'coverage_error', 'label_ranking_loss')}
  for i in np.flatnonzero(valid.any(1)):
    v = valid[i]
    yi, pi, si = y[i, v][None], p[i, v][None], s[i, v][None]
    rows['subset_accuracy'].append(skm.accuracy_score(yi, pi))
    # A (0, 0) column changes no sample-wise count and keeps sklearn in
    # multilabel mode for one-entry rows.
    prf = _prf(np.pad(yi, ((0, 0), (0, 1))), np.pad(pi, ((0, 0), (0, 1))),
               'samples')
    for name, val in zip(('precision', 'recall', 'f1'), prf):
      rows[f'{name}_samples'].append(val)
    rows['label_ranking_average_precision'].append(
        skm.label_ranking_average_precision_score(yi, si))
    rows['coverage_error'].append(skm.coverage_error(yi, si))
    rows['label_ranking_loss'].append(skm.label_ranking_loss(yi, si))
  ref |= {k: np.mean(v) for k, v in rows.items()}
  return ref


def _precision_at_k_reference(y, s, k, mask=None):
  """Expected hits under a random order of ties, label by label."""
  valid = np.ones(y.shape, bool) if mask is None else mask == 1
  out = []
  for yi, si, vi in zip(y, s, valid):
    if not vi.any():
      continue
    yi, si = yi[vi], si[vi]
    kk = min(k, len(si))
    hits = 0.0
    for j in np.flatnonzero(yi):
      greater, equal = np.sum(si > si[j]), np.sum(si == si[j])
      hits += np.clip((kk - greater) / equal, 0, 1)
    out.append(hits / kk)
  return np.mean(out)


def _assert_close(got, ref):
  assert set(ref) <= set(got)
  bad = {k: (got[k], float(v)) for k, v in ref.items()
         if not abs(got[k] - v) <= TOL}
  assert not bad, bad


def _cases():
  y, s = _data(0)
  yield 'random', y, s
  y, s = _data(1, ties=True)
  yield 'ties', y, s
  y, s = _data(2, ties=True)
  y[:, 1] = 0  # A class with no positive.
  y[:, 2] = 1  # A class with only positives.
  y[:10] = 0  # All-negative rows.
  y[10:12] = 1  # All-positive rows.
  yield 'degenerate', y, s


@pytest.mark.parametrize('name,labels,scores', list(_cases()))
def test_every_key_matches_sklearn(name, labels, scores):
  del name
  got = metrics.compute(labels, scores)
  assert set(got) == set(metrics.KEYS)
  _assert_close(got, _reference_unmasked(labels, scores, 0.5))
  for k in metrics.TOP_K:
    assert got[f'precision_at_{k}'] == pytest.approx(
        _precision_at_k_reference(labels, scores, k), abs=TOL)
  assert got['one_error'] == pytest.approx(1 - got['precision_at_1'])


def test_per_class_thresholds_match_sklearn():
  labels, scores = _data(3, ties=True)
  thr = np.linspace(0.2, 0.7, K).astype(np.float32)
  got = metrics.compute(labels, scores, threshold=thr)
  _assert_close(got, _reference_unmasked(labels, scores, thr))


@pytest.mark.parametrize('ties', [False, True])
def test_masked_matches_sklearn_on_unmasked_subsets(ties):
  labels, scores = _data(4, ties=ties)
  labels[:, 0] = 0
  mask = _mask(4)
  got = metrics.compute(labels, scores, mask=mask)
  _assert_close(got, _reference_masked(labels, scores, 0.5, mask))
  for k in metrics.TOP_K:
    assert got[f'precision_at_{k}'] == pytest.approx(
        _precision_at_k_reference(labels, scores, k, mask), abs=TOL)


def test_masked_garbage_changes_nothing():
  labels, scores = _data(5, ties=True)
  mask = _mask(5)
  clean = metrics.compute(labels, scores, mask=mask)
  rng = np.random.default_rng(0)
  junk_labels = np.where(mask == 1, labels, rng.choice([-1, 7, 1], labels.shape))
  junk_scores = np.where(mask == 1, scores,
                         rng.choice([np.nan, 5.0, -np.inf, 1.0], scores.shape))
  junk = metrics.compute(junk_labels, junk_scores, mask=mask)
  assert junk == clean
  for key, v in metrics.per_class(junk_labels, junk_scores, mask=mask).items():
    np.testing.assert_array_equal(
        v, metrics.per_class(labels, scores, mask=mask)[key])


def test_all_ones_mask_equals_no_mask():
  labels, scores = _data(6, ties=True)
  assert metrics.compute(labels, scores, mask=np.ones_like(labels)) == (
      metrics.compute(labels, scores))


def test_fully_masked_rows_are_absent():
  labels, scores = _data(7, n=N - 8)
  more_l = np.concatenate([labels, np.ones((8, K), int)])
  more_s = np.concatenate([scores, np.zeros((8, K), np.float32)])
  mask = np.concatenate([np.ones_like(labels), np.zeros((8, K), int)])
  got, ref = metrics.compute(more_l, more_s, mask=mask), metrics.compute(
      labels, scores)
  assert got == pytest.approx(ref, abs=TOL)


def test_hand_checked_values():
  # scikit-learn's docstring example (which prints 0.416...): row 1 ranks
  # its positive 2nd (1/2), row 2 ranks it 3rd (1/3).
  got = metrics.compute([[1, 0, 0], [0, 0, 1]],
                        [[0.75, 0.5, 1], [1, 0.2, 0.1]])
  assert got['label_ranking_average_precision'] == pytest.approx(5 / 12)
  assert got['precision_at_1'] == 0.0 and got['one_error'] == 1.0
  assert got['coverage_error'] == pytest.approx(2.5)
  # A tie between a positive and a negative at the top: half a hit.
  got = metrics.compute([[1, 0, 0]], [[0.5, 0.5, 0.1]])
  assert got['precision_at_1'] == pytest.approx(0.5)
  assert got['precision_at_3'] == pytest.approx(1 / 3)
  # Two labels only: precision@3 divides by the 2 available.
  got = metrics.compute([[1, 1]], [[0.9, 0.2]])
  assert got['precision_at_3'] == 1.0 and got['f1_samples'] == pytest.approx(
      2 / 3)


def test_precision_at_k_ignores_column_order():
  labels, scores = _data(8, ties=True)
  perm = np.random.default_rng(0).permutation(K)
  a = metrics.compute(labels, scores)
  b = metrics.compute(labels[:, perm], scores[:, perm])
  assert a == pytest.approx(b, abs=TOL)


def test_single_binary_output():
  rng = np.random.default_rng(9)
  y = (rng.random(N) < 0.5).astype(int)
  s = rng.random(N).astype(np.float32)
  got = metrics.compute(y, s)
  # One label: label accuracy and subset accuracy are both the plain accuracy, and nothing
  # ranks a row's labels against each other.
  assert got['label_accuracy'] == pytest.approx(skm.accuracy_score(y, s > 0.5))
  assert got['subset_accuracy'] == pytest.approx(skm.accuracy_score(y, s > 0.5))
  assert got['roc_auc_macro'] == pytest.approx(skm.roc_auc_score(y, s))
  assert got['average_precision_micro'] == pytest.approx(
      skm.average_precision_score(y, s))
  assert set(got) == set(metrics.keys(1)) == set(metrics.KEYS) - set(metrics.RANKING_KEYS)
  assert metrics.compute(y[:, None], s[:, None]) == got
  assert {'label_ranking_average_precision', 'coverage_error', 'one_error',
          'precision_at_1'} <= set(metrics.RANKING_KEYS)
  assert not {'average_precision_macro', 'f1_samples'} & set(metrics.RANKING_KEYS)


def test_accumulator_over_batches_equals_one_pass():
  labels, scores = _data(10, ties=True)
  mask = _mask(10)
  args = metrics.check_inputs(labels, scores, 0.5, mask)
  update = jax.jit(metrics.update)
  counts = metrics.init(K)
  labels, scores, thr, mask = args
  for lo in range(0, N, 16):
    rows = slice(lo, lo + 16)
    counts = update(counts, labels[rows], scores[rows], thr, mask[rows])
  batched = jax.jit(metrics.finalize)(counts)
  full = metrics.compute(*args)
  for key, v in batched.items():
    assert float(v) == pytest.approx(full[key], abs=TOL), key


def test_per_class_nan_where_undefined_and_matches_sklearn():
  """B05: a class without a positive (or a negative) gets an undefined per-class AP / AUC (NaN),
  never 0, and the macro mean leaves it out."""
  labels, scores = _data(11, ties=True)
  labels[:, 1] = 0
  labels[:, 2] = 1
  pc = metrics.per_class(labels, scores)
  pred = (scores > 0.5).astype(int)
  assert np.isnan(pc['recall'][1]) and np.isnan(pc['average_precision'][1])
  assert np.isnan(pc['roc_auc'][2]) and np.isnan(pc['average_precision'][2])
  for c in (0, 3, 4, 5):
    assert pc['average_precision'][c] == pytest.approx(
        skm.average_precision_score(labels[:, c], scores[:, c]), abs=TOL)
    assert pc['roc_auc'][c] == pytest.approx(
        skm.roc_auc_score(labels[:, c], scores[:, c]), abs=TOL)
    assert pc['f1'][c] == pytest.approx(
        skm.f1_score(labels[:, c], pred[:, c]), abs=TOL)
  np.testing.assert_array_equal(pc['support'], labels.sum(0))
  got = metrics.compute(labels, scores)
  assert got['average_precision_macro'] == pytest.approx(
      np.nanmean(pc['average_precision']), abs=TOL)


def test_no_class_with_both_labels_gives_nan_not_zero():
  """B05: with no class defined, the macro AP and AUC are undefined, not 0."""
  got = metrics.compute(np.zeros((4, 3), int), np.full((4, 3), 0.3))
  assert np.isnan(got['roc_auc_macro']) and np.isnan(
      got['average_precision_macro'])
  assert got['label_accuracy'] == 1.0


@pytest.mark.parametrize('labels,scores,mask,match', [
    ([[0, 2]], [[0.1, 0.2]], None, r'labels\[0, 1\] = .*2'),
    ([[0, 1]], [[0.1, np.nan]], None, r'scores\[0, 1\] = .*nan'),
    ([[0, 1]], [[0.1, 1.5]], None, r'scores\[0, 1\] = .*1.5'),
    ([[0, 1]], [[0.1, 0.2, 0.3]], None, 'differ'),
    ([[0, 1]], [[0.1, 0.2]], [[1, 3]], r'mask\[0, 1\]'),
])
def test_bad_inputs_name_the_value(labels, scores, mask, match):
  with pytest.raises(ValueError, match=match):
    metrics.compute(labels, scores, mask=mask)
