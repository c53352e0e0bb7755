"""The transformer trunk: shapes, padding changes nothing, order matters, it learns order."""

import jax
import numpy as np
import pytest

from mlheads import configs
from mlheads import errors
from mlheads import train
from mlheads.data import base
from mlheads.data import pipeline
from mlheads.model import trunks

from conftest import compiled

TINY = dict(embed_dim=8, num_layers=2, num_heads=2, mlp_dim=16, hidden=(6,), vocab_size=20,
            max_len=8, text_input='tokens')


def _trunk(**over):
  return trunks.TransformerTrunk(**{**TINY, **over})


def _init(trunk, tokens, **inputs):
  return trunk.init(jax.random.key(0), {'tokens': tokens, **inputs})


WORDS = np.array([[3, 7, 9, 4], [5, 2, 11, 0]], np.int32)  # the second row: 3 real tokens.


def test_shapes_and_side_inputs():
  trunk = _trunk(side_inputs=('extra',))
  extra = np.ones((2, 5), np.float32)
  params = _init(trunk, WORDS, extra=extra)
  feats, inter = trunk.apply(params, {'tokens': WORDS, 'extra': extra})
  assert feats.shape == (2, 6) and inter['encoder'].shape == (2, 8)
  assert params['params']['dense_0']['kernel'].shape == (8 + 5, 6)
  assert params['params']['encoder']['position']['embedding'].shape == (8, 8)
  assert set(params['params']['encoder']) == {'embedding', 'position', 'block_0', 'block_1',
                                              'norm'}


def test_padding_on_either_side_changes_nothing():
  trunk = _trunk()
  params = _init(trunk, WORDS)
  pad = np.zeros((2, 2), np.int32)
  base_out = trunk.apply(params, {'tokens': WORDS})
  for tokens in (np.concatenate([WORDS, pad], 1), np.concatenate([pad, WORDS], 1),
                 np.concatenate([pad[:, :1], WORDS, pad[:, :1]], 1)):
    out = trunk.apply(params, {'tokens': tokens})
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(base_out)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # The second row's padding is inside its own row: moving it to the front changes nothing.
  moved = np.array([[3, 7, 9, 4], [0, 5, 2, 11]], np.int32)
  np.testing.assert_allclose(trunk.apply(params, {'tokens': moved})[0], base_out[0],
                             rtol=1e-5, atol=1e-6)


def test_order_of_the_real_tokens_matters():
  trunk = _trunk()
  params = _init(trunk, WORDS)
  swapped = WORDS[:, [1, 0, 2, 3]]
  a, b = trunk.apply(params, {'tokens': WORDS})[0], trunk.apply(params, {'tokens': swapped})[0]
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-4
  # Without the position table the encoder is a set function: the same swap changes nothing,
  # so the check above measures positions, not noise.
  no_pos = jax.tree_util.tree_map(lambda x: x, params)
  table = no_pos['params']['encoder']['position']['embedding']
  no_pos['params']['encoder']['position']['embedding'] = np.zeros_like(table)
  np.testing.assert_allclose(trunk.apply(no_pos, {'tokens': WORDS})[0],
                             trunk.apply(no_pos, {'tokens': swapped})[0], rtol=1e-5, atol=1e-6)


def test_padding_only_rows_are_finite_and_dropout_only_in_training():
  trunk = _trunk(dropout=0.5)
  params = _init(trunk, WORDS)
  empty = np.zeros((2, 4), np.int32)
  feats, inter = trunk.apply(params, {'tokens': empty})
  assert np.isfinite(feats).all() and np.all(np.asarray(inter['encoder']) == 0)
  eval_a = trunk.apply(params, {'tokens': WORDS})[0]
  np.testing.assert_array_equal(eval_a, trunk.apply(params, {'tokens': WORDS})[0])
  train_a = trunk.apply(params, {'tokens': WORDS}, train=True,
                        rngs={'dropout': jax.random.key(1)})[0]
  assert np.abs(np.asarray(train_a) - np.asarray(eval_a)).max() > 1e-4


def test_bad_settings_are_one_line_before_any_data_is_read():
  with pytest.raises(errors.UsageError, match='embed_dim=6 must be a multiple of '
                     '--config.trunk.num_heads=4'):
    _trunk(embed_dim=6, num_heads=4)
  c = configs.base_config()
  c.trunk = configs.trunk('transformer', dropout=1.0)
  c.heads = {'y': configs.head('sigmoid', target='y')}
  with pytest.raises(errors.UsageError, match='--config.trunk.dropout'):
    train.check_config(c)


def _order_task(n=64, length=6, seed=0):
  """y = token 3 comes before token 4; both appear once, among fillers 5-9, left-padded.

  A bag of tokens cannot learn this (each row holds the same multiset both ways)."""
  rng = np.random.default_rng(seed)
  tokens = np.zeros((n, length), np.int32)
  y = np.zeros((n, 1), np.float32)
  for i in range(n):
    real = rng.integers(3, length + 1)
    row = rng.integers(5, 10, size=real)
    a, b = rng.choice(real, 2, replace=False)
    row[a], row[b] = 3, 4
    tokens[i, length - real:] = row
    y[i, 0] = float(a < b)
  ds = base.Dataset(name='order', splits={}, meta={},
                    inputs={'tokens': base.Field((length,), 'int32', 'tokens', vocab_size=10)},
                    targets={'y': base.Field((1,), 'float32', 'binary')})
  return ds, {'tokens': tokens, 'y': y}


def test_learns_which_token_comes_first():
  ds, arrays = _order_task()
  c = configs.base_config()
  c.trunk = configs.trunk('transformer', embed_dim=16, num_layers=1, num_heads=2, mlp_dim=32,
                          hidden=(16,), dropout=0.0)
  c.heads = {'y': configs.head('sigmoid', target='y')}
  c.optimizer, c.learning_rate, c.batch_size = 'adam', 0.01, 64
  run = compiled(c, ds)
  state = run.init_state(0)
  batch = run.shard(next(pipeline.eval_batches(ds, arrays, 64)))
  losses = []
  for _ in range(150):
    state, scalars = run.train_step(state, batch)
    losses.append(float(scalars['loss']))
  assert losses[-1] < 0.3 * losses[0], losses[::15]
