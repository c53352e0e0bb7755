"""The jitted training core: the step learns, every parameter moves, weights matter."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlheads import baselines
from mlheads import configs
from mlheads import errors
from mlheads import train
from mlheads.data import base
from mlheads.data import pipeline
from mlheads.evaluation import metrics
from mlheads.model import layers

from conftest import compiled


def _toy(n=64, seed=0):
  """Two inputs, two outputs: y_a = x0 > 0, y_b = x1 + tokens-free noise > 0."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 4)).astype(np.float32)
  arrays = {'x': x, 'a': (x[:, :1] > 0).astype(np.float32),
            'b': (x[:, 1:3] > 0).astype(np.float32)}
  ds = base.Dataset(name='toy', splits={}, meta={},
                    inputs={'x': base.Field((4,), 'float32', 'features')},
                    targets={'a': base.Field((1,), 'float32', 'binary'),
                             'b': base.Field((2,), 'float32', 'binary')})
  return ds, arrays


def _config(**heads_weights):
  c = configs.base_config()
  c.trunk = {'kind': 'mlp', 'inputs_keys': ('x',), 'hidden': (8,)}
  c.heads = {name: configs.head('sigmoid', target=name, weight=w)
             for name, w in (heads_weights or {'a': 1.0, 'b': 0.5}).items()}
  c.optimizer = 'adam'
  c.learning_rate = 0.05
  c.batch_size = 16
  return c


def _batch(ds, arrays, n=16):
  return next(pipeline.eval_batches(ds, {k: v[:n] for k, v in arrays.items()}, n))


def test_train_step_lowers_the_loss_on_a_learnable_problem():
  ds, arrays = _toy()
  trainer = compiled(_config(), ds)
  state = trainer.init_state(0)
  batch = trainer.shard(_batch(ds, arrays, 64))
  losses = []
  for _ in range(60):
    state, scalars = trainer.train_step(state, batch)
    losses.append(float(scalars['loss']))
  assert losses[-1] < 0.3 * losses[0]
  assert set(scalars) == {'loss', 'grad_norm', 'loss_a', 'loss_b'}
  np.testing.assert_allclose(float(scalars['loss']),
                             float(scalars['loss_a']) + 0.5 * float(scalars['loss_b']), rtol=1e-5)


def test_every_parameter_changes_after_one_step(tiny_config):
  from mlheads.data import tweets  # pylint: disable=g-import-not-at-top
  fields = tweets.builder(tiny_config.data).fields()
  ds = base.Dataset(name='t', splits={}, meta={},
                    inputs={k: fields[k] for k in ('tokens', 'extra')},
                    targets={'retweeted': fields['retweeted']})
  rng = np.random.default_rng(0)
  arrays = {'tokens': rng.integers(1, 60, size=(8, 12)).astype(np.int32),
            'extra': rng.normal(size=(8, 5)).astype(np.float32),
            'retweeted': (rng.random((8, 1)) > 0.5).astype(np.float32)}
  trainer = compiled(tiny_config, ds)
  before = jax.device_get(trainer.init_state(0).params)
  state, _ = trainer.train_step(trainer.init_state(0), trainer.shard(_batch(ds, arrays, 8)))
  after = jax.device_get(state.params)
  unchanged = [jax.tree_util.keystr(p) for p, a, b in zip(
      jax.tree_util.tree_leaves_with_path(before), jax.tree.leaves(before),
      jax.tree.leaves(after)) if np.array_equal(a, b)]
  # Embedding rows of ids absent from the batch get no gradient: they may stay.
  assert unchanged == [] or all('embedding' in u for u in unchanged), unchanged
  emb_b, emb_a = before['trunk']['embedding']['embedding'], after['trunk']['embedding']['embedding']
  used = np.unique(arrays['tokens'])
  assert not np.any(np.all(emb_b[used] == emb_a[used], axis=1))


@pytest.mark.parametrize('vocab,shape,high', [(10_000, (32, 100), 10_000), (60, (4, 12), 20),
                                              (50, (8, 12), 50), (2**18, (64, 40), 300)])
def test_host_rows_are_the_steps_unique_rows_in_a_few_sizes(vocab, shape, high):
  rng = np.random.default_rng(0)
  most = min(np.prod(shape), vocab)
  counts = set()
  table = jnp.arange(vocab, dtype=jnp.float32)[:, None]
  for _ in range(40):
    tokens = rng.integers(0, rng.integers(1, high + 1), size=shape, dtype=np.int32)
    given = layers.host_rows(tokens, vocab)
    if most == vocab:  # the step reads the whole table
      assert given is None
      continue
    unique, ids = given
    assert len(np.unique(tokens)) <= len(unique) <= most
    counts.add(len(unique))
    # What jnp.unique finds in the step at the most rows, cut to the host's size.
    lookup = layers.lookup_rows(table, jnp.asarray(tokens), given)
    step_unique, step_ids = jnp.unique(tokens, size=most, fill_value=vocab, return_inverse=True)
    np.testing.assert_array_equal(unique, step_unique[:len(unique)])
    np.testing.assert_array_equal(ids, np.asarray(step_ids).reshape(shape))
    np.testing.assert_array_equal(np.asarray(lookup.rows)[np.asarray(lookup.ids)][..., 0], tokens)
  assert len(counts) <= 16 and (most == vocab or counts)


def test_a_step_over_the_rows_a_batch_uses_is_the_step_over_the_most(tiny_config):
  """train.py passes `state.host_rows` of the host batch: the same step as the most rows."""
  from mlheads.data import tweets  # pylint: disable=g-import-not-at-top
  fields = tweets.builder(tiny_config.data).fields()
  ds = base.Dataset(name='t', splits={}, meta={},
                    inputs={k: fields[k] for k in ('tokens', 'extra')},
                    targets={'retweeted': fields['retweeted']})
  rng = np.random.default_rng(0)
  arrays = {'tokens': rng.integers(0, 20, size=(4, 12)).astype(np.int32),  # 48 tokens < V 60
            'extra': rng.normal(size=(4, 5)).astype(np.float32),
            'retweeted': (rng.random((4, 1)) > 0.5).astype(np.float32)}
  trainer = compiled(tiny_config, ds)
  host = _batch(ds, arrays, 4)
  rows = trainer.init_state(0).host_rows(host['inputs'])
  assert rows['tokens'][0].shape == (21,)  # <= 20 distinct ids, rounded up to a 16th of 48
  lowered = trainer.train_step.lower(trainer.init_state(0), trainer.shard(host), rows)
  assert 'tensor<21x8xf32>' in lowered.as_text()  # the step's rows: 21 of the table's, E = 8
  states = []
  for rows in (rows, None):
    state = trainer.init_state(0)
    for _ in range(3):
      state, scalars = trainer.train_step(state, trainer.shard(host), rows)
    states.append(jax.device_get((state, scalars)))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), *states)


def test_weight_zero_on_an_output_removes_its_gradient():
  ds, arrays = _toy()
  batch = _batch(ds, arrays)
  grads = {}
  for w in (0.0, 1.0):
    trainer = compiled(_config(a=1.0, b=w), ds)
    state = trainer.init_state(0)

    def total(params, trainer=trainer):
      logits = trainer.model.apply({'params': params}, batch['inputs'])
      per = train.head_losses(trainer.heads, logits, batch)
      return sum(trainer.heads[n].weight * l for n, l in per.items())

    grads[w] = jax.grad(total)(state.params)
  assert not np.any(grads[0.0]['b']['kernel'])
  assert np.any(grads[1.0]['b']['kernel'])
  # With weight 0 the trunk sees only head a's gradient.
  only_a = compiled(_config(a=1.0), ds)
  p = only_a.init_state(0).params

  def loss_a(params):
    logits = only_a.model.apply({'params': params}, batch['inputs'])
    return train.head_losses(only_a.heads, logits, batch)['a']

  np.testing.assert_allclose(jax.grad(loss_a)(p)['trunk']['dense_0']['kernel'],
                             grads[0.0]['trunk']['dense_0']['kernel'], rtol=1e-5, atol=1e-7)


def test_padding_rows_and_masked_labels_change_nothing():
  ds, arrays = _toy()
  trainer = compiled(_config(), ds)
  params = trainer.init_state(0).params
  batch = _batch(ds, arrays)
  logits = trainer.model.apply({'params': params}, batch['inputs'])
  base_loss = train.head_losses(trainer.heads, logits, batch)
  garbage = jax.tree.map(np.copy, batch)
  garbage['valid'][-4:] = 0
  garbage['targets']['b'][-4:] = 1 - garbage['targets']['b'][-4:]
  garbage['masks']['b'][:, 1] = 0
  garbage['targets']['b'][:, 1] = 1 - garbage['targets']['b'][:, 1]
  ref = jax.tree.map(np.copy, batch)
  ref['valid'][-4:] = 0
  ref['masks']['b'][:, 1] = 0
  a = train.head_losses(trainer.heads, logits, garbage)
  b = train.head_losses(trainer.heads, logits, ref)
  np.testing.assert_allclose(a['b'], b['b'], rtol=1e-6)
  assert float(a['b']) != pytest.approx(float(base_loss['b']))


def test_label_width_mismatch_is_caught_at_trace_time():
  """B03: `[B, 1]` labels that would broadcast against `[B, K]` logits fail at trace time, naming
  the head."""
  ds, arrays = _toy()
  trainer = compiled(_config(), ds)
  batch = _batch(ds, arrays)
  batch['targets']['b'] = batch['targets']['b'][:, :1]  # [B, 1] would broadcast to [B, 2]
  batch['masks']['b'] = batch['masks']['b'][:, :1]
  with pytest.raises(errors.UsageError, match=r"head 'b'.*\(16, 1\).*\(16, 2\)"):
    trainer.train_step(trainer.init_state(0), trainer.shard(batch))


def test_unknown_target_head_kind_and_optimizer_list_the_known_names():
  """B14: an unknown target, head kind or optimizer is one line listing the known names."""
  ds, _ = _toy()
  c = _config()
  c.heads.a.target = 'nope'
  with pytest.raises(errors.UsageError, match=r"target 'nope'.*\['a', 'b'\]"):
    compiled(c, ds)
  c = _config()
  c.heads.a.kind = 'nope'
  with pytest.raises(errors.UsageError, match="unknown kind 'nope'; known: .*'sigmoid'"):
    compiled(c, ds)
  c = _config()
  c.optimizer = 'nope'
  with pytest.raises(errors.UsageError, match="known: .*'rmsprop'"):
    compiled(c, ds)


@pytest.mark.slow
def test_train_and_evaluate_writes_metrics(tiny_config, tmp_path):
  summary = train.train_and_evaluate(tiny_config, str(tmp_path))
  assert summary['evaluated_step'] == 192 // 8
  with open(tmp_path / 'metrics.json', encoding='utf-8') as f:
    saved = json.load(f)
  for split in ('validation', 'test'):
    for out in ('main', 'aux'):
      m = saved[split][out]
      assert {'loss', 'label_accuracy', 'roc_auc_macro'} <= set(m)
      assert 0 <= m['label_accuracy'] <= 1
      # One label each: no metric that ranks a row's labels; thresholds per class only.
      assert not set(m) & set(metrics.RANKING_KEYS)
  assert set(saved['thresholds']['main']) == {'per_class'}
  lines = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl', encoding='utf-8')]
  assert any(l['split'] == 'train' and 'loss_main' in l for l in lines)
  assert any(l['split'] == 'validation/main' for l in lines)
  assert os.listdir(tmp_path / 'tensorboard')


def _matmul_dtypes(apply_fn, params, inputs) -> set[str]:
  """The output dtypes of every matmul `apply_fn` traces to (the LSTM's scan body included)."""
  graph = str(jax.make_jaxpr(lambda p: apply_fn({'params': p}, inputs))(params))
  return {l.split('=')[0].split(':')[-1].split('[')[0].strip()
          for l in graph.splitlines() if 'dot_general[' in l}


def test_bfloat16_computes_in_bf16_with_float32_params_optimizer_state_and_loss(tiny_config):
  """config.dtype=bfloat16: every matmul (the LSTM's too) runs in bf16; parameters,
  gradients, optimizer state, the logits handed to the losses and the losses stay float32;
  the step's losses match float32's to bf16 precision."""
  from mlheads.data import tweets  # pylint: disable=g-import-not-at-top
  from mlheads.model import model as model_lib  # pylint: disable=g-import-not-at-top
  fields = tweets.builder(tiny_config.data).fields()
  text = base.Dataset(name='t', splits={}, meta={},
                      inputs={k: fields[k] for k in ('tokens', 'extra')},
                      targets={'retweeted': fields['retweeted']})
  model, _ = model_lib.build_model(tiny_config, text)
  inputs = pipeline.example_inputs(text)
  params = jax.eval_shape(model.init, jax.random.key(0), inputs)['params']  # traced, not run
  for dtype in ('float32', 'bfloat16'):
    apply = model_lib.ComputeIn(model.apply, dtype)
    assert _matmul_dtypes(apply, params, inputs) == {'bf16' if dtype == 'bfloat16' else 'f32'}
    logits = jax.eval_shape(apply, {'params': params}, inputs)
    assert {x.dtype for x in jax.tree.leaves(logits)} == {jnp.dtype('float32')}

  ds, arrays = _toy()
  batch = _batch(ds, arrays)
  losses = {}
  for dtype in ('float32', 'bfloat16'):
    c = _config()
    c.dtype = dtype
    trainer = compiled(c, ds)
    state, scalars = trainer.train_step(trainer.init_state(0), trainer.shard(batch))
    assert _matmul_dtypes(state.apply_fn, state.params, batch['inputs']) == {
        'bf16' if dtype == 'bfloat16' else 'f32'}
    floats = [x for x in jax.tree.leaves((state.params, state.opt_state))
              if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(x.dtype == jnp.float32 for x in floats)
    assert all(v.dtype == jnp.float32 for v in scalars.values())
    losses[dtype] = {k: float(v) for k, v in scalars.items()}
  for k, v in losses['float32'].items():
    assert losses['bfloat16'][k] == pytest.approx(v, rel=2e-2), k
  c.dtype = 'float16'
  with pytest.raises(errors.UsageError, match="--config.dtype must be 'float32' or 'bfloat16'"):
    configs.validate(c)


def test_the_ensemble_is_left_out_above_the_baselines_row_limit(monkeypatch, caplog):
  monkeypatch.setattr(baselines, 'MAX_ROWS', 100)
  c = _config()
  c.ensemble = True
  assert baselines.ensemble_or_not(c, 100) is c  # at the limit: kept, nothing logged
  assert not caplog.records
  with caplog.at_level('WARNING'):
    left = baselines.ensemble_or_not(c, 101)
  assert left.ensemble is False and c.ensemble is True  # a copy; the caller's config untouched
  assert left.heads.to_dict() == c.heads.to_dict() and left.trunk.to_dict() == c.trunk.to_dict()
  assert sum('ensemble left out: 101 train rows > 100' in r.getMessage()
             for r in caplog.records) == 1
  c.ensemble = False
  assert baselines.ensemble_or_not(c, 10**9) is c
