"""Calibrated probabilities: per-class Platt scaling fitted on validation, and class-wise ECE.

A head's score for class c becomes `sigmoid(a_c * logit(score) + b_c)`: Platt scaling (Platt
1999) of each class's logit, i.e. a temperature `1 / a_c` and a bias `b_c` per class
(`method='temperature'` fixes b_c = 0). The fit minimizes the binary cross-entropy on the
validation split's unmasked entries against Platt's smoothed targets, (N+ + 1) / (N+ + 2) for a
positive and 1 / (N- + 2) for a negative, so a class that validation separates perfectly still
gets a finite fit; Newton's method with step halving, vectorized over classes. `a_c` is kept >= A_MIN,
so the map is increasing for every class: each class's ranking, and with it its AP, ROC AUC
and F1-best threshold, is unchanged (up to scores that float32 can no longer tell apart).
Rankings across classes within a row (P@k, LRAP) can change, since each class has its own
map; the metrics of the uncalibrated scores are what metrics.json reports, calibration adds
the probabilities predict writes and the ECE before and after.

Class-wise ECE (Kull et al. 2019) with 15 equal-width bins: for each class, over its unmasked
rows, sum_b (n_b / n) |mean label in b - mean score in b|; averaged over the classes with an
unmasked row. `bins(...)` gives the per-class sufficient statistics `[C, 15, 3]` (count, sum of
scores, sum of labels), so ECE streams over class blocks and pools into a reliability diagram.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

METHODS = ('platt', 'temperature', 'none')
N_BINS = 15
A_MIN = 1e-2
STEPS = 30
TOL = 1e-5
_Z_MAX = 100.0  # logit(1.0) = inf: scores of exactly 0 or 1 map to -/+ this (already ties)


def logit(p):
  """log(p / (1 - p)) of scores in [0, 1], clipped to +/-_Z_MAX (float32 `[...]`)."""
  p = jnp.asarray(p, jnp.float32)
  return jnp.clip(jnp.log(p) - jnp.log1p(-p), -_Z_MAX, _Z_MAX)


def apply(scores, a, b):
  """Calibrated scores `[..., K]` from scores `[..., K]` and parameters `a, b` `[K]`."""
  return jax.nn.sigmoid(jnp.asarray(a, jnp.float32) * logit(scores) + jnp.asarray(b, jnp.float32))


def apply_numpy(scores: np.ndarray, a, b) -> np.ndarray:
  """`apply` on the host, float32 (predict's output)."""
  return np.asarray(jax.device_get(_apply_jit(scores, a, b)), np.float32)


_apply_jit = jax.jit(apply)


def identity(num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  return np.ones(num_classes, np.float32), np.zeros(num_classes, np.float32)


def _loss(z, t, w, a, b):
  u = a[:, None] * z + b[:, None]
  return jnp.sum(w * (jnp.logaddexp(0.0, u) - t * u), -1)


def _newton(z, t, w, a, b, fit_a: bool, fit_b: bool):
  """Newton steps on the weighted cross-entropy of sigmoid(a z + b) against targets t.

  z, t, w: `[C, N]`; a, b: `[C]`. Each step is halved until the loss does not rise (up to
  2^-7: an overconfident start has a flat Hessian, and a full step overshoots), until no
  parameter moves by more than TOL (at most STEPS steps). Damped by
  1e-6 per unit of weight, so a constant column (no information about a) stays finite.
  """
  damp = 1e-6 * jnp.maximum(jnp.sum(w, -1), 1.0)
  halvings = 2.0 ** -jnp.arange(8)

  def step(state):
    i, a, b, _ = state
    p = jax.nn.sigmoid(a[:, None] * z + b[:, None])
    r, h = w * (p - t), w * p * (1 - p)
    ga, gb = jnp.sum(r * z, -1), jnp.sum(r, -1)
    haa, hab, hbb = jnp.sum(h * z * z, -1) + damp, jnp.sum(h * z, -1), jnp.sum(h, -1) + damp
    if fit_a and fit_b:
      det = haa * hbb - hab * hab
      da, db = (hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det
    else:
      da, db = (ga / haa, jnp.zeros_like(b)) if fit_a else (jnp.zeros_like(a), gb / hbb)
    now = _loss(z, t, w, a, b)
    tried = jax.vmap(lambda f: _loss(z, t, w, a - f * da, b - f * db))(halvings)  # [8, C]
    ok = tried <= now[None]
    f = jnp.where(ok.any(0), halvings[jnp.argmax(ok, 0)], 0.0)  # the longest step that helps
    moved = jnp.max(jnp.abs(f * da) + jnp.abs(f * db))
    return i + 1, a - f * da, b - f * db, moved

  def going(state):
    i, _, _, moved = state
    return (i < STEPS) & (moved > TOL)

  _, a, b, _ = jax.lax.while_loop(going, step, (0, a, b, jnp.float32(jnp.inf)))
  return a, b


@functools.partial(jax.jit, static_argnames=('method',))
def fit(scores, labels, valid, method: str = 'platt'):
  """Per-class parameters `(a [C], b [C])` fitted on `[C, N]` scores, 0/1 labels, valid mask.

  A class without an unmasked entry keeps the identity (a = 1, b = 0).
  """
  z = logit(scores)
  w = valid.astype(jnp.float32)
  y = jnp.where(valid, labels, 0).astype(jnp.float32)
  n_pos = jnp.sum(y, -1, keepdims=True)
  n_neg = jnp.sum(w, -1, keepdims=True) - n_pos
  t = jnp.where(y > 0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
  c = scores.shape[0]
  a, b = _newton(z, t, w, jnp.ones(c), jnp.zeros(c), True, method == 'platt')
  low = a < A_MIN  # an increasing map only: hold a at A_MIN and fit b alone
  a = jnp.where(low, A_MIN, a)
  if method == 'platt':
    _, b_low = _newton(z, t, w, a, jnp.where(low, 0.0, b), False, True)
    b = jnp.where(low, b_low, b)
  empty = jnp.sum(w, -1) == 0
  bad = empty | ~jnp.isfinite(a) | ~jnp.isfinite(b)
  return jnp.where(bad, 1.0, a), jnp.where(bad, 0.0, b)


def bins(scores: np.ndarray, labels: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """`[C, N_BINS, 3]` float64 per class and bin: (entries, sum of scores, sum of labels).

  scores, labels, valid: `[C, N]` (host arrays; bincount keeps this one pass over memory).
  """
  c = scores.shape[0]
  which = np.clip(np.floor(scores * N_BINS).astype(np.int64), 0, N_BINS - 1)
  which += np.arange(c)[:, None] * N_BINS
  v = valid.ravel()
  idx = which.ravel()[v]
  count = lambda w=None: np.bincount(idx, weights=w, minlength=c * N_BINS)
  y = labels.ravel()[v].astype(np.float64)
  return np.stack([count(), count(scores.ravel()[v].astype(np.float64)), count(y)],
                  -1).reshape(c, N_BINS, 3)


def ece(stats: np.ndarray) -> float:
  """Class-wise ECE from `bins` statistics `[K, N_BINS, 3]` (NaN if no class has an entry)."""
  stats = np.asarray(stats, np.float64)
  n = stats[..., 0].sum(-1)
  gap = np.abs(stats[..., 2] - stats[..., 1]).sum(-1)
  kept = n > 0
  return float(np.mean(gap[kept] / n[kept])) if kept.any() else float('nan')


def reliability(stats: np.ndarray) -> dict[str, list]:
  """Pooled over classes: per bin the entries, mean score and fraction positive (None if
  empty), for the reliability diagram."""
  s = np.asarray(stats, np.float64).sum(0)
  n = s[:, 0]
  mean = lambda x: [float(v / c) if c > 0 else None for v, c in zip(x, n)]
  return {'count': [int(c) for c in n], 'score': mean(s[:, 1]), 'positive': mean(s[:, 2])}
