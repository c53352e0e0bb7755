"""Optimizers by name: `config.optimizer` -> an optax GradientTransformation.

OPTIMIZERS maps a name to `learning_rate -> optax.GradientTransformation`;
`make(config)` adds global-norm clipping when `config.grad_clip` > 0.

ROW_RULES holds, for the optimizers that allow it exactly, the same rule applied only to
the rows of an embedding table that a step touches (`LazyRMSprop`): a row whose gradient
is zero does not move under RMSprop, and its second moment only decays, so the decay of the
steps it missed can be applied when it is next touched. The train step then never builds
the dense `[vocab, E]` gradient nor passes over the whole table (notes/perf.md).
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mlheads import errors

OPTIMIZERS = {
    # Keras 3's RMSprop (keras/src/optimizers/rmsprop.py, compile(optimizer='rmsprop')):
    # v <- 0.9 v + 0.1 g^2 from v = 0, w <- w - lr g / sqrt(v + 1e-7); no momentum, not
    # centered, no bias correction. tests/model/test_keras_parity.py runs Keras on it.
    'rmsprop': lambda lr: optax.rmsprop(lr, decay=0.9, eps=1e-7, eps_in_sqrt=True),
    # Standalone Keras 1/2's RMSprop (the seed's era): epsilon outside the square root,
    # w <- w - lr g / (sqrt(v) + 1e-7).
    'rmsprop_keras2': lambda lr: optax.rmsprop(lr, decay=0.9, eps=1e-7, eps_in_sqrt=False),
    'adam': optax.adam,
    'adamw': optax.adamw,
    'sgd': lambda lr: optax.sgd(lr, momentum=0.9),
}


class RowState(NamedTuple):
  """A lazily updated table's optimizer state."""
  nu: jax.Array  # [V, E] second moment, as of the step count `last` of its row
  last: jax.Array  # [V] int32: the optimizer step count when the row's nu was last updated


@dataclasses.dataclass(frozen=True)
class LazyRMSprop:
  """optax.rmsprop (no momentum, not centered) on the rows of a table a step touches.

  For a row last updated at step count `a` and touched again by the step that makes the
  count `s + 1`, the dense rule's `s - a` zero-gradient steps in between left the row as it
  was and multiplied its `nu` by `decay` each; so `nu <- decay**(s + 1 - a) nu + (1 - decay)
  g^2`, then the usual update. Equal to the dense rule to float32 rounding (decay**k is one
  power instead of k products; tests/test_optimizers.py).
  """
  learning_rate: float
  decay: float = 0.9
  eps: float = 1e-7
  eps_in_sqrt: bool = True

  def init(self, table: jax.Array) -> RowState:
    return RowState(jnp.zeros_like(table), jnp.zeros(table.shape[:1], jnp.int32))

  def update(self, table, state: RowState, rows, grads, step, values=None):
    """Returns (table, state) after one step.

    Args:
      table: `[V, E]` parameters.
      state: the table's RowState.
      rows: `[S]` int32 table rows that `grads` belong to, each at most once; entries
        `>= V` are padding and change nothing. None: `grads` is the whole table's `[V, E]`.
      grads: `[S, E]` (or `[V, E]`) gradients of those rows.
      step: the optimizer step count before this step (`TrainState.step`).
      values: `table[rows]` if the caller has gathered them already.
    """
    if rows is None:
      w, nu, last = table, state.nu, state.last
    else:
      take = lambda a: jnp.take(a, rows, axis=0, mode='clip')  # padding rows: dropped below
      w = take(table) if values is None else values
      nu, last = take(state.nu), take(state.last)
    missed = (step + 1 - last).astype(grads.dtype)[:, None]
    # decay**1 exactly when no step was missed: the dense rule's arithmetic, bit for bit.
    decay = jnp.where(missed == 1, self.decay, jnp.power(self.decay, missed))
    nu = (1 - self.decay) * jnp.square(grads) + decay * nu
    # optax's order of operations, so that a row touched every step updates bit for bit alike.
    if self.eps_in_sqrt:
      scaled = jax.lax.rsqrt(nu + self.eps) * grads
    else:
      scaled = (1 / (jnp.sqrt(nu) + self.eps)) * grads
    w = w + (-self.learning_rate) * scaled
    if rows is None:
      return w, RowState(nu, jnp.full_like(last, step + 1))
    put = lambda a, v: a.at[rows].set(v, mode='drop', unique_indices=True)
    return put(table, w), RowState(put(state.nu, nu), put(state.last, step + 1))


ROW_RULES = {
    'rmsprop': lambda lr: LazyRMSprop(lr, eps_in_sqrt=True),
    'rmsprop_keras2': lambda lr: LazyRMSprop(lr, eps_in_sqrt=False),
}


class Optimizer(NamedTuple):
  """An optax GradientTransformation (`init`, `update`) for every parameter, and `rows`: the
  same rule for tables updated row by row (None where no exact lazy form exists)."""
  init: Callable[..., Any]
  update: Callable[..., Any]
  rows: LazyRMSprop | None = None


def get(name: str):
  """The optimizer factory `config.optimizer` names; the one place that name is checked (B14)."""
  if name not in OPTIMIZERS:
    raise errors.UsageError(f'unknown optimizer {name!r}; known: {sorted(OPTIMIZERS)}')
  return OPTIMIZERS[name]


def make(config) -> Optimizer:
  """`config.optimizer` at `config.learning_rate`, clipped by `config.grad_clip` if set.

  Global-norm clipping needs every gradient at once, so a clipped optimizer offers no row
  rule: its tables are updated densely.
  """
  tx = get(config.optimizer)(config.learning_rate)
  rows = None
  if config.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip), tx)
  elif config.optimizer in ROW_RULES:
    rows = ROW_RULES[config.optimizer](config.learning_rate)
  return Optimizer(tx.init, tx.update, rows)
