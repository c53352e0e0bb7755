"""Training: one pure jitted step over the weighted sum of head losses, and the loop.

The step is compiled once with the state donated; the batch is sharded over a
1-D mesh of every device and the parameters replicated, so the same program
runs on one CPU, several GPUs or a TPU slice. The host reads losses back only
every `log_every_steps` steps.
"""

import functools
import json
import os
import socket
import time
from collections.abc import Mapping

from absl import logging
import flax
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from mlheads import configs
from mlheads import errors
from mlheads import evaluation
from mlheads import heads as heads_lib
from mlheads import models
from mlheads import trunks
from mlheads import writers
from mlheads.data import base
from mlheads.data import checks
from mlheads.data import pipeline
import mlheads.data as data_lib


class TrainState(train_state.TrainState):
  rng: jax.Array  # base key; step s uses fold_in(rng, s), a pure function of (seed, step).


# Keras' RMSprop: rho 0.9, epsilon 1e-7 added outside the square root, no momentum.
OPTIMIZERS = {
    'rmsprop': lambda lr: optax.rmsprop(lr, decay=0.9, eps=1e-7, eps_in_sqrt=False),
    'adam': optax.adam,
    'adamw': optax.adamw,
    'sgd': lambda lr: optax.sgd(lr, momentum=0.9),
}


def make_optimizer(config) -> optax.GradientTransformation:
  if config.optimizer not in OPTIMIZERS:
    raise errors.UsageError(f'unknown optimizer {config.optimizer!r}; known: {sorted(OPTIMIZERS)}')
  tx = OPTIMIZERS[config.optimizer](config.learning_rate)
  if config.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip), tx)
  return tx


def build_model(config, ds: base.Dataset, train_arrays: Mapping[str, np.ndarray] | None = None
                ) -> tuple[models.Model, dict[str, heads_lib.Head]]:
  """The trunk and heads the config names, sized from the data set's fields.

  train_arrays: the train split (`{key: [n, ...]}`), for heads fitted on its
  labels (powerset).
  """
  heads, split = {}, train_arrays or {}
  for name, hcfg in config.heads.items():
    if hcfg.target not in ds.targets:
      raise errors.UsageError(f'head {name!r}: target {hcfg.target!r} is not in data set '
                              f'{ds.name}; its targets are {sorted(ds.targets)}')
    heads[name] = heads_lib.make(name, hcfg, ds.targets[hcfg.target],
                                 split.get(hcfg.target), split.get(f'{hcfg.target}_mask'))
  vocab = [f.vocab_size for f in ds.inputs.values() if f.kind == 'tokens']
  fills = {'vocab_size': vocab[0]} if vocab else {}
  return models.Model(trunk=trunks.make(config.trunk, **fills), heads=heads), heads


def head_losses(heads: Mapping[str, heads_lib.Head], logits, batch) -> dict[str, jax.Array]:
  """Each output's mean loss over the batch's valid examples with a known label."""
  out = {}
  for name, head in heads.items():
    labels, mask = batch['targets'][head.target], batch['masks'][head.target]
    head.check(name, logits[name], labels)
    per_example = head.loss_fn(logits[name], labels, mask)
    w = batch['valid'] * head.known_rows(labels, mask)
    out[name] = jnp.where(w > 0, per_example, 0.0).sum() / jnp.maximum(w.sum(), 1.0)
  return out


def train_step(state: TrainState, batch, *, heads):
  """One optimizer step on `sum_h weight_h * loss_h`; returns (state, scalars)."""
  rng = jax.random.fold_in(state.rng, state.step)

  def loss_fn(params):
    logits = state.apply_fn({'params': params}, batch['inputs'], labels=batch['targets'],
                            masks=batch['masks'], train=True, rngs={'dropout': rng})
    per_head = head_losses(heads, logits, batch)
    total = sum(heads[n].weight * l for n, l in per_head.items())
    return total, per_head

  (total, per_head), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads)
  scalars = {'loss': total, 'grad_norm': optax.global_norm(grads),
             **{f'loss_{n}': l for n, l in per_head.items()}}
  return state, scalars


def eval_step(params, batch, *, apply_fn, heads):
  """Scores `[batch, K]` and per-example losses `[batch]` of every output."""
  logits = apply_fn({'params': params}, batch['inputs'], train=False)
  scores, losses = {}, {}
  for name, head in heads.items():
    labels, mask = batch['targets'][head.target], batch['masks'][head.target]
    head.check(name, logits[name], labels)
    scores[name] = head.scores(logits[name])
    losses[name] = head.loss_fn(logits[name], labels, mask)
  return scores, losses


class Trainer:
  """The compiled pieces of a run: model, state, sharded step functions."""

  def __init__(self, config, ds: base.Dataset, train_arrays=None):
    self.config = config
    self.model, self.heads = build_model(config, ds, train_arrays)
    self.tx = make_optimizer(config)
    # Auto axes: XLA's partitioner places the gathers and reductions, as with pjit.
    self.mesh = jax.make_mesh((jax.device_count(),), ('data',),
                              axis_types=(jax.sharding.AxisType.Auto,))
    self.batch_sharding = jax.NamedSharding(self.mesh, jax.P('data'))
    self.replicated = jax.NamedSharding(self.mesh, jax.P())
    example = next(pipeline.eval_batches(
        ds, {k: np.zeros((1,) + f.shape, f.dtype) for k, f in {**ds.inputs, **ds.targets}.items()},
        1))
    self._example_inputs = example['inputs']
    self.train_step = jax.jit(functools.partial(train_step, heads=self.heads),
                              in_shardings=(self.replicated, self.batch_sharding),
                              out_shardings=(self.replicated, self.replicated),
                              donate_argnums=0)
    self.eval_step = jax.jit(
        functools.partial(eval_step, apply_fn=self.model.apply, heads=self.heads),
        in_shardings=(self.replicated, self.batch_sharding),
        out_shardings=self.replicated)

  def init_state(self, seed: int) -> TrainState:
    params_key, rng = jax.random.split(jax.random.key(seed))

    @functools.partial(jax.jit, out_shardings=self.replicated)
    def init(params_key, rng):
      params = self.model.init(params_key, self._example_inputs)['params']
      return TrainState.create(apply_fn=self.model.apply, params=params, tx=self.tx, rng=rng)

    return init(params_key, rng)

  def shard(self, batch):
    """Host numpy batch -> global arrays split over the mesh's 'data' axis."""
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self.batch_sharding, x), batch)

  def evaluate(self, params, ds, arrays) -> dict[str, dict]:
    outs = evaluation.predict_split(
        lambda p, b: self.eval_step(p, self.shard(b)), params, ds, arrays,
        self.config.eval_batch_size, self.heads)
    return {name: evaluation.head_metrics(self.heads[name], o) for name, o in outs.items()}


def load_data(config) -> tuple[base.Dataset, dict[str, dict[str, np.ndarray]]]:
  """The data set's splits as checked in-memory arrays (B01-B11 before compiling)."""
  ds = data_lib.load(config.data)
  arrays = {}
  for split in base.SPLITS:
    arrays[split] = pipeline.read_split(ds.split(split))
    checks.check_split(ds, split, arrays[split])
  checks.check_batch_size(ds, 'train', _num_rows(arrays['train']), config.batch_size)
  logging.info('Labels in train: %s', checks.label_summary(ds, arrays['train']))
  return ds, arrays


def _num_rows(arrays) -> int:
  return len(next(iter(arrays.values())))


def _check_finite(history: list[dict], first_step: int) -> None:
  """B21: stop naming the step range and the output whose loss went non-finite."""
  for i, s in enumerate(history):
    for k, v in s.items():
      if not np.isfinite(v):
        raise FloatingPointError(
            f'{k} is {v} at step {first_step + i} (steps {first_step}-'
            f'{first_step + len(history) - 1}); stopping without saving')


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains and evaluates; writes metrics.jsonl, TensorBoard and metrics.json in workdir."""
  configs.validate(config, jax.device_count())
  ds, arrays = load_data(config)
  trainer = Trainer(config, ds, arrays['train'])
  state = trainer.init_state(config.seed)
  table, n_params = models.parameter_overview(state.params)
  logging.info('Parameters:\n%s', table)
  logging.info('Total parameters: %s', f'{n_params:,}')
  logging.info('Devices: %s (%d processes)', jax.devices(), jax.process_count())

  n_train = _num_rows(arrays['train'])
  spe = pipeline.steps_per_epoch(n_train, config.batch_size)
  total_steps = spe * config.epochs
  logging.info('Train %d examples: %d steps/epoch x %d epochs = %d steps of batch %d.',
               n_train, spe, config.epochs, total_steps, config.batch_size)

  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
    f.write(config.to_json_best_effort(indent=2))
  writer = writers.MetricWriter(workdir)
  start_step = int(state.step)
  batches = pipeline.train_batches(ds, arrays['train'], config.batch_size, config.seed,
                                   config.epochs, start_step)
  history, hist_start = [], start_step
  bar = tqdm.tqdm(total=total_steps, initial=start_step, disable=not config.progress,
                  unit='step', dynamic_ncols=True)
  t0, seen = time.perf_counter(), 0
  results = {}
  try:
    for step in range(start_step, total_steps):
      state, scalars = trainer.train_step(state, trainer.shard(next(batches)))
      history.append(scalars)
      seen += config.batch_size
      bar.update(1)
      last = step + 1 == total_steps
      if len(history) >= config.log_every_steps or last or (step + 1) % spe == 0:
        host = jax.device_get(history)
        _check_finite(host, hist_start)
        mean = {k: float(np.mean([h[k] for h in host])) for k in host[0]}
        rate = seen / (time.perf_counter() - t0)
        mean['examples_per_s'] = rate
        writer.write(step + 1, 'train', mean)
        bar.set_postfix(loss=f'{mean["loss"]:.4f}', ex_s=f'{rate:,.0f}')
        history, hist_start, t0, seen = [], step + 1, time.perf_counter(), 0
      if (step + 1) % spe == 0 or last:
        epoch = (step + 1) // spe
        if epoch % config.eval_every_epochs == 0 or last:
          results['validation'] = trainer.evaluate(state.params, ds, arrays['validation'])
          for name, m in results['validation'].items():
            writer.write(step + 1, f'validation/{name}', m)
          bar.write(f'epoch {epoch}: ' + ', '.join(
              f'{n} loss {m["loss"]:.4f}' + (f' auc {m["roc_auc_macro"]:.4f}'
                                            if 'roc_auc_macro' in m else '')
              for n, m in results['validation'].items()))
  finally:
    bar.close()
  results['validation'] = trainer.evaluate(state.params, ds, arrays['validation'])
  results['test'] = trainer.evaluate(state.params, ds, arrays['test'])
  summary = {
      'experiment_data': ds.name,
      'steps': int(state.step),
      'parameters': n_params,
      'host': socket.gethostname(),
      **results,
  }
  with open(os.path.join(workdir, 'metrics.json'), 'w', encoding='utf-8') as f:
    json.dump(writers.jsonable(summary), f, indent=2)
  writer.close()
  for split in ('validation', 'test'):
    for name, m in results[split].items():
      logging.info('%s %s: %s', split, name, ', '.join(f'{k} {v:.4f}' for k, v in m.items()))
  logging.info('Wrote %s', os.path.join(workdir, 'metrics.json'))
  return summary
