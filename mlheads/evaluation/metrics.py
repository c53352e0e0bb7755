"""Exact multi-label metrics: jittable, mask-aware, equal to scikit-learn.

Inputs: `labels` 0/1 `[N, K]`, `scores` in [0, 1] `[N, K]` (a `[N]` array is
one binary output, `[N, 1]`), optional `mask` 0/1 `[N, K]`. A label is
predicted where `score > threshold`; `threshold` is a scalar or a `[K]` vector.

Conventions (each checked against scikit-learn in tests/evaluation/test_metrics.py):

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
* `label_accuracy` = 1 - `hamming_loss`: the fraction of unmasked (row, label)
  entries predicted right. `subset_accuracy` is the fraction of rows with every
  unmasked label right. For one label (K = 1) both are the plain accuracy.
* One label (K = 1): the metrics that rank a row's labels against each other
  (`RANKING_KEYS`: LRAP, coverage, ranking loss, one-error, precision@k) say
  nothing with a single label per row and are not reported (`keys(1)`).

Scores are compared in float32; they must lie in [0, 1] because the ranking
metrics (ranking.py) sort packed int32 keys of (score bits, label bit).

Threshold metrics accumulate in constant memory with `ThresholdCounts`
(`init`, `update`, `finalize`); ranking metrics are exact over full arrays.
Counts are int32: up to 2**31 entries per class.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mlheads.evaluation import ranking

TOP_K = ranking.TOP_K

KEYS = (
    'label_accuracy', 'hamming_loss', 'subset_accuracy',
    'precision_micro', 'recall_micro', 'f1_micro',
    'precision_macro', 'recall_macro', 'f1_macro',
    'precision_samples', 'recall_samples', 'f1_samples',
    'average_precision_macro', 'average_precision_micro',
    'roc_auc_macro', 'roc_auc_micro',
    'label_ranking_average_precision', 'coverage_error', 'label_ranking_loss',
    'one_error', 'precision_at_1', 'precision_at_3',
)


def is_ranking(key: str) -> bool:
  """Whether metric `key` ranks each row's labels against each other (meaningless for one
  label per row, so not reported then)."""
  return key in ('label_ranking_average_precision', 'coverage_error', 'label_ranking_loss',
                 'one_error') or key.startswith(('precision_at_', 'recall_at_', 'ndcg_at_'))


RANKING_KEYS = tuple(k for k in KEYS if is_ranking(k))


def keys(num_classes: int) -> tuple[str, ...]:
  """The metric names `compute` reports for `num_classes` labels (`KEYS`, less
  `RANKING_KEYS` for one label)."""
  return tuple(k for k in KEYS if num_classes != 1 or not is_ranking(k))


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
  valid, y = ranking.valid_and_positive(labels, mask)
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
      'label_accuracy': 1.0 - hamming,
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


@jax.jit
def compute_arrays(labels, scores, threshold, mask) -> dict[str, jax.Array]:
  """Jittable core of `compute`: `[N, K]` arrays in, dict of scalars out."""
  counts = update(init(labels.shape[1]), labels, scores, threshold, mask)
  return {**finalize(counts), **ranking.compute(labels, scores, mask)}


@jax.jit
def per_class_arrays(labels, scores, threshold, mask) -> dict[str, jax.Array]:
  """Jittable core of `per_class`."""
  c = update(init(labels.shape[1]), labels, scores, threshold, mask)
  f = lambda x: x.astype(jnp.float32)
  tp, fp, fn = f(c.tp), f(c.fp), f(c.fn)
  nan_div = lambda a, b: jnp.where(b > 0, a / jnp.maximum(b, 1), jnp.nan)
  ap, auc = ranking.average_precision_and_auc(ranking.sorted_stats(
      ranking.sort_last_axis(ranking.sort_keys(labels, scores, mask).T)))
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


def sigmoid(logits) -> np.ndarray:
  """Scores from logits (`--from_logits`): the sigmoid in float64, then float32, as every
  metric compares scores. float32 holds no value between 1 - 2**-24 and 1, so logits above
  about 16.6 tie at 1.0 (below about -87 at 0): rank such outputs by scores, not logits."""
  from scipy import special  # pylint: disable=g-import-not-at-top
  return special.expit(np.asarray(logits, np.float64)).astype(np.float32)


def compute(labels, scores, threshold=0.5, mask=None) -> dict[str, float]:
  """All metrics (see `KEYS` and the module docstring) as Python floats.

  Args:
    labels: 0/1 `[N, K]` (or `[N]` for one binary output).
    scores: `[N, K]` in [0, 1].
    threshold: scalar or `[K]` per-class thresholds.
    mask: optional 0/1 `[N, K]`; 0 leaves an entry out.

  Returns:
    {metric name: value} for `keys(K)`; NaN where a metric is undefined (e.g.
    macro ROC AUC with no class holding both a positive and a negative).

  Raises:
    ValueError: on bad input, naming the value and its position.
  """
  args = check_inputs(labels, scores, threshold, mask)
  one_label = args[0].shape[1] == 1
  return {k: float(v) for k, v in jax.device_get(compute_arrays(*args)).items()
          if not (one_label and is_ranking(k))}


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
