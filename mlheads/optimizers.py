"""Optimizers by name: `config.optimizer` -> an optax GradientTransformation.

OPTIMIZERS maps a name to `learning_rate -> optax.GradientTransformation`;
`make(config)` adds global-norm clipping when `config.grad_clip` > 0.
"""

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
