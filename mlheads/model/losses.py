"""Per-example losses with label masks, on optax.losses where optax has them.

Every loss maps `logits [batch, K]`, `labels [batch, K]`, `mask [batch, K]`
(1 = label known, 0 = unknown) to a per-example loss `[batch]`. A masked entry
adds nothing to the loss or its gradient: `_masked` first replaces masked
labels by 0 (so a NaN or a 7 there cannot leak through a `0 * inf` in the
backward pass), and each loss drops masked terms with `jnp.where` (not a
multiplication) before reducing. LOSSES maps a name to such a function and the targets it reads;
`**options` come from `config.heads.<output>.loss_options`: every loss declares its options
(keyword-only arguments, their defaults, and `Loss.ranges`), and `settings.loss_config()` puts all
of them into each head's config, so `--config.heads.<output>.loss_options.gamma=1.0` works
from the command line whichever loss the experiment chose.

| name       | reads                        | options                               |
|------------|------------------------------|---------------------------------------|
| bce        | per label                    | pos_weight, label_smoothing           |
| focal      | per label                    | gamma, alpha                          |
| asl        | per label                    | gamma_neg, gamma_pos, clip            |
| zlpr       | any row of scores            | (none)                                |
| softmax_ce | a row as one softmax         | (none)                                |
| mse, huber | regression                   | huber: delta                          |
"""

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
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


def bce_per_entry(logits, labels, *, pos_weight: float | tuple = 1.0,
                  label_smoothing: float = 0.0) -> jnp.ndarray:
  """Binary cross-entropy of each entry (`sigmoid_bce` before its mean; also the sampled
  sigmoid head's loss, whose `labels` are then those of the sampled classes). pos_weight: one
  number or one per class `[K]`."""
  if isinstance(pos_weight, str):
    raise ValueError(f'pos_weight {pos_weight!r} must be resolved on the train labels first')
  if label_smoothing:
    labels = labels * (1.0 - label_smoothing) + 0.5 * label_smoothing
  if isinstance(pos_weight, (int, float)) and pos_weight == 1.0:
    return optax.losses.sigmoid_binary_cross_entropy(logits, labels)
  w = jnp.asarray(pos_weight, logits.dtype)
  return -(w * labels * jax.nn.log_sigmoid(logits)
           + (1.0 - labels) * jax.nn.log_sigmoid(-logits))


@_masked
def sigmoid_bce(logits, labels, known, *, pos_weight: float | str | tuple = 1.0,
                label_smoothing: float = 0.0) -> jnp.ndarray:
  """Binary cross-entropy per label, averaged over known labels (Keras' reduction).

  pos_weight scales the positive term (> 1 favours recall on rare labels): one number, one
  per class (`[K]`), or 'balanced' in the config, which the head turns into the train
  split's negatives / positives per class before training (`balanced_pos_weight`);
  label_smoothing moves targets towards 0.5 by that amount.
  """
  return masked_mean(bce_per_entry(logits, labels, pos_weight=pos_weight,
                                   label_smoothing=label_smoothing), known)


def balanced_pos_weight(labels, mask=None) -> tuple[float, ...]:
  """Per class, the train split's negatives / positives among known labels (`pos_weight=
  'balanced'`): each class's positives then weigh as much as its negatives in the loss. A class
  without a positive or without a negative gets 1 (nothing to balance)."""
  y = np.asarray(labels) > 0.5
  known = np.ones(y.shape, bool) if mask is None else np.asarray(mask) > 0
  pos = (y & known).sum(0)
  neg = (~y & known).sum(0)
  w = np.where((pos > 0) & (neg > 0), neg / np.maximum(pos, 1), 1.0)
  return tuple(float(v) for v in w)


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


class PosWeight:
  """`pos_weight`'s values: a number in (0, 1e6], one per class, or 'balanced'."""

  RANGE = errors.Range(0, 1e6, low_open=True)

  def check(self, flag: str, value) -> None:
    if value == 'balanced':
      return
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not values or not all(self.RANGE.ok(v) for v in values):
      raise errors.UsageError(f"{flag} must be 'balanced', {self.RANGE.describe()} or one "
                              f'such number per class, got {value!r}')


@dataclasses.dataclass(frozen=True)
class Loss:
  """A registered loss: its function, the targets it reads, and what its logits mean.

  Attributes:
    fn: `(logits, labels, mask, **options) -> [batch]`.
    targets: 'binary' (labels as classes) or 'real' (regression).
    reads: 'per_label' (each logit a label's own log-odds: sigmoid-style heads), 'softmax'
      (a row of logits as one softmax), 'any' (any row of scores) or 'real'. A head lists the
      ones it fits (`Head.fits_losses`).
    ranges: option name -> its allowed values (`.check(flag, value)`, B26).
  """
  fn: Callable[..., jnp.ndarray]
  targets: str
  reads: str
  ranges: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def options(self) -> tuple[str, ...]:
    """The keyword options the loss accepts (`config.heads.<output>.loss_options`)."""
    return tuple(self.defaults)

  @property
  def defaults(self) -> dict[str, Any]:
    """Option name -> default, from the function's keyword-only arguments."""
    fn = inspect.unwrap(self.fn)
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.kind == p.KEYWORD_ONLY}


_NONNEG = errors.Range(0, 100)

LOSSES = {
    'bce': Loss(sigmoid_bce, 'binary', 'per_label', {
        'pos_weight': PosWeight(), 'label_smoothing': errors.Range(0, 1)}),
    'focal': Loss(focal, 'binary', 'per_label', {
        'gamma': _NONNEG, 'alpha': errors.Range(0, 1)}),
    'asl': Loss(asymmetric, 'binary', 'per_label', {
        'gamma_neg': _NONNEG, 'gamma_pos': _NONNEG, 'clip': errors.Range(0, 1)}),
    'zlpr': Loss(zlpr, 'binary', 'any'),
    'softmax_ce': Loss(softmax_ce, 'binary', 'softmax'),
    'mse': Loss(squared_error, 'real', 'real'),
    'huber': Loss(huber, 'real', 'real', {'delta': errors.Range(0, 1e6, low_open=True)}),
}


def get(name: str) -> Loss:
  """The loss `config.heads.<output>.loss` names; the one place that name is checked (B14)."""
  if name not in LOSSES:
    raise errors.UsageError(f'unknown loss {name!r}; known: {sorted(LOSSES)}')
  return LOSSES[name]


