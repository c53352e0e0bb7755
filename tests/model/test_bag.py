"""The bag-of-n-grams trunk: masked means, the wide path into the head, row-updated tables."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import compiled
from mlheads import configs
from mlheads import errors
from mlheads.data import base
from mlheads.data import pipeline
from mlheads.model import layers
from mlheads.model import model as model_lib
from mlheads.model import trunks

B, K, D = 4, 3, 5
DS = base.Dataset(
    name='toy', splits={}, meta={},
    inputs={'tokens': base.Field((4,), 'int32', 'tokens', vocab_size=12),
            'bigrams': base.Field((3,), 'int32', 'hashed', vocab_size=9),
            'chargrams': base.Field((6,), 'int32', 'hashed', vocab_size=9),
            'features': base.Field((2,), 'float32', 'features')},
    targets={'y': base.Field((K,), 'float32', 'binary')})


def _arrays(seed=0):
  rng = np.random.default_rng(seed)
  a = {'tokens': rng.integers(1, 12, (B, 4)), 'bigrams': rng.integers(1, 9, (B, 3)),
       'chargrams': rng.integers(1, 9, (B, 6))}
  a = {k: v.astype(np.int32) for k, v in a.items()}
  a['tokens'][0, 2:] = 0  # padding ids, on the right
  a['chargrams'][1, 1:] = 0
  a['bigrams'][2] = 0  # a text with no bigram at all
  return {**a, 'features': rng.normal(size=(B, 2)).astype(np.float32),
          'y': (rng.random((B, K)) < 0.5).astype(np.float32)}


def _config(wide=True, add='wide', optimizer='adamw', hidden=(6,)):
  c = configs.base_config()
  c.trunk = {'kind': 'bag', 'embed_dim': D, 'hidden': hidden, 'dropout': 0.5, 'wide': wide,
             'side_inputs': ('features',)}
  c.heads = {'out': configs.head('sigmoid', target='y', add=add)}
  c.optimizer, c.learning_rate, c.batch_size = optimizer, 0.1, B
  return c


def _inputs(a):
  return {k: jnp.asarray(a[k]) for k in DS.inputs}


def test_features_are_masked_means_and_wide_logits_are_root_normalized_sums():
  model, _ = model_lib.build_model(_config(hidden=()), DS)
  a = _arrays()
  params = model.init(jax.random.key(0), _inputs(a))['params']
  # Random wide columns (they start at zero) and side weights, to see them at work.
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
  (feats, inter), _ = model.apply({'params': params}, _inputs(a),
                                  method=lambda m, x: (m.trunk(x), None))
  want_feats, want_wide = [], a['features'] @ np.asarray(params['trunk']['wide_side']['kernel'])
  for key in ('tokens', 'bigrams', 'chargrams'):
    table = np.asarray(params['trunk'][f'table_{key}'])
    assert table.shape == (DS.inputs[key].vocab_size, D + K)
    ids, n = a[key], np.maximum((a[key] != 0).sum(1, keepdims=True), 1)
    total = (table[ids] * (ids != 0)[..., None]).sum(1)
    want_feats.append(total[:, :D] / n)
    want_wide = want_wide + total[:, D:] / np.sqrt(n)
  want = np.concatenate(want_feats + [a['features']], -1)
  np.testing.assert_allclose(feats, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(inter['wide'], want_wide, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(feats[2, D:2 * D], 0)  # no bigrams: a zero mean, no NaN
  # The head adds the wide logits to its own Dense.
  logits = model.apply({'params': params}, _inputs(a))['out']
  dense = params['out']
  np.testing.assert_allclose(logits, want @ dense['kernel'] + dense['bias'] + want_wide,
                             rtol=1e-4, atol=1e-4)


def test_wide_columns_start_at_zero_and_dropout_acts_only_in_training():
  model, _ = model_lib.build_model(_config(), DS)
  a = _inputs(_arrays())
  params = model.init(jax.random.key(0), a)['params']
  for key in ('tokens', 'bigrams', 'chargrams'):
    table = params['trunk'][f'table_{key}']
    assert (table[:, D:] == 0).all() and (jnp.abs(table[:, :D]) <= 0.05).all()
  assert (params['trunk']['wide_side']['kernel'] == 0).all()
  run = lambda train, seed: model.apply({'params': params}, a, train=train,
                                        rngs={'dropout': jax.random.key(seed)})['out']
  np.testing.assert_array_equal(run(False, 0), run(False, 1))
  assert not np.allclose(run(True, 0), run(True, 1))


def test_no_numbers_no_wide_side_kernel():
  ds = base.Dataset(name='toy', splits={}, meta={}, targets=DS.targets,
                    inputs={**DS.inputs, 'features': base.Field((0,), 'float32', 'features')})
  model, _ = model_lib.build_model(_config(), ds)
  a = {**_inputs(_arrays()), 'features': jnp.zeros((B, 0))}
  params = jax.eval_shape(model.init, jax.random.key(0), a)['params']
  assert 'wide_side' not in params['trunk']
  assert jax.eval_shape(model.apply, {'params': params}, a)['out'].shape == (B, K)


def test_a_lookup_of_the_batchs_rows_gives_the_same_logits():
  model, _ = model_lib.build_model(_config(), DS)
  a = _inputs(_arrays())
  params = model.init(jax.random.key(0), a)['params']
  assert model.row_tables() == {k: ('trunk', f'table_{k}')
                                for k in ('tokens', 'bigrams', 'chargrams')}
  looked = {**a, **{k: layers.lookup_rows(params['trunk'][f'table_{k}'], a[k])
                    for k in ('tokens', 'bigrams', 'chargrams')}}
  np.testing.assert_allclose(model.apply({'params': params}, looked)['out'],
                             model.apply({'params': params}, a)['out'], rtol=1e-6)


def test_training_updates_only_the_rows_a_batch_touched():
  run = compiled(_config(), DS)
  state = run.init_state(0)
  assert {k for k, _ in state.row_tables} == {'tokens', 'bigrams', 'chargrams'}
  arrays = _arrays()
  before = jax.device_get(state.params['trunk'])
  batch = next(pipeline.eval_batches(DS, arrays, B))
  for _ in range(3):
    state, scalars = run.train_step(state, run.shard(batch))
  after = jax.device_get(state.params['trunk'])
  assert np.isfinite(scalars['loss'])
  for key in ('tokens', 'bigrams', 'chargrams'):
    used = np.unique(arrays[key][arrays[key] != 0])
    unused = np.setdiff1d(np.arange(DS.inputs[key].vocab_size), used)
    moved = ~np.isclose(after[f'table_{key}'], before[f'table_{key}']).all(1)
    assert moved[used].all() and not moved[unused].any(), key
    assert (after[f'table_{key}'][used, D:] != 0).any()  # the wide path learns


@pytest.mark.parametrize('config, match', [
    (_config(add=''), "exactly one head with add='wide'"),
    (_config(wide=False), r"add 'wide' is not an output of trunk BagTrunk; it gives \[\]"),
])
def test_wide_and_add_must_agree(config, match):
  with pytest.raises(errors.UsageError, match=match):
    model_lib.build_model(config, DS)


def test_add_on_a_head_with_its_own_output_layer_is_refused():
  c = _config()
  c.heads.out.kind = 'softmax'
  with pytest.raises(errors.UsageError, match='has its own output layer'):
    model_lib.resolve(c)


def test_bag_reads_hashed_ids():
  ds = base.Dataset(name='toy', splits={}, meta={}, targets=DS.targets,
                    inputs={**DS.inputs, 'bigrams': DS.inputs['tokens']})
  with pytest.raises(errors.UsageError, match="reads input 'bigrams' as hashed"):
    trunks.build(trunks.get('bag'), {'text_input': 'tokens'}, ds.inputs)
