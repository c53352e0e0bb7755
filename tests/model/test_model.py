"""Models: the seed's headline model, trunk invariants, head weights and build_model."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mlheads import configs
from mlheads import errors
from mlheads import train
from mlheads.data import base
from mlheads.model import model as model_lib
from mlheads.model import trunks
from mlheads.state import train_state

# The trump_tweets fields (tweets.py), without preparing the data set.
TWEETS = base.Dataset(
    name='tweets', splits={}, meta={},
    inputs={'tokens': base.Field((100,), 'int32', 'tokens', vocab_size=10_000),
            'extra': base.Field((5,), 'float32', 'features')},
    targets={'retweeted': base.Field((1,), 'float32', 'binary'),
             'log_counts': base.Field((2,), 'float32', 'real')})
B = 2


def _shapes(model):
  inputs = {'tokens': jnp.zeros((B, 100), jnp.int32), 'extra': jnp.zeros((B, 5))}
  params = jax.eval_shape(model.init, jax.random.key(0), inputs)['params']
  outs = jax.eval_shape(model.apply, {'params': params}, inputs)
  return params, outs


def test_headline_model_has_the_seeds_5200610_parameters_and_outputs():
  from experiments import headline  # pylint: disable=g-import-not-at-top
  model, _ = model_lib.build_model(headline.get_config(), TWEETS)
  params, outs = _shapes(model)
  _, total = model_lib.parameter_overview(params)
  assert total == 5_200_610
  assert {k: v.shape for k, v in outs.items()} == {'main': (B, 1), 'aux': (B, 1)}
  # The aux output sits on the LSTM (32 -> 1), the main one on the last Dense(64).
  assert params['aux']['kernel'].shape == (32, 1)
  assert params['main']['kernel'].shape == (64, 1)


def test_headline_counts_builds_a_two_unit_regression():
  from experiments import headline_counts  # pylint: disable=g-import-not-at-top
  model, heads = model_lib.build_model(headline_counts.get_config(), TWEETS)
  params, outs = _shapes(model)
  assert outs['counts'].shape == (B, 2) and heads['counts'].loss == 'mse'
  assert model_lib.parameter_overview(params)[1] == 5_200_610 - 33 - 65 + 65 * 2


@pytest.mark.parametrize('kind,shape', [
    ('softmax', (B, 2)), ('sigmoid', (B, 1)), ('binary_softmax', (B, 1, 2)),
    ('per_class', (B, 1)), ('chain', (B, 1)), ('powerset', (B, 3))])
def test_every_head_fits_the_headline_trunk(kind, shape):
  from experiments import headline  # pylint: disable=g-import-not-at-top
  c = headline.get_config()
  c.heads.main.kind = kind
  train_y = np.array([[0.0], [1.0], [1.0], [0.0]], np.float32)
  model, heads = model_lib.build_model(c, TWEETS, {'retweeted': train_y})
  _, outs = _shapes(model)
  assert outs['main'].shape == shape
  assert heads['main'].scores(jnp.zeros(shape)).shape == (B, 1)


def test_text_trunk_ignores_padding():
  trunk = trunks.TextTrunk(vocab_size=20, embed_dim=5, lstm_units=3, hidden=(4,),
                          text_input='tokens')
  words = np.array([[3, 7, 9], [5, 2, 11]], np.int32)
  pad = np.zeros((2, 2), np.int32)
  variants = [words, np.concatenate([words, pad], 1), np.concatenate([pad, words], 1)]
  params = trunk.init(jax.random.key(0), {'tokens': words})
  outs = [trunk.apply(params, {'tokens': t}) for t in variants]
  for feats, inter in outs[1:]:
    np.testing.assert_allclose(feats, outs[0][0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(inter['lstm'], outs[0][1]['lstm'], rtol=1e-6, atol=1e-6)
  # Without masking, right padding does change the output: the check can fail.
  plain = trunks.TextTrunk(vocab_size=20, embed_dim=5, lstm_units=3, mask_padding=False,
                           text_input='tokens')
  a = plain.apply(params, {'tokens': variants[0]})[0]
  b = plain.apply(params, {'tokens': variants[1]})[0]
  assert not np.allclose(a, b)


def _two_heads(weight_b):
  c = configs.base_config()
  c.trunk = {'kind': 'mlp', 'inputs_keys': ('x',), 'hidden': (5,)}
  c.heads = {'a': configs.head('sigmoid', target='a'),
             'b': configs.head('chain', target='b', weight=weight_b)}
  ds = base.Dataset(name='toy', splits={}, meta={},
                    inputs={'x': base.Field((4,), 'float32', 'features')},
                    targets={'a': base.Field((1,), 'float32', 'binary'),
                             'b': base.Field((3,), 'float32', 'binary')})
  return c, ds


@pytest.mark.parametrize('weight_b', [0.0, 0.5])
def test_weight_zero_removes_an_outputs_gradient(weight_b):
  c, ds = _two_heads(weight_b)
  model, heads = model_lib.build_model(c, ds)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(8, 4)).astype(np.float32)
  batch = {'inputs': {'x': x},
           'targets': {'a': (x[:, :1] > 0).astype(np.float32),
                       'b': (x[:, 1:] > 0).astype(np.float32)},
           'masks': {'a': np.ones((8, 1), np.float32), 'b': np.ones((8, 3), np.float32)},
           'valid': np.ones((8,), np.float32)}
  params = model.init(jax.random.key(0), batch['inputs'])['params']
  state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optax.sgd(0.1),
                                  rng=jax.random.key(1))
  new, scalars = train.train_step(state, batch, heads=heads)
  moved = jax.tree.map(lambda p, q: bool((p != q).any()), params, new.params)
  assert all(jax.tree.leaves(moved['a'])) and all(jax.tree.leaves(moved['trunk']))
  assert set(jax.tree.leaves(moved['b'])) == {weight_b > 0}, moved['b']
  assert float(scalars['loss_b']) > 0
  np.testing.assert_allclose(float(scalars['loss']),
                             float(scalars['loss_a']) + weight_b * float(scalars['loss_b']),
                             rtol=1e-6)


def test_per_class_only_model_has_no_shared_trunk():
  c, ds = _two_heads(1.0)
  c.heads = {'b': configs.head('per_class', target='b')}
  model, _ = model_lib.build_model(c, ds)
  params = model.init(jax.random.key(0), {'x': jnp.zeros((2, 4))})['params']
  assert set(params) == {'b'}


def test_build_model_names_a_missing_target():
  c, ds = _two_heads(1.0)
  c.heads.b.target = 'genres'
  with pytest.raises(errors.UsageError, match="head 'b': target 'genres' is not in"):
    model_lib.build_model(c, ds)


def test_a_model_reads_its_trunks_inputs_and_its_heads_targets():
  from experiments import headline  # pylint: disable=g-import-not-at-top
  ds = base.Dataset(name='tweets', splits={}, meta={},
                    inputs={**TWEETS.inputs,
                            'chargrams': base.Field((8,), 'int32', 'ngrams', vocab_size=64)},
                    targets=TWEETS.targets)
  model, _ = model_lib.build_model(headline.get_config(), ds)
  assert model.reads() == ({'tokens', 'extra'}, {'retweeted'})
  # Only those fields reach a training batch; the model runs on them alone.
  only = ds.only(*model.reads())
  assert set(only.inputs) == {'tokens', 'extra'} and set(only.targets) == {'retweeted'}
  assert set(ds.inputs) == {'tokens', 'extra', 'chargrams'}  # the data set itself is kept
  c = headline.get_config()
  c.heads = {'main': configs.head('per_class', target='retweeted'),
             'counts': configs.head('regression', target='log_counts')}
  model, _ = model_lib.build_model(c, ds)
  assert model.reads() == ({'tokens', 'extra'}, {'retweeted', 'log_counts'})
