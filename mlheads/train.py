"""Training: one pure jitted step over the weighted sum of head losses, and the loop.

The step is compiled once with the state donated; the batch is sharded over a
1-D mesh of every device and the parameters replicated, so the same program
runs on one CPU, several GPUs or a TPU slice. The host reads losses back only
every `log_every_steps` steps.
"""

import dataclasses
import functools
import json
import os
import time
from collections.abc import Mapping

from absl import logging
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from mlheads import checkpoints
from mlheads import configs
from mlheads import errors
from mlheads import evaluation
from mlheads import heads as heads_lib
from mlheads import models
from mlheads import report
from mlheads import trunks
from mlheads import writers
from mlheads.data import base
from mlheads.data import checks
from mlheads.data import pipeline
import mlheads.data as data_lib


class TrainState(train_state.TrainState):
  # Raw uint32 key data (checkpointable); step s uses fold_in(rng, s): a pure function of
  # (seed, step), so a resumed run draws the same numbers.
  rng: jax.Array


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


def build_model(config, ds: base.Dataset, train_arrays: Mapping[str, np.ndarray] | None = None,
                fitted_heads: Mapping[str, heads_lib.Head] | None = None
                ) -> tuple[models.Model, dict[str, heads_lib.Head]]:
  """The trunk and heads the config names, sized from the data set's fields.

  train_arrays: the train split (`{key: [n, ...]}`), for heads fitted on its
    labels (powerset).
  fitted_heads: heads restored from a checkpoint (predict), used as they are.
  """
  heads, split = dict(fitted_heads or {}), train_arrays or {}
  for name, hcfg in config.heads.items():
    if name in heads:
      continue
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
  scalars = {'loss': total, 'grad_norm': optax.tree.norm(grads),
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

  def __init__(self, config, ds: base.Dataset, train_arrays=None, fitted_heads=None):
    self.config = config
    self.model, self.heads = build_model(config, ds, train_arrays, fitted_heads)
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
    params_key, rng = jax.random.split(jax.random.PRNGKey(seed))

    @functools.partial(jax.jit, out_shardings=self.replicated)
    def init(params_key, rng):
      params = self.model.init(params_key, self._example_inputs)['params']
      return TrainState.create(apply_fn=self.model.apply, params=params, tx=self.tx, rng=rng)

    return init(params_key, rng)

  def shard(self, batch):
    """Global host batch -> arrays split over the mesh's 'data' axis.

    Every process computes the same global batch (the order is a pure function
    of (seed, step)) and contributes its own contiguous slice of the rows.
    """
    n, i = jax.process_count(), jax.process_index()

    def put(x):
      rows = x.shape[0] // n
      return jax.make_array_from_process_local_data(
          self.batch_sharding, x[i * rows:(i + 1) * rows], x.shape)

    return jax.tree.map(put, batch)

  def predict(self, params, ds, arrays) -> dict[str, dict]:
    """Scores, labels, masks and losses of every output over a whole split."""
    return evaluation.predict_split(lambda p, b: self.eval_step(p, self.shard(b)), params, ds,
                                    arrays, self.config.eval_batch_size, self.heads)


def load_data(config) -> tuple[base.Dataset, dict[str, dict[str, np.ndarray]]]:
  """The data set's splits as checked in-memory arrays (B01-B11 before compiling)."""
  ds = data_lib.load(config.data, batch_size=config.batch_size)
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
  """B21: stop naming the step range and the output whose loss went non-finite.

  `history[i]` holds step `first_step + i`'s scalars: 'loss', 'grad_norm', 'loss_<output>'.
  The outputs are named first (the total is only their weighted sum); a finite loss with a
  non-finite gradient is named as such. The CLI prints the message as one line, exit 3.
  """
  for i, s in enumerate(history):
    bad = {k: float(v) for k, v in s.items() if not np.isfinite(v)}
    if not bad:
      continue
    outputs = [f"output '{k[len('loss_'):]}' loss is {v}" for k, v in sorted(bad.items())
               if k.startswith('loss_')]
    what = ', '.join(outputs) or ', '.join(f'{k} is {v}' for k, v in sorted(bad.items()))
    raise FloatingPointError(
        f'training diverged at step {first_step + i} (steps {first_step}-'
        f'{first_step + len(history) - 1} checked): {what}; stopping without saving these '
        'steps (lower --config.learning_rate or set --config.grad_clip)')


# What must match between a workdir's checkpoints and a run resuming them (B22): the model
# (trunk, heads), the data and its order (data, seed, batch_size: step s's batch is a function
# of them) and the optimizer state's structure. epochs, learning_rate, logging and evaluation
# cadence may change, e.g. to extend a finished run with more epochs. data.dir may move.
_RESUME_KEYS = ('trunk', 'heads', 'data', 'seed', 'batch_size', 'optimizer')
_RESUME_FREE = ('data.dir',)


def _flatten(tree, prefix=''):
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f'{prefix}{k}.'))
    return out
  return {prefix[:-1]: tree}


def _check_workdir(config, workdir: str) -> None:
  """Refuses at once, before data is read and writing nothing, a workdir this run cannot use.

  B23: a live run holds its lock. B22: it holds checkpoints of a run whose config.json differs
  from this config in a key of _RESUME_KEYS (restore would also refuse their shapes, but later
  and in terms of arrays; this names the settings).
  """
  checkpoints.WorkdirLock(workdir, enabled=jax.process_index() == 0).check()
  saved_path = os.path.join(workdir, 'config.json')
  with checkpoints.Checkpointer(workdir) as ckpt:
    resuming = bool(ckpt.saved_steps())
  if not resuming or not os.path.exists(saved_path):
    return
  try:
    with open(saved_path, encoding='utf-8') as f:
      saved = _flatten({k: v for k, v in json.load(f).items() if k in _RESUME_KEYS})
  except (OSError, ValueError, AttributeError) as e:  # AttributeError: JSON but not an object.
    logging.warning('cannot read %s (%s); relying on the checkpoint shape check', saved_path, e)
    return
  now = _flatten({k: v for k, v in json.loads(config.to_json_best_effort()).items()
                  if k in _RESUME_KEYS})
  diffs = [f'{k}: checkpoints have {saved.get(k, "(unset)")!r}, this run {now.get(k, "(unset)")!r}'
           for k in sorted(set(saved) | set(now))
           if k not in _RESUME_FREE and saved.get(k) != now.get(k)]
  if diffs:
    raise errors.UsageError(
        f'workdir {workdir} holds checkpoints of a different config ({saved_path}): '
        + '; '.join(diffs) + '; use a new --workdir, or the settings it was trained with')


def _drop_records_after(workdir: str, step: int) -> None:
  """On resume, forgets metrics.jsonl lines of steps after `step`: a killed run logged them,
  and the resumed run logs them again (same values), which would double the learning curves."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return
  with open(path, encoding='utf-8') as f:
    lines = f.readlines()
  keep = []
  for line in lines:
    try:
      if json.loads(line)['step'] > step:
        continue
    except (ValueError, KeyError, TypeError):
      continue  # a line cut short by the kill.
    keep.append(line)
  if len(keep) != len(lines):
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
      f.writelines(keep)
    os.replace(path + '.tmp', path)


def _extras(config, ds: base.Dataset, heads, thresholds: dict, epoch: int) -> dict:
  """What a checkpoint carries besides arrays: enough for predict to rebuild the run."""
  return {
      'config': json.loads(config.to_json_best_effort()),
      'heads': {name: heads_lib.to_json(h) for name, h in heads.items()},
      'data': {'name': ds.name, 'meta': dict(ds.meta),
               'inputs': {k: dataclasses.asdict(f) for k, f in ds.inputs.items()},
               'targets': {k: dataclasses.asdict(f) for k, f in ds.targets.items()}},
      'thresholds': thresholds,
      'epoch': epoch,
  }


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains (resuming from WORKDIR's last good checkpoint) and evaluates.

  Writes into `workdir`: config.json, metrics.jsonl, tensorboard/, checkpoints/
  (latest and best, with thresholds tuned on validation), metrics.json and the
  report. Everything that can be wrong with the data or the config is raised
  before the workdir is created.
  """
  configs.validate(config, jax.device_count())
  _check_workdir(config, workdir)
  ds, arrays = load_data(config)
  trainer = Trainer(config, ds, arrays['train'])
  best_name, best_mode = evaluation.best_metric(config, trainer.heads)
  state = trainer.init_state(config.seed)
  table, n_params = models.parameter_overview(state.params)
  logging.info('Parameters:\n%s', table)
  logging.info('Total parameters: %s', f'{n_params:,}')
  logging.info('Devices: %s (%d processes)', jax.devices(), jax.process_count())
  spe = pipeline.steps_per_epoch(_num_rows(arrays['train']), config.batch_size)
  total_steps = spe * config.epochs
  logging.info('Train %d examples: %d steps/epoch x %d epochs = %d steps of batch %d.',
               _num_rows(arrays['train']), spe, config.epochs, total_steps, config.batch_size)

  os.makedirs(workdir, exist_ok=True)
  primary = jax.process_index() == 0
  with checkpoints.WorkdirLock(workdir, enabled=primary), \
      checkpoints.PreemptionFlag() as preempted:
    ckpt = checkpoints.Checkpointer(workdir, max_to_keep=2, best_metric=best_name,
                                    best_mode=best_mode)
    # Any manifest, even a damaged one, means there is a run to resume: restore falls back past
    # corrupt steps or raises (B20/B24); starting afresh over them would be silent data loss.
    if ckpt.saved_steps():
      state, _, step = ckpt.restore(state)
      logging.info('Resuming from step %d of %d (%s).', step, total_steps, ckpt.directory)
      if step >= total_steps:
        logging.info('Training already finished (step %d); evaluating again.', step)
      if primary:
        _drop_records_after(workdir, step)
    if primary:
      with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
        f.write(config.to_json_best_effort(indent=2))
    writer = writers.MetricWriter(workdir)
    try:
      state = _train_loop(config, trainer, ds, arrays, state, ckpt, writer, preempted, spe,
                          total_steps)
      summary, preds = _final_evaluation(config, trainer, ds, arrays, state, ckpt, n_params)
      summary['steps'] = int(state.step)
    finally:
      writer.close()
    if primary:
      path = os.path.join(workdir, 'metrics.json')
      with open(path + '.tmp', 'w', encoding='utf-8') as f:
        json.dump(writers.jsonable(summary), f, indent=2)
      os.replace(path + '.tmp', path)
      class_names = {name: list(ds.targets[h.target].names) or
                     [str(k) for k in range(h.num_classes)] for name, h in trainer.heads.items()}
      written = report.write(workdir, writers.jsonable(summary), preds, class_names)
      logging.info('Wrote %s and %s', path, ', '.join(written))
  return summary


def _train_loop(config, trainer, ds, arrays, state, ckpt, writer, preempted, spe, total_steps):
  """Steps from the state's step to `total_steps`; evaluates and saves every epoch."""
  start_step = int(state.step)
  batches = pipeline.train_batches(ds, arrays['train'], config.batch_size, config.seed,
                                   config.epochs, start_step)
  history, hist_start, seen, t0 = [], start_step, 0, time.perf_counter()
  bar = tqdm.tqdm(total=total_steps, initial=start_step, disable=not config.progress,
                  unit='step', dynamic_ncols=True)
  try:
    for step in range(start_step, total_steps):
      state, scalars = trainer.train_step(state, trainer.shard(next(batches)))
      history.append(scalars)
      seen += config.batch_size
      bar.update(1)
      done = step + 1
      end_of_epoch = done % spe == 0 or done == total_steps
      if len(history) >= config.log_every_steps or end_of_epoch or preempted.requested:
        host = jax.device_get(history)
        _check_finite(host, hist_start)
        mean = {k: float(np.mean([h[k] for h in host])) for k in host[0]}
        mean['examples_per_s'] = seen / (time.perf_counter() - t0)
        mean['epoch'] = done / spe
        writer.write(done, 'train', mean)
        bar.set_postfix(loss=f'{mean["loss"]:.4f}', ex_s=f'{mean["examples_per_s"]:,.0f}')
        history, hist_start, seen, t0 = [], done, 0, time.perf_counter()
      if end_of_epoch:
        epoch = -(-done // spe)
        if epoch % config.eval_every_epochs == 0 or done == total_steps:
          preds = trainer.predict(state.params, ds, arrays['validation'])
          val = evaluation.all_metrics(trainer.heads, preds)
          for name, m in val.items():
            writer.write(done, f'validation/{name}', {'epoch': epoch, **m})
          bar.write(f'epoch {epoch}: ' + ', '.join(
              f'{n} loss {m["loss"]:.4f}' + ''.join(
                  f' {short} {m[key]:.4f}' for key, short in (
                      ('average_precision_macro', 'mAP'), ('roc_auc_macro', 'AUC'))
                  if key in m and np.isfinite(m[key]))
              for n, m in val.items()))
          if epoch % config.checkpoint_every_epochs == 0 or done == total_steps:
            extras = _extras(config, ds, trainer.heads,
                             evaluation.tune_thresholds(trainer.heads, preds), epoch)
            ckpt.save(done, state, extras=extras, metrics=evaluation.flatten(val))
      if preempted.requested:
        ckpt.save(done, state, extras=_extras(config, ds, trainer.heads, {}, done // spe))
        bar.write(f'SIGTERM: saved step {done}; exiting with {checkpoints.PREEMPTED_EXIT_CODE}.')
        raise SystemExit(checkpoints.PREEMPTED_EXIT_CODE)
  finally:
    bar.close()
  return state


def _final_evaluation(config, trainer, ds, arrays, state, ckpt, n_params):
  """Validation and test metrics of the best checkpoint, at 0.5 and at its tuned thresholds.

  Returns (summary, predictions {split: {output: {scores, labels, mask, loss}}}).
  """
  step = ckpt.best_step() or ckpt.latest_step()
  thresholds = {}
  if step is not None:
    try:
      state, extras, step = ckpt.restore(state, step)
    except checkpoints.CheckpointError as e:  # corrupted since it was written (B20)
      logging.warning('cannot evaluate step %d (%s); using the newest intact checkpoint', step, e)
      state, extras, step = ckpt.restore(state)
    thresholds = extras['thresholds']
  preds = {s: trainer.predict(state.params, ds, arrays[s]) for s in ('validation', 'test')}
  if not thresholds:
    thresholds = evaluation.tune_thresholds(trainer.heads, preds['validation'])
  summary = {
      'experiment': config.experiment or ds.name,
      'evaluated_step': int(state.step),
      'best_metric': ckpt.best_metric,
      'parameters': n_params,
      'validation': evaluation.all_metrics(trainer.heads, preds['validation']),
      'test': evaluation.all_metrics(trainer.heads, preds['test']),
      'test_tuned': evaluation.all_metrics(trainer.heads, preds['test'], thresholds),
      'thresholds': thresholds,
  }
  shown = ('loss', 'average_precision_macro', 'roc_auc_macro', 'f1_micro', 'f1_macro',
           'subset_accuracy', 'accuracy', 'mse', 'mae')
  for split in ('validation', 'test', 'test_tuned'):
    for name, m in summary[split].items():
      logging.info('%s %s: %s', split, name,
                   ', '.join(f'{k} {m[k]:.4f}' for k in shown if k in m))
  return summary, preds
