"""Exact ranking kernels (jittable) for the row pass of streaming.py, which evaluates a
split of any size in bounded memory:

* `row_sums(...)`: sums over a batch's rows of the sample-wise ranking metrics
  (LRAP, coverage, ranking loss) and the @k metrics (P@k, R@k, nDCG@k and the
  propensity-scored PSP@k, PSnDCG@k of Jain, Prabhu and Varma, KDD 2016). No
  sort: each row's positives are compared with its K scores (P x K counts, P
  the most positives in a row, in one scan over the labels), and the @k
  metrics read the k highest scores' tie groups (`lax.top_k`).
* `sort_keys(...)`: the packed int32 keys (score bits, label bit) that the class
  pass (streaming.py) sorts per class: non-negative float32 bits order like the
  floats, and one int32 operand sorts several times faster than (float, label)
  pairs, which is why scores must lie in [0, 1].

metrics.py documents the conventions (ties, masks, undefined values) and
checks the inputs.

Ties at the k-th score are split evenly: a position of the top k held by a tie
group of c entries with g positives gains g / c (the expected gain over a random
order of the tied labels, what scikit-learn's `ndcg_score` computes), so no
metric depends on the column order.
"""

import functools

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

TOP_K = (1, 3, 5)
DEFAULT_THRESHOLD = 0.5  # a class without a positive to tune on keeps it
AT_K = ('precision', 'recall', 'ndcg', 'psp', 'psndcg')  # the metrics `row_sums` reports @k


def is_ranking(key: str) -> bool:
  """Whether metric `key` ranks each row's labels against each other (meaningless for one
  label per row, so not reported then)."""
  return key in ('label_ranking_average_precision', 'coverage_error', 'label_ranking_loss',
                 'one_error') or key.startswith(tuple(f'{m}_at_' for m in AT_K))


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
