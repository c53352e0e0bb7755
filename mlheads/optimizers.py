"""Optimizers by name: `config.optimizer` -> an optax GradientTransformation.

OPTIMIZERS maps a name to `learning_rate -> optax.GradientTransformation` (adamw also takes
`weight_decay`, `config.weight_decay`); `make(config)` adds global-norm clipping when
`config.grad_clip` > 0.

ROW_RULES holds, for some optimizers, the same rule applied only to the rows of an embedding
table that a step touches. The train step then never builds the dense `[vocab, E]` gradient
nor passes over the whole table (notes/perf.md); dense AdamW over a 2^18 x 64 hashed n-gram
table costs ~250 ms a step on one CPU core, the row rule a few ms.
  rmsprop: exact (`LazyRMSprop`): a row whose gradient is zero does not move under RMSprop,
    and its second moment only decays, so the decay of the steps it missed can be applied
    when it is next touched.
  adamw: lazy (`LazyAdamW`, TF's LazyAdam): a skipped row stays as it is, moments included,
    where dense Adam would keep moving it on its momentum; a row touched every step is
    updated as by optax.adamw.
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
    # Decoupled weight decay `config.weight_decay` (0 by default, not optax's 1e-4).
    'adamw': lambda lr, weight_decay=0.0: optax.adamw(lr, weight_decay=weight_decay),
    'sgd': lambda lr: optax.sgd(lr, momentum=0.9),
}


def _take_rows(rows, table, values, *state):
  """The table's (`values` if gathered already) and each state array's `rows`; for rows None,
  the whole arrays. Padding rows (`>= V`) read a clipped row that `_put_rows` drops."""
  if rows is None:
    return (table, *state)
  take = lambda a: jnp.take(a, rows, axis=0, mode='clip')
  return (take(table) if values is None else values, *map(take, state))


def _put_rows(rows, arrays, updated):
  """`arrays` with the `updated` values at `rows` (padding rows dropped); for rows None, the
  updated whole arrays."""
  if rows is None:
    return tuple(updated)
  return tuple(a.at[rows].set(v, mode='drop', unique_indices=True)
               for a, v in zip(arrays, updated))


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
    w, nu, last = _take_rows(rows, table, values, state.nu, state.last)
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
    w, nu, last = _put_rows(rows, (table, state.nu, state.last),
                            (w, nu, jnp.full_like(last, step + 1)))
    return w, RowState(nu, last)


class AdamRows(NamedTuple):
  """A lazily updated table's Adam moments."""
  mu: jax.Array  # [V, E] first moment, as of the last step that touched the row
  nu: jax.Array  # [V, E] second moment, likewise


@dataclasses.dataclass(frozen=True)
class LazyAdamW:
  """optax.adamw on the rows of a table a step touches (TF's LazyAdam, decoupled decay).

  A touched row gets the dense rule's update with the bias correction of the global step
  count (`1 - b1**t`, `1 - b2**t`), its weight decay included; an untouched row, its moments
  and its decay wait until it is next touched. Dense Adam would instead move it on its
  momentum every step, so the two differ for rows a step skips (sparse features: most rows,
  most steps) and agree, to float32 rounding, on rows touched every step
  (tests/test_optimizers.py).
  """
  learning_rate: float
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  weight_decay: float = 0.0

  def init(self, table: jax.Array) -> AdamRows:
    return AdamRows(jnp.zeros_like(table), jnp.zeros_like(table))

  def update(self, table, state: AdamRows, rows, grads, step, values=None):
    """Returns (table, state) after one step; arguments as `LazyRMSprop.update`."""
    w, mu, nu = _take_rows(rows, table, values, state.mu, state.nu)
    # optax's order of operations (scale_by_adam, add_decayed_weights, scale_by_learning_rate).
    mu = (1 - self.b1) * grads + self.b1 * mu
    nu = (1 - self.b2) * jnp.square(grads) + self.b2 * nu
    count = (step + 1).astype(jnp.int32)
    mu_hat = mu / (1 - self.b1**count).astype(mu.dtype)
    nu_hat = nu / (1 - self.b2**count).astype(nu.dtype)
    u = mu_hat / (jnp.sqrt(nu_hat) + self.eps)
    if self.weight_decay:
      u = u + self.weight_decay * w
    w = w + (-self.learning_rate) * u
    w, mu, nu = _put_rows(rows, (table, state.mu, state.nu), (w, mu, nu))
    return w, AdamRows(mu, nu)


ROW_RULES = {
    'rmsprop': lambda lr: LazyRMSprop(lr, eps_in_sqrt=True),
    'rmsprop_keras2': lambda lr: LazyRMSprop(lr, eps_in_sqrt=False),
    'adamw': lambda lr, weight_decay=0.0: LazyAdamW(lr, weight_decay=weight_decay),
}


class Optimizer(NamedTuple):
  """An optax GradientTransformation (`init`, `update`) for every parameter, and `rows`: the
  same rule for tables updated row by row (None where no exact lazy form exists)."""
  init: Callable[..., Any]
  update: Callable[..., Any]
  rows: LazyRMSprop | LazyAdamW | None = None


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
  decay = {'weight_decay': config.weight_decay} if config.optimizer == 'adamw' else {}
  tx = get(config.optimizer)(config.learning_rate, **decay)
  rows = None
  if config.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip), tx)
  elif config.optimizer in ROW_RULES:
    rows = ROW_RULES[config.optimizer](config.learning_rate, **decay)
  return Optimizer(tx.init, tx.update, rows)
