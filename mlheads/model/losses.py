"""Per-example losses with label masks, on optax.losses where optax has them.

Every loss maps `logits [batch, K]`, `labels [batch, K]`, `mask [batch, K]`
(1 = label known, 0 = unknown) to a per-example loss `[batch]`. A masked entry
adds nothing to the loss or its gradient: `_masked` first replaces masked
labels by 0 (so a NaN or a 7 there cannot leak through a `0 * inf` in the
backward pass), and each loss drops masked terms with `jnp.where` (not a
multiplication) before reducing. LOSSES maps a name to such a function and the targets it reads;
`**options` come from `config.heads.<output>.loss_options`.

| name       | family        | options                               |
|------------|---------------|---------------------------------------|
| bce        | per label     | pos_weight, label_smoothing           |
| focal      | per label     | gamma, alpha                          |
| asl        | per label     | gamma_neg, gamma_pos, clip            |
| zlpr       | whole row     | (none)                                |
| softmax_ce | whole row     | (none)                                |
| mse, huber | regression    | huber: delta                          |
"""

import dataclasses
import functools
import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from mlheads import errors


def _masked(fn):
  """Normalises (labels, mask): mask -> bool, masked labels -> 0 (garbage-proof)."""

  @functools.wraps(fn)
  def wrapped(logits, labels, mask=None, **options):
    known = jnp.ones(logits.shape, bool) if mask is None else mask > 0
    labels = jnp.where(known, labels, 0.0).astype(logits.dtype)
    return fn(logits, labels, known, **options)

  return wrapped


def masked_mean(per_entry: jnp.ndarray, known: jnp.ndarray) -> jnp.ndarray:
  """Mean over the known entries of each row: `[batch, K] -> [batch]` (0 if none)."""
  known = known > 0
  total = jnp.where(known, per_entry, 0.0).sum(-1)
  return total / jnp.maximum(known.sum(-1), 1)


def bce_per_entry(logits, labels, *, pos_weight: float = 1.0,
                  label_smoothing: float = 0.0) -> jnp.ndarray:
  """Binary cross-entropy of each entry (`sigmoid_bce` before its mean; also the sampled
  sigmoid head's loss)."""
  if label_smoothing:
    labels = labels * (1.0 - label_smoothing) + 0.5 * label_smoothing
  if pos_weight == 1.0:
    return optax.losses.sigmoid_binary_cross_entropy(logits, labels)
  return -(pos_weight * labels * jax.nn.log_sigmoid(logits)
           + (1.0 - labels) * jax.nn.log_sigmoid(-logits))


@_masked
def sigmoid_bce(logits, labels, known, *, pos_weight: float = 1.0,
                label_smoothing: float = 0.0) -> jnp.ndarray:
  """Binary cross-entropy per label, averaged over known labels (Keras' reduction).

  pos_weight scales the positive term (> 1 favours recall on rare labels);
  label_smoothing moves targets towards 0.5 by that amount.
  """
  return masked_mean(bce_per_entry(logits, labels, pos_weight=pos_weight,
                                   label_smoothing=label_smoothing), known)


@_masked
def focal(logits, labels, known, *, gamma: float = 2.0, alpha: float | None = None):
  """Sigmoid focal loss (Lin et al. 2017), optax's log-space version, mean over known labels."""
  return masked_mean(optax.losses.sigmoid_focal_loss(logits, labels, alpha=alpha, gamma=gamma),
                     known)


def _focus(base, gamma: float):
  """`base ** gamma` for base in [0, 1]; gamma 0 skips the power (its gradient at 0 is NaN)."""
  if gamma == 0:
    return jnp.ones_like(base)
  return jnp.power(base, gamma)


@_masked
def asymmetric(logits, labels, known, *, gamma_neg: float = 4.0, gamma_pos: float = 1.0,
               clip: float = 0.05):
  """Asymmetric loss (ASL, Ridnik et al. 2021), summed over known labels.

  Positives: -(1 - p)^gamma_pos log p. Negatives use the shifted probability
  p_m = max(p - clip, 0): -p_m^gamma_neg log(1 - p_m), so easy negatives
  (p < clip) are discarded and the rest down-weighted. Defaults are the
  paper's repository's (gamma_neg 4, gamma_pos 1, clip 0.05). Summed over
  labels, as in the paper (the other losses average).
  """
  p = jax.nn.sigmoid(logits)
  log_p = jax.nn.log_sigmoid(logits)
  if clip > 0:
    p_m = jnp.maximum(p - clip, 0.0)
    log_not_p_m = jnp.log1p(-p_m)  # 1 - p_m >= clip > 0: finite.
  else:
    p_m, log_not_p_m = p, jax.nn.log_sigmoid(-logits)
  pos = -_focus(1.0 - p, gamma_pos) * log_p
  neg = -_focus(p_m, gamma_neg) * log_not_p_m
  per_entry = labels * pos + (1.0 - labels) * neg
  return jnp.where(known, per_entry, 0.0).sum(-1)


def _lse0(x, where):
  """log(1 + sum_{where} exp(x)) per row, stable for |x| up to float max."""
  zero = jnp.zeros(x.shape[:-1] + (1,), x.dtype)
  return jax.nn.logsumexp(jnp.concatenate([zero, jnp.where(where, x, 0.0)], -1), axis=-1,
                          where=jnp.concatenate([jnp.ones_like(zero, bool), where], -1))


@_masked
def zlpr(logits, labels, known):
  """ZLPR, multi-label categorical cross-entropy (Su 2022; Su et al. 2022).

  log(1 + sum_{neg} e^{s_j}) + log(1 + sum_{pos} e^{-s_i}): every positive
  score above every negative one, with 0 as the threshold. Needs no
  decision threshold other than 0 and no class-balance option.
  """
  pos = known & (labels > 0.5)
  neg = known & (labels <= 0.5)
  return _lse0(logits, neg) + _lse0(-logits, pos)


@_masked
def softmax_ce(logits, labels, known):
  """Softmax cross-entropy over the known classes with normalised multi-hot targets.

  The target spreads evenly over the row's positive labels (y / sum y). The
  softmax is taken over the known classes only, so an unknown class neither
  receives probability mass in the loss nor gradient. A row without a known
  positive has no target: loss 0 (the softmax head leaves such rows out of
  its mean).
  """
  total = labels.sum(-1, keepdims=True)
  target = labels / jnp.maximum(total, 1e-12)
  loss = optax.losses.softmax_cross_entropy(logits, target, where=known)
  return jnp.where(total[..., 0] > 0, loss, 0.0)


def squared_error(preds, targets, mask=None) -> jnp.ndarray:
  """Mean squared error over the known outputs of each row."""
  known = jnp.ones(preds.shape, bool) if mask is None else mask > 0
  targets = jnp.where(known, targets, 0.0)
  return masked_mean(optax.losses.squared_error(preds, targets), known)


def huber(preds, targets, mask=None, *, delta: float = 1.0) -> jnp.ndarray:
  known = jnp.ones(preds.shape, bool) if mask is None else mask > 0
  targets = jnp.where(known, targets, 0.0)
  return masked_mean(optax.losses.huber_loss(preds, targets, delta=delta), known)


@dataclasses.dataclass(frozen=True)
class Loss:
  """A registered loss: its function and the targets it reads.

  Attributes:
    fn: `(logits, labels, mask, **options) -> [batch]`.
    targets: 'binary' (labels as classes) or 'real' (regression).
  """
  fn: Callable[..., jnp.ndarray]
  targets: str

  @property
  def options(self) -> tuple[str, ...]:
    """The keyword options the loss accepts (`config.heads.<output>.loss_options`)."""
    fn = inspect.unwrap(self.fn)
    return tuple(p.name for p in inspect.signature(fn).parameters.values()
                 if p.kind == p.KEYWORD_ONLY)


LOSSES = {
    'bce': Loss(sigmoid_bce, 'binary'),
    'focal': Loss(focal, 'binary'),
    'asl': Loss(asymmetric, 'binary'),
    'zlpr': Loss(zlpr, 'binary'),
    'softmax_ce': Loss(softmax_ce, 'binary'),
    'mse': Loss(squared_error, 'real'),
    'huber': Loss(huber, 'real'),
}


def get(name: str) -> Loss:
  """The loss `config.heads.<output>.loss` names; the one place that name is checked (B14)."""
  if name not in LOSSES:
    raise errors.UsageError(f'unknown loss {name!r}; known: {sorted(LOSSES)}')
  return LOSSES[name]
