"""Per-example losses with label masks, on optax.losses where optax has them.

Every loss maps `logits [batch, K]`, `labels [batch, K]`, `mask [batch, K]`
(1 = label known, 0 = unknown) to a per-example loss `[batch]`. A masked entry
adds nothing to the loss or its gradient: masked terms are replaced by zero
with `jnp.where` before reducing, so even an infinite masked term stays out.
LOSSES maps a name to such a function; `**options` come from the head config.
"""

import jax.numpy as jnp
import optax

from mlheads import errors


def masked_mean(per_entry: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Mean over the known entries of each row: `[batch, K] -> [batch]` (0 if none)."""
  known = mask > 0
  total = jnp.where(known, per_entry, 0.0).sum(-1)
  return total / jnp.maximum(known.sum(-1), 1)


def sigmoid_bce(logits, labels, mask, *, pos_weight: float = 1.0,
                label_smoothing: float = 0.0) -> jnp.ndarray:
  """Binary cross-entropy per label, averaged over known labels (Keras' reduction).

  pos_weight scales the positive term (> 1 favours recall on rare labels);
  label_smoothing moves targets towards 0.5 by that amount.
  """
  if label_smoothing:
    labels = labels * (1.0 - label_smoothing) + 0.5 * label_smoothing
  if pos_weight == 1.0:
    per_entry = optax.losses.sigmoid_binary_cross_entropy(logits, labels)
  else:
    log_p = jax_log_sigmoid(logits)
    log_not_p = jax_log_sigmoid(-logits)
    per_entry = -(pos_weight * labels * log_p + (1.0 - labels) * log_not_p)
  return masked_mean(per_entry, mask)


def jax_log_sigmoid(x):
  # -softplus(-x), finite for |x| up to float max.
  return -jnp.logaddexp(0.0, -x)


def squared_error(preds, targets, mask) -> jnp.ndarray:
  """Mean squared error over the known outputs of each row."""
  return masked_mean(optax.losses.squared_error(preds, targets), mask)


def huber(preds, targets, mask, *, delta: float = 1.0) -> jnp.ndarray:
  return masked_mean(optax.losses.huber_loss(preds, targets, delta=delta), mask)


LOSSES = {
    'bce': sigmoid_bce,
    'mse': squared_error,
    'huber': huber,
}


def get(name: str):
  if name not in LOSSES:
    raise errors.UsageError(f'unknown loss {name!r}; known: {sorted(LOSSES)}')
  return LOSSES[name]
