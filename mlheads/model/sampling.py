"""Sampled negatives for the sigmoid head: the logits it trains on and its unbiased loss.

With `negatives = m > 0` (`config.heads.<output>.negatives`), a training step computes, per
example, only the logits of its positives (at most P, the target's sparse width or K) and of
m classes j_1..j_m drawn uniformly from all K, with replacement, and the loss

    L~ = [ sum_{l positive} bce(z_l, 1) + (K / m) sum_s [j_s known, negative] bce(z_{j_s}, 0) ]
         / (number of known labels),

an unbiased estimate of the full masked-mean BCE (the `bce` loss with its pos_weight and
label_smoothing): for j uniform on K, E[(K / m) sum_s f(j_s)] = sum_j f(j), here with f the
negative term of class j (0 for a positive or an unknown class); its gradient is unbiased
too. The output layer then costs B x (P + m) x D multiply-adds instead of B x K x D; the
optimizer still updates all K columns, and evaluation scores all K classes (so the
validation loss is the full one). docs/heads.md measures when it pays.
"""

import jax
import jax.numpy as jnp

from mlheads import errors
from mlheads.model import losses


def check_settings(name: str, settings, loss: str) -> None:
  """The sigmoid head's settings that sampled negatives need (B26), before data is read."""
  m = settings.get('negatives', 0)
  if m and loss != 'bce':
    raise errors.UsageError(f'head {name!r}: sampled negatives (negatives={m}) need the bce '
                            f'loss, not {loss!r}')
  pos_weight = dict(settings.get('loss_options') or {}).get('pos_weight', 1.0)
  if m and not isinstance(pos_weight, (int, float)):
    raise errors.UsageError(f'head {name!r}: sampled negatives (negatives={m}) take one '
                            f'pos_weight number, not {pos_weight!r}')


def sampled_logits(layer, h, labels, mask, negatives: int, max_positives: int,
                   added: jax.Array | None = None) -> dict:
  """The training output: {'logits', 'targets', 'weights'} `[B, P + m]`; 'index' `[B, P + m]`
  int32, the classes they are of (the row's positives, then its m draws); 'known' `[B]`.

  layer: a `layers.OutputDense` (called with the chosen classes; it draws the negatives from
  its 'dropout' RNG stream); h: `[B, D]`; labels, mask: `[B, K]` (mask None: all known);
  added: `[B, K]` added to the logits (the head's `add`), or None.
  """
  k = labels.shape[-1]
  known = jnp.ones(labels.shape, bool) if mask is None else mask > 0
  positive = known & (labels > 0.5)
  is_pos, pos = jax.lax.top_k(positive.astype(jnp.float32), min(max_positives or k, k))
  neg = jax.random.randint(layer.make_rng('dropout'), (h.shape[0], negatives), 0, k)
  index = jnp.concatenate([pos, neg], -1)
  is_neg = jnp.take_along_axis(known & ~positive, neg, -1)
  logits = layer(h, index)
  if added is not None:
    logits = logits + jnp.take_along_axis(added, index, -1)
  return {'logits': logits, 'index': index,
          'targets': jnp.concatenate([is_pos, jnp.zeros(neg.shape)], -1),
          'weights': jnp.concatenate([is_pos, is_neg * (k / negatives)], -1),
          'known': known.sum(-1)}


def sampled_loss(out: dict, **options) -> jax.Array:
  """The estimate L~ per example `[B]` from `sampled_logits`' output (bce options)."""
  per_entry = losses.bce_per_entry(out['logits'], out['targets'], **options)
  total = jnp.sum(jnp.where(out['weights'] > 0, out['weights'] * per_entry, 0.0), -1)
  return total / jnp.maximum(out['known'], 1)
