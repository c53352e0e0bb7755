"""Row rules: a table updated row by row against the dense optax rule it stands for."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mlheads import configs
from mlheads import errors
from mlheads import optimizers

V, E, STEPS = 7, 3, 6


def _run_both(rule, dense_tx, rows_per_step):
  """`STEPS` steps of `rule` on the rows `rows_per_step[s]` and of `dense_tx` on the whole
  table with those rows' gradients (zero elsewhere); returns both tables."""
  rng = np.random.default_rng(0)
  table = jnp.asarray(rng.normal(size=(V, E)), jnp.float32)
  lazy, state = table, rule.init(table)
  dense, dense_state = table, dense_tx.init(table)
  for step, rows in enumerate(rows_per_step):
    g = jnp.asarray(rng.normal(size=(len(rows), E)), jnp.float32)
    padded = jnp.asarray(list(rows) + [V, V + 3], jnp.int32)  # entries >= V are padding
    lazy, state = rule.update(lazy, state, padded, jnp.concatenate([g, jnp.ones((2, E))]),
                              jnp.int32(step))
    full = jnp.zeros((V, E)).at[jnp.asarray(rows)].set(g)
    upd, dense_state = dense_tx.update(full, dense_state, dense)
    dense = optax.apply_updates(dense, upd)
  return np.asarray(table), np.asarray(lazy), np.asarray(dense)


def test_lazy_adamw_is_optax_adamw_on_rows_touched_every_step():
  # Rows 0-2 every step; row 5 at steps 0 and 4; the others never.
  rows = [[0, 1, 2, 5] if s in (0, 4) else [0, 1, 2] for s in range(STEPS)]
  rule = optimizers.ROW_RULES['adamw'](0.05, weight_decay=0.3)
  start, lazy, dense = _run_both(rule, optax.adamw(0.05, weight_decay=0.3), rows)
  np.testing.assert_allclose(lazy[:3], dense[:3], rtol=2e-5, atol=1e-6)
  # Never-touched rows neither move nor decay (dense AdamW decays them: not lazy there).
  np.testing.assert_array_equal(lazy[[3, 4, 6]], start[[3, 4, 6]])
  assert not np.allclose(dense[[3, 4, 6]], start[[3, 4, 6]])
  # Row 5 is lazy: between its touches dense Adam moved it on momentum, the row rule did not.
  assert not np.allclose(lazy[5], dense[5])


def test_lazy_rmsprop_is_optax_rmsprop_on_every_row():
  rows = [[0, 1, 2, 5] if s in (0, 4) else [0, 1, 2] for s in range(STEPS)]
  for name, eps_in_sqrt in (('rmsprop', True), ('rmsprop_keras2', False)):
    _, lazy, dense = _run_both(optimizers.ROW_RULES[name](0.05),
                               optax.rmsprop(0.05, decay=0.9, eps=1e-7, eps_in_sqrt=eps_in_sqrt),
                               rows)
    np.testing.assert_allclose(lazy, dense, rtol=1e-5, atol=1e-6)


def test_weight_decay_is_adamws_and_reaches_its_row_rule():
  c = configs.base_config()
  c.heads = {'y': configs.head('sigmoid', target='y')}
  c.optimizer, c.weight_decay = 'adamw', 0.25
  configs.validate(c)
  assert optimizers.make(c).rows == optimizers.LazyAdamW(c.learning_rate, weight_decay=0.25)
  c.optimizer = 'adam'
  with pytest.raises(errors.UsageError, match='weight_decay=0.25 needs --config.optimizer=adamw'):
    configs.validate(c)
  c.optimizer, c.weight_decay = 'adamw', -1.0
  with pytest.raises(errors.UsageError, match='weight_decay must be a number from 0 to 1, got -1.0'):
    configs.validate(c)
