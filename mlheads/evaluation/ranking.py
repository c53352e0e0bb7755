"""Exact ranking kernels (jittable): rows of a batch, and blocks of whole classes.

Two kinds of kernel, so that a split of any size is evaluated in bounded memory
(streaming.py drives them):

* `row_sums(...)`: sums over a batch's rows of the sample-wise ranking metrics
  (LRAP, coverage, ranking loss) and the @k metrics (P@k, R@k, nDCG@k and the
  propensity-scored PSP@k, PSnDCG@k of Jain, Prabhu and Varma, KDD 2016). No
  sort: each row's positives are compared with its K scores (`[B, P, K]`, P the
  most positives in a row), and the @k metrics read the k highest scores'
  tie groups (`lax.top_k`).
* `class_block(keys)`: AP and ROC AUC of whole classes, and each class's
  F1-best threshold, from one sort of packed keys per class.

The sorts pack (score bits, label bit) into one int32 key: non-negative
float32 bits order like the floats, and one int32 operand sorts several times
faster than (float, label) pairs, which is why scores must lie in [0, 1]. On
CPU they run in NumPy via `jax.pure_callback` (see `sort_last_axis`); tie
groups and counts are XLA scans. metrics.py documents the conventions (ties,
masks, undefined values) and checks the inputs.

Ties at the k-th score are split evenly: a position of the top k held by a tie
group of c entries with g positives gains g / c (the expected gain over a random
order of the tied labels, what scikit-learn's `ndcg_score` computes), so no
metric depends on the column order.
"""

import functools
from typing import NamedTuple

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

TOP_K = (1, 3, 5)
DEFAULT_THRESHOLD = 0.5  # a class without a positive to tune on keeps it


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




def _discounts(n: int) -> np.ndarray:
  """`[n + 1]`: the cumulative DCG discounts sum_{j<=i} 1 / log2(j + 1), from i = 0."""
  return np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, n + 2)))]).astype(np.float32)


def _column_counts(s, valid, y, inv_propensity, s_pos, top):
  """One pass over the K labels of a batch (a scan, vectorized over rows).

  Returns, per row: n_ge `[B, P]`, the unmasked labels scored >= each of the row's
  positives' scores `s_pos [B, P]`; and per top position j (scores `top [B, J]`): the size
  c, positives g and inverse-propensity sum w of the tie group holding it, `[B, J]` each.
  (XLA:CPU runs these compare-and-count loops several times faster as a scan over labels
  than as one `[B, P, K]` broadcast.)
  """
  t_pos, t_top = s_pos.T, top.T  # [P, B], [J, B]
  i32 = lambda x: x.astype(jnp.int32)

  def add(carry, column):
    n_ge, c, g, w = carry
    col, ok, pos, weight = column  # [B], [B], [B], []
    n_ge = n_ge + i32(ok & (col >= t_pos))
    eq = ok & (col == t_top)
    return (n_ge, c + i32(eq), g + i32(eq & pos),
            w + jnp.where(eq & pos, weight, 0.0)), None

  zeros = lambda t, dtype: jnp.zeros(t.shape, dtype)
  init = (zeros(t_pos, jnp.int32), zeros(t_top, jnp.int32), zeros(t_top, jnp.int32),
          zeros(t_top, jnp.float32))
  (n_ge, c, g, w), _ = lax.scan(add, init, (s.T, valid.T, y.T, inv_propensity))
  return n_ge.T, c.T, g.T, w.T


def _at_k(n_valid, n_pos, c, g, w, ks) -> dict[str, jax.Array]:
  """Per-row @k metrics `{name: [B]}` (P, R, nDCG, PSP, PSnDCG at each k in `ks`).

  Position j of a row's ranking (1-based, among its unmasked labels) is held by the tie
  group of the j-th highest score: c entries, g positives, their inverse propensities
  summing to w; it gains g / c (w / c propensity-scored). With kk = min(k, unmasked labels)
  and a row's P positives:
    P@k = sum_{j<=kk} gain_j / kk,   R@k = sum_{j<=kk} gain_j / P (0 if P == 0),
    nDCG@k = sum_{j<=kk} gain_j / log2(j + 1) / sum_{l<=min(k, P)} 1 / log2(l + 1),
    PSP@k = sum_{j<=kk} psgain_j / kk,
    PSnDCG@k = sum_{j<=kk} psgain_j / log2(j + 1) / sum_{l<=kk} 1 / log2(l + 1).
  """
  f = lambda x: x.astype(jnp.float32)
  j = jnp.arange(1, c.shape[-1] + 1)
  held = j[None, :] <= n_valid[:, None]
  gain = jnp.where(held, f(g) / f(jnp.maximum(c, 1)), 0.0)
  psgain = jnp.where(held, w / f(jnp.maximum(c, 1)), 0.0)
  disc = 1.0 / jnp.log2(j + 1.0)
  cum = jnp.asarray(_discounts(max(ks)))
  has_pos = n_pos > 0
  out = {}
  for k in ks:
    first = j <= k
    kk = jnp.minimum(k, n_valid)
    hits = jnp.sum(gain * first, -1)
    ideal = jnp.where(has_pos, cum[jnp.minimum(k, n_pos)], 1.0)
    out[f'precision_at_{k}'] = hits / f(jnp.maximum(kk, 1))
    out[f'recall_at_{k}'] = jnp.where(has_pos, hits / f(jnp.maximum(n_pos, 1)), 0.0)
    out[f'ndcg_at_{k}'] = jnp.where(has_pos, jnp.sum(gain * disc * first, -1) / ideal, 0.0)
    out[f'psp_at_{k}'] = jnp.sum(psgain * first, -1) / f(jnp.maximum(kk, 1))
    out[f'psndcg_at_{k}'] = jnp.sum(psgain * disc * first, -1) / jnp.maximum(cum[kk], 1e-30)
  return out


@functools.partial(jax.jit, static_argnames=('max_positives', 'ks'))
def row_sums(labels, scores, mask, inv_propensity, *, max_positives: int,
             ks=TOP_K) -> dict[str, jax.Array]:
  """Sums over the rows of a batch of every sample-wise ranking metric.

  Args:
    labels, scores, mask: `[B, K]` as `metrics.check_inputs` returns them.
    inv_propensity: `[K]` float32, 1 / propensity of each label.
    max_positives: P >= the most unmasked positives of any row (static).
    ks: the k of the @k metrics (static).

  Returns:
    {metric: float32 sum over the rows present (at least one unmasked label)}, with
    'rows': their number. LRAP, coverage and ranking loss count, per positive, the
    unmasked labels (and positives) scored at least as high; no sort.
  """
  valid, y = valid_and_positive(labels, mask)
  s = jnp.where(valid, scores, -1.0).astype(jnp.float32)  # masked: below every score
  f = lambda x: x.astype(jnp.float32)
  p = min(max_positives, s.shape[-1])
  is_pos, where = lax.top_k(f(y), p)  # a row's positives first
  is_pos = is_pos > 0
  s_pos = jnp.where(is_pos, jnp.take_along_axis(s, where, -1), 2.0)  # [B, P]
  top = lax.top_k(s, min(max(ks), s.shape[-1]))[0]  # [B, J] descending
  n_ge, c, g, w = _column_counts(s, valid, y, inv_propensity.astype(jnp.float32), s_pos, top)
  tp_ge = jnp.sum(is_pos[:, None, :] & (s_pos[:, None, :] >= s_pos[:, :, None]), -1,
                  dtype=jnp.int32)
  n_pos = jnp.sum(y, -1, dtype=jnp.int32)
  n_valid = jnp.sum(valid, -1, dtype=jnp.int32)
  present = n_valid > 0
  trivial = (n_pos == 0) | (n_pos == n_valid)
  lrap = jnp.sum(jnp.where(is_pos, f(tp_ge) / f(jnp.maximum(n_ge, 1)), 0), -1) / f(
      jnp.maximum(n_pos, 1))
  wrong_pairs = jnp.sum(jnp.where(is_pos, n_ge - tp_ge, 0), -1)
  per_row = {
      'label_ranking_average_precision': jnp.where(trivial, 1.0, lrap),
      'label_ranking_loss': jnp.where(
          trivial, 0.0, f(wrong_pairs) / f(jnp.maximum(n_pos * (n_valid - n_pos), 1))),
      'coverage_error': f(jnp.max(jnp.where(is_pos, n_ge, 0), -1)),
      **_at_k(n_valid, n_pos, c, g, w, ks),
  }
  out = {k: jnp.sum(jnp.where(present, v, 0.0)) for k, v in per_row.items()}
  out['rows'] = jnp.sum(present, dtype=jnp.int32)
  return out


def best_f1(k):
  """Best F1 threshold of each row of ascending sorted keys `k` (thresholds.py's rule).

  Args:
    k: `[C, M]` int32 keys from `sort_keys`, sorted along axis 1.

  Returns:
    (threshold `[C]` float32, best F1 `[C]` float32).
  """
  m = k.shape[-1]
  valid = k >= 0
  pos = ((k & 1) == 1).astype(jnp.int32)
  score_bits = k >> 1
  idx = lax.broadcasted_iota(jnp.int32, k.shape, 1)
  prev_bits = jnp.concatenate([jnp.full_like(score_bits[:, :1], -1), score_bits[:, :-1]], 1)
  is_start = valid & (score_bits != prev_bits)
  n_pos = jnp.sum(pos, 1, keepdims=True)
  # Predicting {score >= v} for the group starting at idx: everything from
  # idx on (masked keys sort first, below any score).
  tp = n_pos - (prefix_scan(jnp.add, pos) - pos)
  f1 = 2.0 * tp / jnp.maximum(m - idx + n_pos, 1)
  f1 = jnp.where(is_start & (n_pos > 0), f1, -1.0)
  # argmax takes the first maximum; flipping makes that the highest score.
  best = m - 1 - jnp.argmax(f1[:, ::-1], axis=1)
  best_f1_ = jnp.take_along_axis(f1, best[:, None], 1)[:, 0]
  v = jnp.take_along_axis(score_bits, best[:, None], 1)[:, 0]
  below = jnp.take_along_axis(score_bits, jnp.maximum(best - 1, 0)[:, None], 1)[:, 0]
  t = midpoint(v, jnp.where(best > 0, below, -1))
  return jnp.where(best_f1_ >= 0, t, DEFAULT_THRESHOLD), jnp.maximum(best_f1_, 0.0)


def midpoint(v_bits, below_bits):
  """The threshold that predicts {score >= v} and nothing lower: halfway between v and the
  next lower distinct score (`below_bits` < 0: none, then v / 2, or -0.5 when v is 0)."""
  as_float = lambda bits: lax.bitcast_convert_type(bits, jnp.float32)
  v, lower = as_float(v_bits), as_float(jnp.maximum(below_bits, 0))
  mid = lower + (v - lower) / 2
  # Adjacent floats: the midpoint may round up to v, which would drop v.
  mid = jnp.where(mid < v, mid, lower)
  return jnp.where(below_bits >= 0, mid, jnp.where(v > 0, v / 2, -0.5))


@jax.jit
def class_block(keys):
  """Whole classes: keys `[C, N]` (one row per class) -> (sorted keys, AP `[C]`, ROC AUC `[C]`,
  F1-best threshold `[C]`); AP and AUC are NaN unless a class has a positive and a negative."""
  k = sort_last_axis(keys)
  ap, auc = average_precision_and_auc(sorted_stats(k))
  t, _ = best_f1(k)
  return k, ap, auc, t
