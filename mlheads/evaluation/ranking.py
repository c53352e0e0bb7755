"""Exact ranking metrics: one sort of packed int32 keys per axis.

Scores are compared in float32. The sorts pack (score bits, label bit) into
one int32 key: non-negative float32 bits order like the floats, and one int32
operand sorts several times faster than (float, label) pairs, which is why
scores must lie in [0, 1]. On CPU the three sorts (rows, columns, all
entries) run in NumPy via `jax.pure_callback` (see `sort_last_axis`); tie
groups and counts are XLA scans. metrics.py documents the conventions (ties,
masks, undefined values) and checks the inputs.
"""

from typing import NamedTuple

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

TOP_K = (1, 3)


def valid_and_positive(labels, mask):
  """0/1 `[N, K]` bools; garbage under the mask becomes (invalid, negative)."""
  valid = jnp.ones(labels.shape, bool) if mask is None else mask > 0
  return valid, valid & (labels == 1)


def sort_keys(labels, scores, mask=None):
  """Packed int32 keys `[N, K]`: ascending key = ascending score, then label.

  A masked entry gets key -2: it sorts first, and its label bit reads 0.
  Within a tie group negatives sort before positives, which the AUC counts
  below rely on.
  """
  valid, y = valid_and_positive(labels, mask)
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


def sorted_stats(k) -> _Sorted:
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


def average_precision_and_auc(st: _Sorted):
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
def compute(labels, scores, mask=None) -> dict[str, jax.Array]:
  """Exact ranking metrics over full `[N, K]` arrays (jittable scalars)."""
  keys = sort_keys(labels, scores, mask)
  f = lambda x: x.astype(jnp.float32)
  # Sample-wise, ranking each row among its unmasked labels.
  r = sorted_stats(sort_last_axis(keys))
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
  ap, auc = average_precision_and_auc(sorted_stats(by_class))
  out['average_precision_macro'] = nanmean(ap)
  out['roc_auc_macro'] = nanmean(auc)
  # Micro: all unmasked entries as one binary problem. Sorting the sorted
  # columns rather than the raw keys: XLA's sort (the non-CPU path) runs about
  # twice as fast on presorted runs.
  ap, auc = average_precision_and_auc(
      sorted_stats(sort_last_axis(by_class.reshape(1, -1))))
  out['average_precision_micro'] = ap[0]
  out['roc_auc_micro'] = auc[0]
  return out


def nanmean(x):
  kept = ~jnp.isnan(x)
  n = jnp.sum(kept)
  return jnp.where(n > 0, jnp.sum(jnp.where(kept, x, 0)) / jnp.maximum(n, 1),
                   jnp.nan)
