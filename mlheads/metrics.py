"""Exact multi-label metrics: jittable, mask-aware, equal to scikit-learn.

Inputs: `labels` 0/1 `[N, K]`, `scores` in [0, 1] `[N, K]` (a `[N]` array is
one binary output, `[N, 1]`), optional `mask` 0/1 `[N, K]`. A label is
predicted where `score > threshold`; `threshold` is a scalar or a `[K]` vector.

Conventions (each checked against scikit-learn in tests/test_metrics.py):

* A masked entry is left out everywhere, whatever its label or score holds
  (NaN, -1, ...). A row with every entry masked is absent: it counts in no
  sample-wise mean. Threshold metrics over entries (hamming, micro averages)
  use the unmasked entries; per-class metrics use each column's unmasked rows;
  sample-wise and ranking metrics rank each row among its unmasked labels.
* precision / recall / F1 follow scikit-learn's defaults with
  `zero_division=0`: an undefined ratio counts as 0, in macro and sample
  averages alike (macro averages over all K classes, as scikit-learn does).
  `per_class` reports those undefined values as NaN instead, so that a report
  never shows an undefined value as 0.
* `average_precision_macro` and `roc_auc_macro` average over the classes that
  have at least one positive and one negative (unmasked); the other classes
  are NaN in `per_class` and never enter a mean. NaN if no class qualifies.
  `*_micro` rank all unmasked entries together (scikit-learn's "micro").
* Ties follow scikit-learn: average precision uses the precision at the end
  of a tie group, ROC AUC counts a tied positive/negative pair as 1/2,
  `label_ranking_loss` counts it as a wrong pair, LRAP and coverage rank a
  label after every label scored at least as high. Rows whose unmasked labels
  are all 0 or all 1 score LRAP 1 and ranking loss 0; a row without a
  positive has coverage 0 (all as scikit-learn).
* `precision_at_k`: per row, (#positives among the k top-scored unmasked
  labels) / k, averaged over rows. Ties at the k-th score are split evenly
  (the expected value over a random order of the tied labels), so the result
  does not depend on column order. A row with fewer than k unmasked labels
  takes all of them and divides by their number. `one_error` is
  1 - `precision_at_1`: the (expected) fraction of rows whose top label is
  not a positive; rows without a positive count as errors.
* `accuracy` = 1 - `hamming_loss`: the fraction of correct unmasked entries
  (what a single binary output reports).

Scores are compared in float32. Ranking metrics sort int32 keys that pack
(score bits, label bit): non-negative float32 bits order like the floats, and
one int32 operand sorts several times faster than (float, label) pairs. This
is why scores must lie in [0, 1]. On CPU the three sorts (rows, columns, all
entries) run in NumPy via `jax.pure_callback` (see `sort_last_axis`); tie
groups and counts are XLA scans.

Threshold metrics accumulate in constant memory with `ThresholdCounts`
(`init`, `update`, `finalize`); ranking metrics are exact over full arrays.
Counts are int32: up to 2**31 entries per class.
"""

import functools
from typing import NamedTuple

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

TOP_K = (1, 3)

KEYS = (
    'accuracy', 'hamming_loss', 'subset_accuracy',
    'precision_micro', 'recall_micro', 'f1_micro',
    'precision_macro', 'recall_macro', 'f1_macro',
    'precision_samples', 'recall_samples', 'f1_samples',
    'average_precision_macro', 'average_precision_micro',
    'roc_auc_macro', 'roc_auc_micro',
    'label_ranking_average_precision', 'coverage_error', 'label_ranking_loss',
    'one_error', 'precision_at_1', 'precision_at_3',
)


# ----------------------------------------------------------------------------
# Threshold metrics: constant-memory accumulator.


class ThresholdCounts(NamedTuple):
  """Sufficient statistics of the threshold metrics (a pytree).

  Attributes:
    tp, fp, fn, tn: `[K]` int32 per-class confusion counts.
    rows: `[]` int32, rows with at least one unmasked entry.
    subset_correct: `[]` int32, such rows with every unmasked entry right.
    sample_precision, sample_recall, sample_f1: `[]` float32 sums over rows.
  """
  tp: jax.Array
  fp: jax.Array
  fn: jax.Array
  tn: jax.Array
  rows: jax.Array
  subset_correct: jax.Array
  sample_precision: jax.Array
  sample_recall: jax.Array
  sample_f1: jax.Array


def init(num_classes: int) -> ThresholdCounts:
  """Empty counts for `num_classes` classes."""
  z = jnp.zeros((num_classes,), jnp.int32)
  i = jnp.zeros((), jnp.int32)
  f = jnp.zeros((), jnp.float32)
  return ThresholdCounts(z, z, z, z, i, i, f, f, f)


def _valid_and_positive(labels, mask):
  """0/1 `[N, K]` bools; garbage under the mask becomes (invalid, negative)."""
  valid = jnp.ones(labels.shape, bool) if mask is None else mask > 0
  return valid, valid & (labels == 1)


def _div0(a, b):
  """a / b, and 0 where b == 0 (scikit-learn's zero_division=0)."""
  return jnp.where(b > 0, a / jnp.where(b > 0, b, 1), 0.0)


def update(counts: ThresholdCounts, labels, scores, threshold=0.5,
           mask=None) -> ThresholdCounts:
  """Adds a batch to `counts`. Jittable.

  Args:
    counts: the running `ThresholdCounts`.
    labels: 0/1 `[N, K]`.
    scores: `[N, K]`.
    threshold: scalar or `[K]`; predicted where `score > threshold`.
    mask: optional 0/1 `[N, K]`; 0 leaves the entry out.

  Returns:
    The updated counts.
  """
  valid, y = _valid_and_positive(labels, mask)
  p = valid & (jnp.where(valid, scores, 0) > jnp.asarray(threshold))
  i32 = functools.partial(jnp.sum, dtype=jnp.int32)
  tp_e, fp_e, fn_e = y & p, ~y & p, y & ~p
  tn_e = valid & ~y & ~p
  # Sample-wise: one row's unmasked entries, as sklearn's average='samples'.
  tp_r = i32(tp_e, axis=1).astype(jnp.float32)
  fp_r = i32(fp_e, axis=1).astype(jnp.float32)
  fn_r = i32(fn_e, axis=1).astype(jnp.float32)
  present = jnp.any(valid, axis=1)
  wrong_r = (fp_r + fn_r) > 0
  return ThresholdCounts(
      tp=counts.tp + i32(tp_e, axis=0),
      fp=counts.fp + i32(fp_e, axis=0),
      fn=counts.fn + i32(fn_e, axis=0),
      tn=counts.tn + i32(tn_e, axis=0),
      rows=counts.rows + i32(present),
      subset_correct=counts.subset_correct + i32(present & ~wrong_r),
      sample_precision=counts.sample_precision
      + jnp.sum(_div0(tp_r, tp_r + fp_r)),
      sample_recall=counts.sample_recall + jnp.sum(_div0(tp_r, tp_r + fn_r)),
      sample_f1=counts.sample_f1
      + jnp.sum(_div0(2 * tp_r, 2 * tp_r + fp_r + fn_r)),
  )


def finalize(counts: ThresholdCounts) -> dict[str, jax.Array]:
  """Threshold metrics from accumulated counts (jittable scalars)."""
  f = lambda x: x.astype(jnp.float32)
  tp, fp, fn, tn = f(counts.tp), f(counts.fp), f(counts.fn), f(counts.tn)
  entries = jnp.sum(tp + fp + fn + tn)
  stp, sfp, sfn = jnp.sum(tp), jnp.sum(fp), jnp.sum(fn)
  rows = f(counts.rows)
  hamming = _div0(sfp + sfn, entries)
  return {
      'accuracy': 1.0 - hamming,
      'hamming_loss': hamming,
      'subset_accuracy': _div0(f(counts.subset_correct), rows),
      'precision_micro': _div0(stp, stp + sfp),
      'recall_micro': _div0(stp, stp + sfn),
      'f1_micro': _div0(2 * stp, 2 * stp + sfp + sfn),
      'precision_macro': jnp.mean(_div0(tp, tp + fp)),
      'recall_macro': jnp.mean(_div0(tp, tp + fn)),
      'f1_macro': jnp.mean(_div0(2 * tp, 2 * tp + fp + fn)),
      'precision_samples': _div0(counts.sample_precision, rows),
      'recall_samples': _div0(counts.sample_recall, rows),
      'f1_samples': _div0(counts.sample_f1, rows),
  }


# ----------------------------------------------------------------------------
# Ranking metrics: one sort of packed int32 keys per axis.


def sort_keys(labels, scores, mask=None):
  """Packed int32 keys `[N, K]`: ascending key = ascending score, then label.

  A masked entry gets key -2: it sorts first, and its label bit reads 0.
  Within a tie group negatives sort before positives, which the AUC counts
  below rely on.
  """
  valid, y = _valid_and_positive(labels, mask)
  s = jnp.where(valid, scores, 0).astype(jnp.float32)
  s = jnp.where(s == 0, jnp.float32(0), s)  # -0.0 has the sign bit set.
  key = (lax.bitcast_convert_type(s, jnp.int32) << 1) | y.astype(jnp.int32)
  return jnp.where(valid, key, -2)


class _Sorted(NamedTuple):
  """Tie-group statistics of keys sorted ascending along the last axis."""
  pos: jax.Array        # [..., M] bool: a positive (never an invalid entry).
  score: jax.Array      # [..., M] int32 score bits (-1: invalid).
  n_ge: jax.Array       # [..., M] valid entries scored >= this one.
  tp_ge: jax.Array      # [..., M] positives scored >= this one.
  neg_le: jax.Array     # [..., M] negatives scored <= this one (if positive).
  neg_lt: jax.Array     # [..., M] negatives scored < this one.
  n_valid: jax.Array    # [..., 1]
  n_pos: jax.Array      # [..., 1]


def sort_last_axis(keys):
  """Sorts int32 keys along the last axis.

  On CPU the sort runs in NumPy through `jax.pure_callback` (still jittable):
  XLA:CPU's comparator-based sort is 5-10x slower than NumPy's vectorized
  sort on 10^7 keys, and the sorts dominate the ranking metrics. Other
  platforms use `lax.sort`.
  """
  def host_sort(k):
    return jax.pure_callback(
        lambda a: np.sort(np.asarray(a), axis=-1),
        jax.ShapeDtypeStruct(k.shape, k.dtype), k, vmap_method='broadcast_all')

  return lax.platform_dependent(keys, cpu=host_sort, default=xla_sort)


def xla_sort(k):
  """`lax.sort` along the last axis (the non-CPU path of `sort_last_axis`)."""
  return lax.sort(k, dimension=k.ndim - 1, is_stable=False)


def _sorted_stats(k) -> _Sorted:
  """Counts around each tie group of keys `k` sorted along the last axis."""
  axis = k.ndim - 1
  m = k.shape[-1]
  valid = k >= 0
  pos = (k & 1) == 1
  score = k >> 1
  idx = lax.broadcasted_iota(jnp.int32, k.shape, axis)
  first = jnp.ones(k.shape[:-1] + (1,), bool)
  is_start = jnp.concatenate([first, score[..., 1:] != score[..., :-1]], -1)
  pos_i = pos.astype(jnp.int32)
  pos_before = prefix_scan(jnp.add, pos_i) - pos_i
  # Indices are non-decreasing, so a running max carries the index of the
  # current tie group's first element forward.
  start = prefix_scan(jnp.maximum, jnp.where(is_start, idx, 0))
  pos_before_group = jnp.take_along_axis(pos_before, start, axis=axis)
  n_valid = jnp.sum(valid, -1, keepdims=True, dtype=jnp.int32)
  n_pos = jnp.sum(pos_i, -1, keepdims=True, dtype=jnp.int32)
  n_invalid = m - n_valid
  return _Sorted(
      pos=pos, score=score,
      n_ge=m - start,  # Invalid keys sort first, below any valid score.
      tp_ge=n_pos - pos_before_group,
      neg_le=idx - n_invalid - pos_before,
      neg_lt=start - n_invalid - pos_before_group,
      n_valid=n_valid, n_pos=n_pos)


def prefix_scan(op, x, chunk=64):
  """Inclusive prefix `op` (add / maximum) along the last axis.

  XLA:CPU runs `lax.cumsum` / `lax.cummax` several times slower than an
  associative scan; for long axes a scan within chunks plus one across chunk
  totals halves the passes over memory again.
  """
  m = x.shape[-1]
  if m <= 4 * chunk:
    return lax.associative_scan(op, x, axis=x.ndim - 1)
  pad = (-m) % chunk
  xp = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)])
  xp = xp.reshape(x.shape[:-1] + (-1, chunk))
  inner = lax.associative_scan(op, xp, axis=xp.ndim - 1)
  carry = prefix_scan(op, inner[..., -1], chunk)
  # Chunk j combines with the carry of chunks < j; 0 is neutral for both ops
  # on the non-negative values used here.
  carry = jnp.concatenate([jnp.zeros_like(carry[..., :1]), carry[..., :-1]], -1)
  out = op(inner, carry[..., None]).reshape(x.shape[:-1] + (-1,))
  return out[..., :m]


def _average_precision_and_auc(st: _Sorted):
  """AP and ROC AUC per leading index (NaN unless both classes present)."""
  f = lambda x: x.astype(jnp.float32)
  n_pos = f(st.n_pos[..., 0])
  n_neg = f(st.n_valid[..., 0]) - n_pos
  defined = (n_pos > 0) & (n_neg > 0)
  prec = jnp.where(st.pos, f(st.tp_ge) / jnp.maximum(f(st.n_ge), 1), 0)
  ap = jnp.sum(prec, -1) / jnp.maximum(n_pos, 1)
  # Per positive, the fraction of negatives ranked below it (ties count 1/2).
  below = jnp.where(st.pos, f(st.neg_lt + st.neg_le) * 0.5, 0)
  auc = jnp.sum(below, -1) / jnp.maximum(n_pos, 1) / jnp.maximum(n_neg, 1)
  nan = jnp.float32(jnp.nan)
  return jnp.where(defined, ap, nan), jnp.where(defined, auc, nan)


def _precision_at_k(st: _Sorted, k: int):
  """Per-row precision@k `[N]`, ties at the k-th score split evenly."""
  m = st.score.shape[-1]
  kk = jnp.minimum(k, st.n_valid)  # [N, 1]
  # The k-th highest unmasked score sits at ascending position m - kk.
  at = jnp.clip(m - kk, 0, m - 1)
  t = jnp.take_along_axis(st.score, at, axis=-1)
  above, tied = st.score > t, st.score == t
  n_above = jnp.sum(above, -1, keepdims=True)
  n_tied = jnp.maximum(jnp.sum(tied, -1, keepdims=True), 1)
  hits = jnp.sum(st.pos & above, -1, keepdims=True) + jnp.sum(
      st.pos & tied, -1, keepdims=True) * (kk - n_above) / n_tied
  return (hits / jnp.maximum(kk, 1))[:, 0]


def _row_mean(x, present):
  return jnp.sum(jnp.where(present, x, 0)) / jnp.maximum(jnp.sum(present), 1)


@jax.jit
def ranking(labels, scores, mask=None) -> dict[str, jax.Array]:
  """Exact ranking metrics over full `[N, K]` arrays (jittable scalars)."""
  keys = sort_keys(labels, scores, mask)
  f = lambda x: x.astype(jnp.float32)
  # Sample-wise, ranking each row among its unmasked labels.
  r = _sorted_stats(sort_last_axis(keys))
  n_pos, n_valid = r.n_pos[:, 0], r.n_valid[:, 0]
  present = n_valid > 0
  trivial = (n_pos == 0) | (n_pos == n_valid)
  lrap = jnp.sum(jnp.where(r.pos, f(r.tp_ge) / f(jnp.maximum(r.n_ge, 1)), 0),
                 -1) / f(jnp.maximum(n_pos, 1))
  lrap = jnp.where(trivial, 1.0, lrap)
  wrong_pairs = jnp.sum(jnp.where(r.pos, r.n_ge - r.tp_ge, 0), -1)
  rank_loss = jnp.where(
      trivial, 0.0,
      f(wrong_pairs) / f(jnp.maximum(n_pos * (n_valid - n_pos), 1)))
  coverage = jnp.max(jnp.where(r.pos, r.n_ge, 0), -1)
  out = {
      'label_ranking_average_precision': _row_mean(lrap, present),
      'label_ranking_loss': _row_mean(rank_loss, present),
      'coverage_error': _row_mean(f(coverage), present),
  }
  for k in TOP_K:
    out[f'precision_at_{k}'] = _row_mean(_precision_at_k(r, k), present)
  out['one_error'] = 1.0 - out['precision_at_1']
  # Per class: each column among its unmasked rows.
  by_class = sort_last_axis(keys.T)
  ap, auc = _average_precision_and_auc(_sorted_stats(by_class))
  out['average_precision_macro'] = _nanmean(ap)
  out['roc_auc_macro'] = _nanmean(auc)
  # Micro: all unmasked entries as one binary problem. Sorting the sorted
  # columns rather than the raw keys: XLA's sort (the non-CPU path) runs about
  # twice as fast on presorted runs.
  ap, auc = _average_precision_and_auc(
      _sorted_stats(sort_last_axis(by_class.reshape(1, -1))))
  out['average_precision_micro'] = ap[0]
  out['roc_auc_micro'] = auc[0]
  return out


def _nanmean(x):
  kept = ~jnp.isnan(x)
  n = jnp.sum(kept)
  return jnp.where(n > 0, jnp.sum(jnp.where(kept, x, 0)) / jnp.maximum(n, 1),
                   jnp.nan)


@jax.jit
def compute_arrays(labels, scores, threshold, mask) -> dict[str, jax.Array]:
  """Jittable core of `compute`: `[N, K]` arrays in, dict of scalars out."""
  counts = update(init(labels.shape[1]), labels, scores, threshold, mask)
  return {**finalize(counts), **ranking(labels, scores, mask)}


@jax.jit
def per_class_arrays(labels, scores, threshold, mask) -> dict[str, jax.Array]:
  """Jittable core of `per_class`."""
  c = update(init(labels.shape[1]), labels, scores, threshold, mask)
  f = lambda x: x.astype(jnp.float32)
  tp, fp, fn = f(c.tp), f(c.fp), f(c.fn)
  nan_div = lambda a, b: jnp.where(b > 0, a / jnp.maximum(b, 1), jnp.nan)
  ap, auc = _average_precision_and_auc(
      _sorted_stats(sort_last_axis(sort_keys(labels, scores, mask).T)))
  return {
      'precision': nan_div(tp, tp + fp),
      'recall': nan_div(tp, tp + fn),
      'f1': nan_div(2 * tp, 2 * tp + fp + fn),
      'average_precision': ap,
      'roc_auc': auc,
      'support': c.tp + c.fn,
      'count': c.tp + c.fp + c.fn + c.tn,
  }


# ----------------------------------------------------------------------------
# Host wrappers.


def check_inputs(labels, scores, threshold=0.5, mask=None):
  """Validates and converts inputs for the jitted cores.

  Only unmasked entries are checked: a masked entry may hold anything.

  Args:
    labels: 0/1 `[N, K]` or `[N]`.
    scores: `[N, K]` or `[N]`, finite, in [0, 1].
    threshold: scalar or `[K]`.
    mask: optional 0/1, shaped like `labels`.

  Returns:
    (labels int8, scores float32, threshold float32 `[K]`, mask bool), each
    `[N, K]` with masked entries zeroed.

  Raises:
    ValueError: naming the first bad value and its position.
  """
  labels, scores = np.asarray(labels), np.asarray(scores)
  if labels.shape != scores.shape:
    raise ValueError(f'labels {labels.shape} and scores {scores.shape} differ')
  if labels.ndim == 1:
    labels, scores = labels[:, None], scores[:, None]
    mask = None if mask is None else np.asarray(mask)[:, None]
  if labels.ndim != 2 or labels.shape[0] == 0 or labels.shape[1] == 0:
    raise ValueError(f'expected non-empty [N, K] arrays, got {labels.shape}')
  # Fast path without a mask: no np.where passes over [N, K] (this runs on
  # the host for every `compute` call).
  valid = None if mask is None else np.asarray(mask)
  if valid is not None:
    if valid.shape != labels.shape:
      raise ValueError(f'mask {valid.shape} and labels {labels.shape} differ')
    _first_bad('mask', valid, _not01(valid), 'not 0/1')
    valid = valid == 1
  _first_bad('labels', labels, _and_valid(_not01(labels), valid), 'not 0/1')
  scores32 = scores.astype(np.float32, copy=False)
  with np.errstate(invalid='ignore'):
    bad = ~((scores32 >= 0) & (scores32 <= 1))
  _first_bad('scores', scores, _and_valid(bad, valid),
             'not a finite number in [0, 1]')
  if valid is None:
    labels = labels.astype(np.int8, copy=False)
    valid = np.ones(labels.shape, bool)
  else:
    labels = np.where(valid, labels == 1, 0).astype(np.int8)
    scores32 = np.where(valid, scores32, np.float32(0))
  k = labels.shape[1]
  threshold = np.asarray(threshold, np.float32)
  if threshold.ndim > 1 or threshold.size not in (1, k):
    raise ValueError(f'threshold must be a scalar or [{k}], got '
                     f'{threshold.shape}')
  if not np.all(np.isfinite(threshold)):
    raise ValueError(f'threshold {threshold} is not finite')
  return (labels, scores32, np.broadcast_to(threshold, (k,)).astype(
      np.float32), valid)


def _not01(a):
  return np.zeros(a.shape, bool) if a.dtype == bool else (a != 0) & (a != 1)


def _and_valid(bad, valid):
  return bad if valid is None else bad & valid


def _first_bad(name, values, bad, why):
  if np.any(bad):
    pos = tuple(int(i) for i in np.argwhere(bad)[0])
    raise ValueError(f'{name}{list(pos)} = {values[pos].item()!r}: {why}')


def compute(labels, scores, threshold=0.5, mask=None) -> dict[str, float]:
  """All metrics (see `KEYS` and the module docstring) as Python floats.

  Args:
    labels: 0/1 `[N, K]` (or `[N]` for one binary output).
    scores: `[N, K]` in [0, 1].
    threshold: scalar or `[K]` per-class thresholds.
    mask: optional 0/1 `[N, K]`; 0 leaves an entry out.

  Returns:
    {metric name: value}; NaN where a metric is undefined (e.g. macro ROC AUC
    with no class holding both a positive and a negative).

  Raises:
    ValueError: on bad input, naming the value and its position.
  """
  out = compute_arrays(*check_inputs(labels, scores, threshold, mask))
  return {k: float(v) for k, v in jax.device_get(out).items()}


def per_class(labels, scores, threshold=0.5, mask=None
             ) -> dict[str, np.ndarray]:
  """Per-class `[K]` arrays for reports; NaN where a value is undefined.

  Keys: precision (NaN without predicted positives), recall (NaN without
  positives), f1 (NaN without either), average_precision and roc_auc (NaN
  unless the class has both a positive and a negative), support (positives)
  and count (unmasked entries), all over each column's unmasked rows.
  The NaN entries of average_precision / roc_auc are the classes left out of
  the macro averages.
  """
  out = per_class_arrays(*check_inputs(labels, scores, threshold, mask))
  return {k: np.asarray(v) for k, v in jax.device_get(out).items()}
