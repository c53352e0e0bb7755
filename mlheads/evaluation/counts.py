"""Threshold metrics in constant memory: per-class confusion counts and sample-wise sums.

`init(K)`, then `update(counts, labels, scores, threshold, mask)` per batch (jittable), then
`finalize(counts)`: hamming loss, subset accuracy, precision / recall / F1 micro, macro and
per sample, as metrics.py defines them (= scikit-learn's with zero_division=0). Counts are
int32: up to 2**31 entries per class.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mlheads.evaluation import ranking

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


def per_class(counts: ThresholdCounts) -> dict[str, np.ndarray]:
  """Per-class precision, recall, F1 `[K]` (NaN where undefined), support and count."""
  c = jax.device_get(counts)
  tp, fp, fn = (np.asarray(x, np.float64) for x in (c.tp, c.fp, c.fn))
  with np.errstate(invalid='ignore', divide='ignore'):
    rate = lambda a, b: np.where(b > 0, a / np.maximum(b, 1), np.nan).astype(np.float32)
    return {'precision': rate(tp, tp + fp), 'recall': rate(tp, tp + fn),
            'f1': rate(2 * tp, 2 * tp + fp + fn), 'support': np.asarray(c.tp + c.fn),
            'count': np.asarray(c.tp + c.fp + c.fn + c.tn)}
