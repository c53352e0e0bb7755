"""Training: one pure jitted step over the weighted sum of head losses, and the run.

`train_and_evaluate` reads top to bottom, in three parts:
  set-up            every setting, name and the workdir is checked before any data is
                    read, the data before anything compiles; the model, the state (or
                    the one resumed from the workdir) and the compiled steps;
  the loop          one step per batch (streamed from the prepared files, each process
                    reading its own rows), the state donated; the host reads the losses
                    only every `log_every_steps` steps; validation and a checkpoint at
                    the end of each epoch; SIGTERM saves (the same step on every
                    process) and exits 143;
  final evaluation  the best checkpoint on validation and test, at each head's own
                    threshold and at per-class thresholds tuned on validation, into
                    metrics.json (with `params_sha256`, the trained parameters'
                    fingerprint) and the report.
"""

import dataclasses
import functools
import json
import os
import sys
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlheads import baselines
from mlheads import configs
from mlheads import console
from mlheads import distributed
from mlheads import ensemble
from mlheads import optimizers
from mlheads import sharding
from mlheads.data import pipeline
from mlheads.evaluation import report
from mlheads.evaluation import runner
from mlheads.model import layers
from mlheads.model import model as model_lib
from mlheads.model import trunks as trunks_lib
from mlheads.state import array_storage
from mlheads.state import checkpoints
from mlheads.state import extras as extras_lib
from mlheads.state import manifest as manifest_lib
from mlheads.state import train_state
from mlheads.state import workdir as workdir_lib
from mlheads.state import writers
import mlheads.data as data_lib


def head_losses(heads, logits, batch) -> dict[str, jax.Array]:
  """Each output's mean loss over the batch's valid examples with a known label."""
  out = {}
  for name, head in heads.items():
    labels, mask = batch['targets'][head.target], batch['masks'][head.target]
    head.check(name, logits[name], labels)
    per_example = head.loss_fn(logits[name], labels, mask)
    w = batch['valid'] * head.known_rows(labels, mask)
    out[name] = jnp.where(w > 0, per_example, 0.0).sum() / jnp.maximum(w.sum(), 1.0)
  return out


def train_step(state: train_state.TrainState, batch, given=None, *, heads):
  """One optimizer step on `sum_h weight_h * loss_h`; returns (state, scalars).

  A table the state updates row by row (`state.row_tables`) enters the loss through the
  rows the batch touches (`layers.Lookup`), so its gradient is only those rows'. `given`
  (`state.host_rows(host inputs)`, or None: found here, at the most there can be) names them.
  """
  rng = jax.random.fold_in(state.rng, state.step)
  dense, tables = state.split_params()
  given = given or {}
  lookups = {k: layers.lookup_rows(t, batch['inputs'][k], given.get(k))
             for k, t in tables.items()}

  def loss_fn(dense, rows):
    inputs = {**batch['inputs'],
              **{k: lookup._replace(rows=rows[k]) for k, lookup in lookups.items()}}
    logits = state.apply_fn({'params': state.merge_params(dense, tables)}, inputs,
                            labels=batch['targets'], masks=batch['masks'], train=True,
                            rngs={'dropout': rng})
    per_head = head_losses(heads, logits, batch)
    total = sum(heads[n].weight * l for n, l in per_head.items())
    return total, per_head

  rows = {k: lookup.rows for k, lookup in lookups.items()}
  (total, per_head), (grads, row_grads) = jax.value_and_grad(
      loss_fn, argnums=(0, 1), has_aux=True)(dense, rows)
  state = state.apply_gradients(grads=grads, row_grads=row_grads, lookups=lookups)
  # sqrt(sum <g, g>): one pass over each gradient, no squared copy of it.
  grad_norm = jnp.sqrt(sum(jnp.vdot(g, g) for g in jax.tree.leaves((grads, row_grads))))
  scalars = {'loss': total, 'grad_norm': grad_norm,
             **{f'loss_{n}': l for n, l in per_head.items()}}
  return state, scalars


class TrainStep:
  """`train_step` jitted over the mesh: `(state, sharded batch[, given]) -> (state, scalars)`,
  the state donated (updated in place) and replicated, the batch split over 'data', `given`
  replicated; compiled once for each row count a run meets (a few: `layers.host_rows`)."""

  def __init__(self, heads, parallel: sharding.DataParallel):
    # A class, not jit alone: jit's shardings are positional, and `given` is optional.
    self._jitted = jax.jit(functools.partial(train_step, heads=heads),
                           in_shardings=(parallel.replicated, parallel.batch,
                                         parallel.replicated),
                           out_shardings=(parallel.replicated, parallel.replicated),
                           donate_argnums=0)

  def __call__(self, state, batch, given=None):
    return self._jitted(state, batch, given)

  def lower(self, state, batch, given=None):
    return self._jitted.lower(state, batch, given)


def make_train_step(heads, parallel: sharding.DataParallel) -> TrainStep:
  return TrainStep(heads, parallel)


def check_config(config, ds=None) -> tuple[model_lib.ModelSpec, optax.GradientTransformation,
                                           tuple[str, str]]:
  """Everything that can be wrong with the config alone, raised before any data is read (B14,
  B15, B26): every value in its range, every name looked up, and every input, target and
  source the model names checked against the data set's schema (`ds`, else the one
  `config.data` describes: `data.schema`, from the settings and at most a file's header).

  Returns the model spec, the optimizer and the best-checkpoint metric with its mode ('max' or
  'min').
  """
  configs.validate(config, jax.device_count())
  runner.check_settings(config.evaluation)
  spec = model_lib.resolve(config)
  tx = optimizers.make(config)
  best = runner.best_metric(config, spec.target_kinds)
  schema = ds if ds is not None else data_lib.schema(config.data)
  spec.check(schema)
  runner.check_reported(best[0], {name: (schema.targets[h.settings['target']].shape or (1,))[-1]
                                  for name, h in spec.heads.items()})
  if config.baseline or config.ensemble:
    baselines.output_targets(config)  # binary targets only
  return spec, tx, best


def check_finite(history: list[dict], first_step: int) -> None:
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


def build(spec, ds):
  """`spec.build(ds)`, reading from the train split only the keys its heads are fitted on."""
  keys = spec.train_keys(ds)
  return spec.build(ds, pipeline.read_split(ds.split('train'), keys) if keys else None)


def dry_run(config, out=None) -> dict:
  """`--dry_run`: every check set-up runs, then the resolved config, the data set's sizes and
  the parameter table on `out` (stdout); no workdir, nothing compiled, nothing trained.

  The data set is prepared if it is not yet (into the tfds data dir, as a run would) and read
  and checked, so a dry run also finds every bad cell. Returns what it printed, as a dict.
  """
  out = out or sys.stdout
  spec, _, (best_name, _) = check_config(config)
  ds = data_lib.load_checked(config)
  model, heads = build(spec, ds)
  shapes = jax.eval_shape(model.init, jax.random.key(0), pipeline.example_inputs(ds))
  table, n_params = model_lib.parameter_overview(shapes['params'])
  resolved = json.loads(config.to_json_best_effort())
  resolved['trunk'] = {'kind': trunks_lib.kind_of(type(model.trunk)),
                       **trunks_lib.resolved_settings(model.trunk)}
  resolved['heads'] = {name: {'kind': spec.heads[name].kind, **{
      f.name: dict(getattr(h, f.name)) if f.name == 'loss_options' else getattr(h, f.name)
      for f in dataclasses.fields(h) if f.name not in type(h).fitted}}
                       for name, h in heads.items()}
  resolved['best_metric'] = best_name
  sizes = {s: pipeline.num_rows(ds.split(s)) for s in ds.splits}
  fields = {k: (list(f.shape), f.kind) for k, f in {**ds.inputs, **ds.targets}.items()}
  print('config (resolved):\n' + json.dumps(resolved, indent=2), file=out)
  print(f'data set {ds.name}: ' + ', '.join(f'{s} {n:,}' for s, n in sizes.items())
        + ' examples; fields ' + ', '.join(f'{k} {shape} {kind}' for k, (shape, kind)
                                            in fields.items()), file=out)
  print(f'parameters:\n{table}\ntotal parameters: {n_params:,}', file=out)
  print('dry run: nothing trained, nothing written.', file=out, flush=True)
  return {'config': resolved, 'sizes': sizes, 'fields': fields, 'parameters': n_params,
          'heads': sorted(heads)}


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains (resuming from WORKDIR's last good checkpoint) and evaluates.

  Writes into `workdir`: config.json, metrics.jsonl, tensorboard/, checkpoints/
  (latest and best, with thresholds tuned on validation), metrics.json and the
  report. Everything that can be wrong with the data or the config is raised
  before the workdir is created. With several processes (jax.distributed), every
  process runs this; each reads only its rows of every batch, all write the
  checkpoints together, and only process 0 writes the other files. Returns the
  summary written to metrics.json.
  """
  # ---------------------------------------------------------------- set-up
  spec, tx, (best_name, best_mode) = check_config(config)
  workdir_lib.check_resumable(config, workdir)
  trained_on = workdir_lib.data_trained_on(workdir)
  ds = distributed.first_on_process_0(
      lambda: data_lib.load(config.data, batch_size=config.batch_size),
      'to prepare the data set')
  workdir_lib.check_same_data(workdir, trained_on, ds.fingerprint)  # B28, before any split
  data_lib.check_loaded(ds, config.batch_size)
  n_train = pipeline.num_rows(ds.split('train'))
  config = baselines.ensemble_or_not(config, n_train)
  if config.baseline or config.ensemble:  # what the baseline cannot fit is said now
    baselines.check_fittable(config, ds)
  model, heads = build(spec, ds)
  parallel = sharding.DataParallel.over_all_devices()
  state = train_state.create(model, tx, config.seed, pipeline.example_inputs(ds),
                             parallel.replicated, config.dtype)
  step_fn = make_train_step(heads, parallel)
  eval_fn = runner.make_eval_fn(model, heads, parallel, config.dtype)

  # Label propensities (metrics at k) from the train labels, read a chunk at a time.
  propensity = runner.propensities(heads, ds, ds.split('train'), config.evaluation.propensity_a,
                                   config.evaluation.propensity_b)
  method = config.evaluation.calibration

  def evaluate(params, split, **kw):
    return runner.evaluate_split(eval_fn, params, ds, ds.split(split), config.eval_batch_size,
                                 heads, propensity=propensity, **kw)

  table, n_params = model_lib.parameter_overview(state.params)
  logging.info('Parameters:\n%s', table)
  logging.info('Total parameters: %s', f'{n_params:,}')
  logging.info('%s; computing in %s', distributed.describe(), config.dtype)
  steps_per_epoch = pipeline.steps_per_epoch(n_train, config.batch_size)
  total_steps = steps_per_epoch * config.epochs
  logging.info('Train %d examples: %d steps/epoch x %d epochs = %d steps of batch %d.',
               n_train, steps_per_epoch, config.epochs, total_steps, config.batch_size)

  os.makedirs(workdir, exist_ok=True)
  primary = distributed.is_primary()
  with workdir_lib.WorkdirLock(workdir, enabled=primary), \
      workdir_lib.PreemptionFlag() as preempted, \
      checkpoints.Checkpointer(workdir, max_to_keep=2, best_metric=best_name,
                               best_mode=best_mode) as ckpt:
    # Any manifest, even a damaged one, means there is a run to resume: restore falls back past
    # corrupt steps or raises (B20/B24); starting afresh over them would be silent data loss.
    resumed_extras = {}
    if ckpt.saved_steps():
      state, resumed_extras, step = ckpt.restore(state)
      logging.info('Resuming from step %d of %d (%s).', step, total_steps, ckpt.directory)
      if step >= total_steps:
        logging.info('Training already finished (step %d); evaluating again.', step)
      if primary:
        workdir_lib.drop_records_after(workdir, step)
    # Its counter is rebuilt from the curve the checkpoint carries: resuming stops where an
    # uninterrupted run would.
    stopper = runner.EarlyStopping(config.patience, best_name, best_mode,
                                   resumed_extras.get('best_metric_curve', ()))
    if stopper.should_stop():
      logging.info('Training already stopped early; evaluating again. (%s)', stopper.reason())
    if primary:
      writers.atomic_write(os.path.join(workdir, 'config.json'),
                           config.to_json_best_effort(indent=2))

    with writers.MetricWriter(workdir, enabled=primary) as writer:  # B30: process 0 only
      # ------------------------------------------------------------ the loop
      start_step = int(state.step)
      end_step = start_step if stopper.should_stop() else total_steps
      # Only the fields the step reads: each array in a batch is read, copied and moved.
      batches = pipeline.train_batches(ds.only(*model.reads()), ds.split('train'),
                                       config.batch_size, config.seed, config.epochs,
                                       start_step, rows=parallel.process_rows(config.batch_size))
      history, hist_start, seen, t0 = [], start_step, 0, time.perf_counter()
      with console.progress_bar(total=total_steps, initial=start_step,
                                disable=not (config.progress and primary), unit='step',
                                dynamic_ncols=True) as bar:
        for step in range(start_step, end_step):
          batch = next(batches)
          state, scalars = step_fn(state, parallel.shard(batch), state.host_rows(batch['inputs']))
          history.append(scalars)
          if len(history) > 2:  # at most 2 steps in flight: each holds its batch ([B, K] targets)
            jax.block_until_ready(history[-3])
          seen += config.batch_size
          bar.update(1)
          done = step + 1
          # Counted from this launch's first step: the same count on every process (B29).
          preempt_now = preempted.reached(done - start_step)
          end_of_epoch = done % steps_per_epoch == 0 or done == total_steps
          if len(history) >= config.log_every_steps or end_of_epoch or preempt_now:
            host = jax.device_get(history)
            check_finite(host, hist_start)
            mean = {k: float(np.mean([h[k] for h in host])) for k in host[0]}
            mean['examples_per_s'] = seen / (time.perf_counter() - t0)
            mean['epoch'] = done / steps_per_epoch
            writer.write(done, 'train', mean)
            bar.set_postfix(loss=f'{mean["loss"]:.4f}', ex_s=f'{mean["examples_per_s"]:,.0f}')
            history, hist_start, seen, t0 = [], done, 0, time.perf_counter()
          epoch = -(-done // steps_per_epoch)
          if end_of_epoch and (epoch % config.eval_every_epochs == 0 or done == total_steps):
            evals = evaluate(state.params, 'validation', calibrate=method)
            val = runner.metrics_of(evals)
            for name, m in val.items():
              writer.write(done, f'validation/{name}', {'epoch': epoch, **m})
            bar.write(f'epoch {epoch}: {runner.brief(val)}')
            stopper.update(epoch, val)
            stop = stopper.should_stop()
            if epoch % config.checkpoint_every_epochs == 0 or done == total_steps or stop:
              extras = extras_lib.make(config, ds, heads, runner.tuned_thresholds(evals), epoch,
                                       runner.calibrations(evals, method),
                                       best_metric_curve=stopper.curve)
              ckpt.save(done, state, extras=extras, metrics=runner.flatten(val))
            if stop:
              bar.write(stopper.reason())
              logging.info('%s', stopper.reason())
              break
          if preempt_now:
            ckpt.save(done, state, extras=extras_lib.make(
                config, ds, heads, {}, done // steps_per_epoch, best_metric_curve=stopper.curve))
            logging.warning('SIGTERM: saved step %d; exiting with %d.', done,
                            workdir_lib.PREEMPTED_EXIT_CODE)
            raise SystemExit(workdir_lib.PREEMPTED_EXIT_CODE)

    # -------------------------------------------------------- final evaluation
    trained_steps = int(state.step)
    params_sha256 = manifest_lib.tree_sha256(state.params)  # the parameters training ended with
    logging.info('Trained %d steps; params_sha256 %s', trained_steps, params_sha256)
    # From here on only the best step's parameters are needed. The trained state is that step
    # when training ended on it; otherwise it is dropped before the best one is read, so two
    # states are never held at once (from_csv's bag model: ~0.5 GB each, notes/perf.md).
    best = ckpt.best_step()
    if (best if best is not None else ckpt.latest_step()) != trained_steps:
      target = array_storage.abstract(state)
      state = None
      state, _, _ = ckpt.restore_best(target)
    params, evaluated_step = state.params, int(state.step)
    del state  # the optimizer state
    # The network's scores, held for the ensemble (on every process: the eval step is
    # collective) and then evaluated from; streamed from the model otherwise.
    net = {s: runner.predict_split(eval_fn, params, ds, ds.split(s), config.eval_batch_size,
                                   heads)
           for s in (('validation', 'test') if config.ensemble else ())}

    def final(split, **kw):
      if net:
        return runner.evaluate_predictions(heads, net[split], propensity=propensity, **kw)
      return evaluate(params, split, **kw)

    # Validation again (as at the best checkpoint's epoch): thresholds and calibration fitted
    # there are applied to test.
    val = final('validation', calibrate=method)
    thresholds, calibration = runner.tuned_thresholds(val), runner.calibrations(val, method)
    test = final('test', thresholds=thresholds, calibration=calibration,
                 columns=report.PR_CLASSES)
    summary = {
        'experiment': config.experiment or ds.name,
        'evaluated_step': evaluated_step,
        'best_metric': best_name,
        'parameters': n_params,
        **runner.summarize(heads, val, test, thresholds, calibration),
        'steps': trained_steps,
        'params_sha256': params_sha256,
        'stopped_early': stopper.should_stop(),
    }
    fitted = baselines.fit(config) if primary and (config.baseline or config.ensemble) else None
    if config.ensemble and primary:
      # The sections become the ensemble's (what predict gives); the network's move aside.
      ens, sections, test = ensemble.fit(config, heads, ds, ds.split('train'), net, fitted,
                                         evaluated_step, columns=report.PR_CLASSES)
      summary['network'] = {k: summary[k] for k in sections if k != 'default_thresholds'}
      summary.update(sections, ensemble={**ens.describe(),
                                         'sha256': ensemble.save(workdir, ens)})
    if config.baseline and primary:
      summary['baseline'] = baselines.beside(summary, fitted)
    if primary:
      path = os.path.join(workdir, 'metrics.json')
      writers.write_json(path, summary)
      class_names = {name: ds.class_names(h.target) for name, h in heads.items()}
      written = report.write(workdir, writers.jsonable(summary),
                             {'test': runner.report_details(test)}, class_names)
      logging.info('Wrote %s and %s', path, ', '.join(written))
  return summary
