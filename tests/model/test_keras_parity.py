"""Parity with the seed's model in Keras 3: same initial weights, same batches -> same training.

The seed's headline model is built in Keras 3 (JAX backend) and in mlheads; Keras'
initial weights are copied into mlheads' parameters; both train 20 steps on the
same batches (random word ids with left padding, 5 extra numbers, independent 0/1
labels for the two outputs). Every step's total weighted loss and each output's
loss must agree within 1e-5 relative, the final weights within 1e-5 absolute.

mlheads runs its real train step (`train.make_train_step`, what `train_and_evaluate`
jits), so every speed change to the layers, the optimizer or the step is held to
Keras' trajectory. CPU, float32 (a GPU's TF32 matmuls and Keras' cuDNN LSTM would
change the rounding, not the model; docs/heads.md lists what is exact).
"""

import os
import random
import tempfile

# Keras picks TensorFlow unless told; it writes keras.json into KERAS_HOME on import.
os.environ.setdefault('KERAS_BACKEND', 'jax')
os.environ.setdefault('KERAS_HOME', os.path.join(tempfile.gettempdir(), 'mlheads-keras-home'))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

from experiments import headline  # noqa: E402
from mlheads import optimizers  # noqa: E402
from mlheads import sharding  # noqa: E402
from mlheads import train  # noqa: E402
from mlheads.data import base  # noqa: E402
from mlheads.data import pipeline  # noqa: E402
from mlheads.state import train_state  # noqa: E402

keras = pytest.importorskip('keras')
if keras.backend.backend() != 'jax':
  pytest.skip(f'keras runs on {keras.backend.backend()}, not jax', allow_module_level=True)
# Keras' defaults, whatever a keras.json says: BCE clips to [epsilon, 1 - epsilon].
keras.config.set_floatx('float32')
keras.config.set_epsilon(1e-7)

STEPS, BATCH, EXTRA, LR = 20, 32, 5, 1e-3
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 1e-5
# (vocab, time, embed, lstm units, dense width): the seed's model, 5,200,610 parameters.
SEED_SIZES = (10_000, 100, 512, 32, 64)
OUTPUTS = {'main': 'main_output', 'aux': 'aux_output'}


# ----------------------------------------------------------------------------- mlheads side
def mlheads_headline(vocab, time, embed, units, width):
  """The headline experiment at these sizes: (model, heads, tx, parallel, dataset)."""
  c = headline.get_config()
  c.trunk.embed_dim, c.trunk.lstm_units, c.trunk.hidden = embed, units, (width,) * 3
  c.heads.aux.target = 'aux_label'  # the seed feeds the same labels twice; distinct ones test more
  c.learning_rate = LR
  ds = base.Dataset(
      name='headline_parity', splits={}, meta={},
      inputs={'tokens': base.Field((time,), 'int32', 'tokens', vocab_size=vocab),
              'extra': base.Field((EXTRA,), 'float32', 'features')},
      targets={'retweeted': base.Field((1,), 'float32', 'binary'),
               'aux_label': base.Field((1,), 'float32', 'binary')})
  spec, tx, _ = train.check_config(c, ds)
  model, heads = spec.build(ds)
  return model, heads, tx, sharding.DataParallel.over_all_devices(), ds


def keras_to_params(model) -> dict:
  """Keras headline weights -> mlheads' parameter tree (same layouts, no transposes)."""
  w = lambda name: [np.array(v.value) for v in model.get_layer(name).weights]  # a copy
  kernel, recurrent, bias = w('lstm')
  dense = lambda name: dict(zip(('kernel', 'bias'), w(name)))
  return {
      'trunk': {'embedding': {'embedding': w('embedding')[0]},
                'lstm': {'kernel': kernel, 'recurrent_kernel': recurrent, 'bias': bias},
                **{f'dense_{i}': dense(f'dense_{i}') for i in range(3)}},
      'main': dense('main_output'),
      'aux': dense('aux_output'),
  }


# ----------------------------------------------------------------------------- Keras side
def keras_headline(vocab, time, embed, units, width, seed=0):
  """The seed's model (as in ../shared/bench/keras_headline.py) at these sizes, layers named."""
  from keras import layers  # pylint: disable=g-import-not-at-top
  # set_random_seed also seeds Python's and NumPy's global generators: put them back after.
  saved = random.getstate(), np.random.get_state()
  try:
    keras.utils.set_random_seed(seed)
    main_input = keras.Input(shape=(time,), dtype='int32', name='main_input')
    x = layers.Embedding(output_dim=embed, input_dim=vocab, name='embedding')(main_input)
    # use_cudnn=False: on a GPU Keras would run cuDNN's LSTM; on the CPU it changes nothing.
    lstm_out = layers.LSTM(units, use_cudnn=False, name='lstm')(x)
    aux_output = layers.Dense(1, activation='sigmoid', name='aux_output')(lstm_out)
    aux_input = keras.Input(shape=(EXTRA,), name='aux_input')
    x = layers.concatenate([lstm_out, aux_input])
    for i in range(3):
      x = layers.Dense(width, activation='relu', name=f'dense_{i}')(x)
    main_output = layers.Dense(1, activation='sigmoid', name='main_output')(x)
  finally:
    random.setstate(saved[0])
    np.random.set_state(saved[1])
  model = keras.Model(inputs=[main_input, aux_input], outputs=[main_output, aux_output])
  model.compile(optimizer='rmsprop',
                loss={'main_output': 'binary_crossentropy', 'aux_output': 'binary_crossentropy'},
                loss_weights={'main_output': 1.0, 'aux_output': 0.2})
  return model


def random_batches(vocab, time, steps=STEPS, batch=BATCH, seed=0):
  """Word ids 1..vocab-1 with 0 to 3/4 of each row left-padded with 0; two label columns."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(steps):
    tokens = rng.integers(1, vocab, size=(batch, time), dtype=np.int32)
    pad = rng.integers(0, 3 * time // 4 + 1, size=batch)
    tokens[np.arange(time)[None, :] < pad[:, None]] = 0
    out.append((tokens, rng.random((batch, EXTRA), dtype=np.float32),
                (rng.random((batch, 1)) < 0.5).astype(np.float32),
                (rng.random((batch, 1)) < 0.5).astype(np.float32)))
  return out


@pytest.fixture(scope='module')
def seed_run():
  """Keras and mlheads trained from Keras' initial weights on the same batches."""
  with jax.default_device(jax.devices('cpu')[0]):
    model, heads, tx, parallel, ds = mlheads_headline(*SEED_SIZES)
    kmodel = keras_headline(*SEED_SIZES)
    init = keras_to_params(kmodel)
    ours = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                             pipeline.example_inputs(ds))['params'])
    assert jax.tree.map(np.shape, init) == jax.tree.map(np.shape, ours)
    state = train_state.create(model, tx, 0, pipeline.example_inputs(ds), parallel.replicated,
                               params=jax.tree.map(jnp.asarray, init))
    step = train.make_train_step(heads, parallel)
    k_losses, m_losses = [], []
    for tokens, extra, y_main, y_aux in random_batches(*SEED_SIZES[:2]):
      k_losses.append(kmodel.train_on_batch(
          {'main_input': tokens, 'aux_input': extra},
          {'main_output': y_main, 'aux_output': y_aux}, return_dict=True))
      targets = {'retweeted': y_main, 'aux_label': y_aux}
      batch = {'inputs': {'tokens': tokens, 'extra': extra}, 'targets': targets,
               'masks': {k: np.ones_like(v) for k, v in targets.items()},
               'valid': np.ones((BATCH,), np.float32)}
      # As train.py steps: over the rows the batch uses (`layers.host_rows`).
      state, scalars = step(state, parallel.shard(batch), state.host_rows(batch['inputs']))
      m_losses.append(scalars)
    own_init = model.init(jax.random.key(0), pipeline.example_inputs(ds))['params']
    return {'keras_losses': k_losses, 'mlheads_losses': jax.device_get(m_losses),
            'keras_init': init, 'mlheads_init': jax.device_get(own_init),
            'keras_final': keras_to_params(kmodel), 'mlheads_final': jax.device_get(state.params)}


# ----------------------------------------------------------------------------- tests
def test_headline_trains_like_keras(seed_run):
  """20 steps of the seed's full model: every loss within 1e-5, every final weight too."""
  k, m = seed_run['keras_losses'], seed_run['mlheads_losses']
  for ours, theirs in [('loss', 'loss')] + [(f'loss_{o}', f'{ko}_loss')
                                            for o, ko in OUTPUTS.items()]:
    np.testing.assert_allclose(np.array([float(s[ours]) for s in m], np.float64),
                               np.array([s[theirs] for s in k], np.float64),
                               rtol=LOSS_RTOL, atol=0, err_msg=f'{ours} per step')
  init = jax.tree_util.tree_flatten_with_path(seed_run['keras_init'])[0]
  final_k = jax.tree.leaves(seed_run['keras_final'])
  final_m = jax.tree.leaves(seed_run['mlheads_final'])
  assert jax.tree.structure(seed_run['keras_final']) == jax.tree.structure(
      seed_run['mlheads_final'])
  moved = 0
  for (path, w0), k_w, m_w in zip(init, final_k, final_m):
    np.testing.assert_allclose(m_w, k_w, rtol=0, atol=WEIGHT_ATOL,
                               err_msg=jax.tree_util.keystr(path))
    moved += int(np.abs(k_w - w0).max() > 10 * WEIGHT_ATOL)
  assert moved == len(init)  # every weight moved 10x the tolerance: the check bites


def test_rmsprop_update_matches_keras():
  """`rmsprop` against Keras' RMSprop on the same gradients (zeros, tiny, large); the
  Keras 1/2 rule (epsilon outside the square root) is measurably different."""
  rng = np.random.default_rng(0)
  shapes = [(40, 8), (300,)]
  params = [rng.normal(size=s).astype(np.float32) for s in shapes]
  grads = []
  for _ in range(STEPS):
    g = [(rng.normal(size=s) * 10.0 ** rng.uniform(-9, 1, size=s)).astype(np.float32)
         for s in shapes]
    for x in g:
      x[rng.random(x.shape) < 0.1] = 0.0
    grads.append(g)

  def run_mlheads(name):
    tx = optimizers.get(name)(LR)

    @jax.jit
    def apply(p, s, g):
      u, s = tx.update(g, s, p)
      return optax.apply_updates(p, u), s

    p = [jnp.asarray(x) for x in params]
    s = tx.init(p)
    for g in grads:
      p, s = apply(p, s, [jnp.asarray(x) for x in g])
    return p

  with jax.default_device(jax.devices('cpu')[0]):
    variables = [keras.Variable(p) for p in params]
    opt = keras.optimizers.RMSprop()  # what compile(optimizer='rmsprop') makes
    opt.build(variables)
    k_apply = jax.jit(opt.stateless_apply)
    k_vars, k_opt = [v.value for v in variables], [v.value for v in opt.variables]
    for g in grads:
      k_vars, k_opt = k_apply(k_opt, [jnp.asarray(x) for x in g], k_vars)
    ours, keras2 = run_mlheads('rmsprop'), run_mlheads('rmsprop_keras2')
  for m, k in zip(ours, k_vars):
    np.testing.assert_allclose(np.asarray(m), np.asarray(k), rtol=1e-6, atol=1e-7)
  assert max(float(jnp.abs(m - k).max()) for m, k in zip(keras2, k_vars)) > 1e-4


def test_initializers_follow_keras_defaults(seed_run):
  """mlheads' own initial weights follow Keras' rules (the values differ: other RNGs)."""
  units = SEED_SIZES[3]
  for params in (seed_run['keras_init'], seed_run['mlheads_init']):
    t = params['trunk']
    emb = t['embedding']['embedding']
    assert np.abs(emb).max() <= 0.05  # uniform(-0.05, 0.05)
    np.testing.assert_allclose(emb.std(), 0.05 / np.sqrt(3), rtol=0.03)
    kernels = {'lstm': t['lstm']['kernel'], 'main': params['main']['kernel'],
               'aux': params['aux']['kernel'],
               **{f'dense_{i}': t[f'dense_{i}']['kernel'] for i in range(3)}}
    for name, kern in kernels.items():
      limit = np.sqrt(6.0 / sum(kern.shape))  # glorot_uniform; 2-D fans are the shape
      assert np.abs(kern).max() <= limit, name
      if kern.size > 1000:
        np.testing.assert_allclose(kern.std(), limit / np.sqrt(3), rtol=0.05, err_msg=name)
    r = t['lstm']['recurrent_kernel']  # orthogonal [u, 4u]: orthonormal rows
    np.testing.assert_allclose(r @ r.T, np.eye(units), atol=1e-5)
    want = np.zeros(4 * units, np.float32)
    want[units:2 * units] = 1.0  # unit_forget_bias; gates i, f, c, o
    np.testing.assert_array_equal(t['lstm']['bias'], want)
    for name in ('main', 'aux'):
      np.testing.assert_array_equal(params[name]['bias'], 0.0)
    for i in range(3):
      np.testing.assert_array_equal(t[f'dense_{i}']['bias'], 0.0)
