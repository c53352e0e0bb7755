"""Optimizers by name: `config.optimizer` -> an optax GradientTransformation.

OPTIMIZERS maps a name to `learning_rate -> optax.GradientTransformation`;
`make(config)` adds global-norm clipping when `config.grad_clip` > 0.
"""

import optax

from mlheads import errors

OPTIMIZERS = {
    # Keras' RMSprop: rho 0.9, epsilon 1e-7 added outside the square root, no momentum.
    'rmsprop': lambda lr: optax.rmsprop(lr, decay=0.9, eps=1e-7, eps_in_sqrt=False),
    'adam': optax.adam,
    'adamw': optax.adamw,
    'sgd': lambda lr: optax.sgd(lr, momentum=0.9),
}


def get(name: str):
  """The optimizer factory `config.optimizer` names; the one place that name is checked (B14)."""
  if name not in OPTIMIZERS:
    raise errors.UsageError(f'unknown optimizer {name!r}; known: {sorted(OPTIMIZERS)}')
  return OPTIMIZERS[name]


def make(config) -> optax.GradientTransformation:
  """`config.optimizer` at `config.learning_rate`, clipped by `config.grad_clip` if set."""
  tx = get(config.optimizer)(config.learning_rate)
  if config.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip), tx)
  return tx
