"""Decision thresholds that maximize F1, exact over all candidate thresholds.

A label is predicted where `score > threshold`. Between two consecutive
distinct scores every threshold predicts the same set, so the candidates are
one threshold per distinct score v, predicting exactly {score >= v}: the
midpoint between v and the next lower distinct score (below the lowest score:
v / 2, or -0.5 when v is 0). Predicting nothing (F1 = 0) is the fallback.
All candidates are scored at once from one sort, with no loop over rows.
Among equally good candidates the highest threshold wins (fewest positives
predicted). A class with no (unmasked) positive gets 0.5, as does the global
threshold when there is no positive at all.
"""

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from mlheads.evaluation import metrics
from mlheads.evaluation import ranking

DEFAULT = 0.5


def _best(k):
  """Best F1 threshold along the last axis of ascending sorted keys `k`.

  Args:
    k: `[C, M]` int32 keys from `ranking.sort_keys`, sorted along axis 1.

  Returns:
    (threshold `[C]` float32, best F1 `[C]` float32).
  """
  m = k.shape[-1]
  valid = k >= 0
  pos = ((k & 1) == 1).astype(jnp.int32)
  score_bits = k >> 1
  idx = lax.broadcasted_iota(jnp.int32, k.shape, 1)
  prev_bits = jnp.concatenate([jnp.full_like(score_bits[:, :1], -1),
                               score_bits[:, :-1]], 1)
  is_start = valid & (score_bits != prev_bits)
  n_pos = jnp.sum(pos, 1, keepdims=True)
  # Predicting {score >= v} for the group starting at idx: everything from
  # idx on (masked keys sort first, below any score).
  tp = n_pos - (ranking.prefix_scan(jnp.add, pos) - pos)
  f1 = 2.0 * tp / jnp.maximum(m - idx + n_pos, 1)
  f1 = jnp.where(is_start & (n_pos > 0), f1, -1.0)
  # argmax takes the first maximum; flipping makes that the highest score.
  best = m - 1 - jnp.argmax(f1[:, ::-1], axis=1)
  best_f1 = jnp.take_along_axis(f1, best[:, None], 1)[:, 0]
  as_float = lambda bits: lax.bitcast_convert_type(bits, jnp.float32)
  v = as_float(jnp.take_along_axis(score_bits, best[:, None], 1)[:, 0])
  below = jnp.take_along_axis(score_bits, jnp.maximum(best - 1, 0)[:, None],
                              1)[:, 0]
  has_lower = (best > 0) & (below >= 0)
  lower = as_float(jnp.maximum(below, 0))
  mid = lower + (v - lower) / 2
  # Adjacent floats: the midpoint may round up to v, which would drop v.
  mid = jnp.where(mid < v, mid, lower)
  t = jnp.where(has_lower, mid, jnp.where(v > 0, v / 2, -0.5))
  found = best_f1 >= 0
  return jnp.where(found, t, DEFAULT), jnp.maximum(best_f1, 0.0)


@jax.jit
def tune_arrays(labels, scores, mask=None):
  """Jittable core of `tune`.

  Args:
    labels: 0/1 `[N, K]`.
    scores: `[N, K]` in [0, 1].
    mask: optional 0/1 `[N, K]`.

  Returns:
    (per-class thresholds `[K]`, their F1 `[K]`, global threshold `[]`,
    its micro F1 `[]`).
  """
  by_class = ranking.sort_last_axis(
      ranking.sort_keys(labels, scores, mask).T)
  per_class, per_class_f1 = _best(by_class)
  flat = ranking.sort_last_axis(by_class.reshape(1, -1))
  t, f1 = _best(flat)
  return per_class, per_class_f1, t[0], f1[0]


def tune(labels, scores, mask=None) -> tuple[np.ndarray, float]:
  """Thresholds maximizing F1 on (labels, scores).

  Args:
    labels: 0/1 `[N, K]`.
    scores: `[N, K]` in [0, 1].
    mask: optional 0/1 `[N, K]`; masked entries are left out.

  Returns:
    (per-class thresholds `[K]` float32, each maximizing that class's F1;
    one global threshold maximizing micro F1).

  Raises:
    ValueError: on bad input (see `metrics.check_inputs`).
  """
  y, s, _, valid = metrics.check_inputs(labels, scores, DEFAULT, mask)
  per_class, _, global_t, _ = jax.device_get(tune_arrays(y, s, valid))
  return np.asarray(per_class), float(global_t)
