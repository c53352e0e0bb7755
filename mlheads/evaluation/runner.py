"""Evaluation over a whole split: the jitted eval step, each output's metrics streamed in
bounded memory (thresholds tuned and calibration fitted on validation), whole-split
predictions, and the metric that picks the best checkpoint.

    eval_fn = make_eval_fn(model, heads, parallel)          # jitted once
    val = evaluate_split(eval_fn, params, ds, arrays, batch_size, heads, calibrate='platt')
    test = evaluate_split(..., thresholds=tuned_thresholds(val), calibration=calibrations(val))
    evals = evaluate_predictions(heads, {output: {'scores', 'labels', 'mask', 'loss'}}, ...)
    summary = summarize(heads, val, test, ...)
    preds = predict_split(eval_fn, params, ds, arrays, batch_size, heads)   # scores [n, K]
"""

import dataclasses
import difflib
import functools
import re
from collections.abc import Callable, Iterable, Mapping

import jax
import numpy as np

from mlheads import errors
from mlheads.data import checks
from mlheads.data import pipeline
from mlheads.evaluation import calibration as calibration_lib
from mlheads.evaluation import metrics as metrics_lib
from mlheads.evaluation import streaming
from mlheads.model import model as model_lib
from mlheads.state import host_memory

# Metrics where lower is better (for picking the best checkpoint).
LOWER_IS_BETTER = ('loss', 'mse', 'mae', 'hamming_loss', 'coverage_error', 'label_ranking_loss',
                   'one_error')


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


def make_eval_fn(model, heads, parallel, dtype: str = 'float32') -> Callable:
  """`(params, global host batch) -> (scores, losses)`: `eval_step` jitted once over the
  mesh, computing in `dtype` (model.ComputeIn), as training does."""
  step = jax.jit(functools.partial(eval_step, apply_fn=model_lib.ComputeIn(model.apply, dtype),
                                   heads=heads),
                 in_shardings=(parallel.replicated, parallel.batch),
                 out_shardings=parallel.replicated)
  return lambda params, batch: step(params, parallel.shard_global(batch))


def predict_split(eval_fn: Callable, params, ds, split, batch_size: int,
                  heads) -> dict[str, dict]:
  """Runs the model over every example of `split` (a source or `{key: [n, ...]}` arrays)
  once, streaming it in batches.

  Returns output name -> {'scores' [n, K], 'labels' [n, K], 'mask' [n, K],
  'loss' [n]} as numpy, in split order.
  """
  parts = {name: {'scores': [], 'labels': [], 'mask': [], 'loss': []} for name in heads}
  for batch in pipeline.eval_batches(ds, split, batch_size):
    valid = batch['valid'] > 0
    scores, losses = jax.device_get(eval_fn(params, batch))
    for name, head in heads.items():
      p = parts[name]
      p['scores'].append(np.asarray(scores[name])[valid])
      p['loss'].append(np.asarray(losses[name])[valid])
      p['labels'].append(batch['targets'][head.target][valid])
      p['mask'].append(batch['masks'][head.target][valid])
  return {name: {k: np.concatenate(v) for k, v in p.items()} for name, p in parts.items()}


def regression_metrics(targets, preds, mask) -> dict[str, float]:
  """MSE, MAE and R^2 over the known entries, plus R^2 per column (`r2_<k>`)."""
  known = mask > 0
  err = np.where(known, preds - targets, 0.0)
  n = max(int(known.sum()), 1)
  out = {'mse': float((err**2).sum() / n), 'mae': float(np.abs(err).sum() / n)}
  for k in range(targets.shape[1]):
    y, e = targets[known[:, k], k], err[known[:, k], k]
    var = float(((y - y.mean())**2).sum()) if len(y) else 0.0
    out[f'r2_{k}'] = 1.0 - float((e**2).sum()) / var if var > 0 else float('nan')
  return out


@dataclasses.dataclass
class OutputEval:
  """One output's evaluation over a split.

  Attributes:
    metrics: 'own' (at the head's own threshold) and, if thresholds were given, 'tuned'
      -> {metric: value}, the loss included.
    result: the streaming result (binary outputs): per-class arrays, tuned thresholds,
      calibration, ECE, kept columns.
    arrays: a regression output's whole-split {'scores', 'labels', 'mask'} `[n, K]`.
  """
  metrics: dict[str, dict[str, float]]
  result: streaming.Result | None = None
  arrays: dict[str, np.ndarray] | None = None


def evaluate_split(eval_fn: Callable, params, ds, split, batch_size: int, heads,
                   **kw) -> dict[str, OutputEval]:
  """Every output's metrics over a split (a source read from the prepared files, or arrays),
  streamed: no `[n, K]` array of a binary output is ever held (streaming.py), so K and n are
  bounded by disk, not memory.

  Args:
    eval_fn, params, ds, split, batch_size, heads: as for `predict_split`.
    **kw: `evaluate_batches`' settings (propensity, thresholds, calibration, calibrate,
      columns, directory).
  """
  def batches():
    for batch in pipeline.eval_batches(ds, split, batch_size):
      valid = batch['valid'] > 0
      scores, losses = jax.device_get(eval_fn(params, batch))
      yield {name: (np.asarray(scores[name])[valid], np.asarray(losses[name])[valid],
                    batch['targets'][h.target][valid], batch['masks'][h.target][valid])
             for name, h in heads.items()}
  out = evaluate_batches(heads, pipeline.num_rows(split), batches(), **kw)
  host_memory.release()  # the pass's decoded batches, sorted keys, calibration fits
  return out


def evaluate_predictions(heads, predictions: Mapping[str, Mapping[str, np.ndarray]],
                         batch_size: int = 4096, **kw) -> dict[str, OutputEval]:
  """`evaluate_split` on scores at hand (a model fitted elsewhere, the baselines):
  `predictions` output -> {'scores', 'labels', 'mask' `[n, K]`, 'loss' `[n]`}."""
  n = len(next(iter(predictions.values()))['scores'])
  batches = ({name: tuple(p[k][i:i + batch_size] for k in ('scores', 'loss', 'labels', 'mask'))
              for name, p in predictions.items()} for i in range(0, n, batch_size))
  return evaluate_batches(heads, n, batches, **kw)


def evaluate_batches(heads, n: int, batches: Iterable[Mapping[str, tuple]], *,
                     propensity: Mapping[str, np.ndarray] | None = None,
                     thresholds: Mapping[str, dict] | None = None,
                     calibration: Mapping[str, dict] | None = None, calibrate: str = 'none',
                     columns: int = 0, directory: str | None = None) -> dict[str, OutputEval]:
  """Every output's metrics over `n` rows fed in batches.

  Args:
    heads: output -> head.
    n: the rows `batches` hold in all.
    batches: each {output: (scores `[b, K]`, losses `[b]`, labels `[b, K]`, mask `[b, K]`)}
      of valid rows only.
    propensity: output -> `[K]` label propensities of the train split (PSP@k, PSnDCG@k);
      default all 1.
    thresholds: output -> {'per_class': [K]}: also count the threshold metrics there ('tuned').
    calibration: output -> {'a': [K], 'b': [K]} to measure the ECE after (fitted elsewhere).
    calibrate: 'platt' / 'temperature': fit each binary output's calibration on this split.
    columns: keep that many classes' columns (most positives first) for PR curves.
    directory: where the key stores spill (default: the system's temporary directory).
  """
  thresholds, calibration, propensity = thresholds or {}, calibration or {}, propensity or {}
  accs, dense, loss = {}, {}, {name: [0.0, 0] for name in heads}
  for name, head in heads.items():
    if head.target_kind != 'binary':
      dense[name] = {'scores': [], 'labels': [], 'mask': []}
      continue
    t = {'own': head.threshold}
    if name in thresholds:
      t['tuned'] = np.asarray(thresholds[name]['per_class'], np.float32)
    p = propensity.get(name)
    accs[name] = streaming.Accumulator(head.num_classes, n, thresholds=t, directory=directory,
                                       inv_propensity=None if p is None else 1.0 / np.asarray(p))
  for batch in batches:
    for name, head in heads.items():
      s, losses, labels, mask = batch[name]
      known = np.asarray(head.known_rows(labels, mask))
      loss[name][0] += float(np.asarray(losses)[known].sum(dtype=np.float64))
      loss[name][1] += int(known.sum())
      if name in accs:
        y, s32, _, v = metrics_lib.check_inputs(labels, np.asarray(s), 0.5, mask)
        accs[name].add(y, s32, v)
      else:
        for key, value in (('scores', s), ('labels', labels), ('mask', mask)):
          dense[name][key].append(np.asarray(value))
  out = {}
  for name in heads:
    mean_loss = {'loss': loss[name][0] / loss[name][1] if loss[name][1] else float('nan')}
    if name in accs:
      cal = calibration.get(name)
      r = accs[name].finish(tune=True, calibrate=calibrate, columns=columns,
                            calibration=None if cal is None else (np.asarray(cal['a']),
                                                                  np.asarray(cal['b'])))
      out[name] = OutputEval({k: {**mean_loss, **m} for k, m in r.metrics.items()}, result=r)
    else:
      a = {k: np.concatenate(v) for k, v in dense[name].items()}
      out[name] = OutputEval({'own': {**mean_loss, **regression_metrics(
          a['labels'], a['scores'], a['mask'])}}, arrays=a)
  return out


def metrics_of(evals: Mapping[str, OutputEval], which: str = 'own') -> dict[str, dict]:
  """output -> {metric: value} at 'own' or 'tuned' thresholds (outputs that have them)."""
  return {name: e.metrics[which] for name, e in evals.items() if which in e.metrics}


def tuned_thresholds(evals: Mapping[str, OutputEval]) -> dict[str, dict]:
  """`{output: {'per_class': [K]}}`: each binary output's per-class F1-best thresholds, for
  the extras. (The accumulator also finds one global threshold; nothing uses it, so it is
  neither stored nor reported.)"""
  return {name: {'per_class': [float(t) for t in e.result.tuned]}
          for name, e in evals.items() if e.result is not None}


def calibrations(evals: Mapping[str, OutputEval], method: str) -> dict[str, dict]:
  """The calibration fitted on a split (`calibrate=method`), for the extras."""
  return {name: {'method': method, 'a': e.result.calibration[0].tolist(),
                 'b': e.result.calibration[1].tolist()}
          for name, e in evals.items()
          if e.result is not None and e.result.calibration is not None}


def propensities(heads, ds, train, a: float, b: float) -> dict[str, np.ndarray]:
  """Each binary output's label propensities (Jain et al. 2016) from the train split (a
  source or arrays), its labels read a chunk at a time."""
  out = {}
  for name, head in heads.items():
    if head.target_kind == 'binary':
      key = head.target
      positives, rows = 0, 0
      for part in pipeline.chunks(train, list(ds.targets[key].stored(key))):
        p, r = checks.positives(ds, part, key)
        positives, rows = positives + p, rows + r
      out[name] = metrics_lib.propensities(positives, rows, a, b)
  return out


def default_thresholds(heads) -> dict[str, float]:
  """Each binary output's own decision threshold (0.5; 1/C for softmax), for the report."""
  return {name: float(h.threshold) for name, h in heads.items() if h.target_kind == 'binary'}


def summarize(heads, validation: Mapping[str, OutputEval], test: Mapping[str, OutputEval],
              thresholds: dict, calibration: dict) -> dict:
  """The final evaluation's sections: validation and test at each head's own threshold,
  test at the per-class `thresholds` tuned on validation, both sets of thresholds, and each
  output's class-wise ECE before and after the calibration fitted on validation."""
  ece = {name: {'method': calibration[name]['method'],
                'validation': validation[name].result.ece, 'test': test[name].result.ece}
         for name in calibration if test[name].result.ece is not None}
  return {
      'validation': metrics_of(validation),
      'test': metrics_of(test),
      'test_tuned': metrics_of(test, 'tuned'),
      'thresholds': thresholds,
      'default_thresholds': default_thresholds(heads),
      'calibration': ece,
  }


def report_details(evals: Mapping[str, OutputEval]) -> dict[str, dict]:
  """What the report draws per output: per-class arrays at the head's own and the tuned
  thresholds, the kept columns (PR curves), the reliability bins; a regression's arrays."""
  out = {}
  for name, e in evals.items():
    if e.result is None:
      out[name] = {'arrays': e.arrays}
      continue
    r = e.result
    out[name] = {'per_class': r.per_class, 'columns': r.columns,
                 'reliability': r.reliability, 'ece': r.ece}
  return out


def brief(metrics: Mapping[str, Mapping[str, float]]) -> str:
  """'main loss 0.4123 mAP 0.9012 AUC 0.8990, aux ...': an epoch's validation in one line."""
  return ', '.join(
      f'{n} loss {m["loss"]:.4f}' + ''.join(
          f' {short} {m[key]:.4f}' for key, short in (
              ('average_precision_macro', 'mAP'), ('roc_auc_macro', 'AUC'))
          if key in m and np.isfinite(m[key]))
      for n, m in metrics.items())


def flatten(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
  """{'main': {'loss': x}} -> {'main/loss': x}."""
  return {f'{out}/{k}': v for out, m in metrics.items() for k, v in m.items()}


def check_settings(evaluation) -> None:
  """`config.evaluation`'s values (B26), before any data is read."""
  if evaluation.calibration not in calibration_lib.METHODS:
    raise errors.UsageError(f'--config.evaluation.calibration={evaluation.calibration!r}: '
                            f'use one of {list(calibration_lib.METHODS)}')
  if not evaluation.propensity_a > 0 or not evaluation.propensity_b >= 0:
    raise errors.UsageError('--config.evaluation.propensity_a must be > 0 and propensity_b >= 0,'
                            f' got {evaluation.propensity_a} and {evaluation.propensity_b}')


def metric_names(target_kind: str) -> tuple[str, ...]:
  """The metrics an output of this target kind reports ('r2_<k>': one per regression column)."""
  if target_kind == 'real':
    return ('loss', 'mse', 'mae', 'r2_<k>')
  return ('loss',) + tuple(metrics_lib.KEYS)


def best_metric(config, target_kinds: Mapping[str, str]) -> tuple[str, str]:
  """The validation metric that picks the best checkpoint, and 'max' or 'min'.

  Checked before anything runs (B26): `config.best_metric` is OUTPUT/METRIC (an optional
  leading 'validation/' is dropped: checkpoints are always chosen on validation), and both
  parts are names the run will report. target_kinds: output name -> 'binary' or 'real'
  (`ModelSpec.target_kinds`).
  """
  name = config.best_metric
  if not name:
    first = next(iter(target_kinds))
    name = (f'{first}/average_precision_macro' if target_kinds[first] == 'binary'
            else f'{first}/loss')
  flag = f'--config.best_metric={name!r}'
  if name.startswith('validation/'):
    name = name[len('validation/'):]
  elif name.split('/')[0] in ('test', 'test_tuned') and name.split('/')[0] not in target_kinds:
    raise errors.UsageError(f'{flag}: the best checkpoint is chosen on validation, never on '
                            'test; write OUTPUT/METRIC')
  out, _, metric = name.partition('/')
  if out not in target_kinds:
    raise errors.UsageError(f'{flag}: no output {out!r}; the outputs are '
                            f'{", ".join(map(repr, sorted(target_kinds)))} (write OUTPUT/METRIC)')
  known = metric_names(target_kinds[out])
  if metric not in known and not (target_kinds[out] == 'real'
                                  and re.fullmatch(r'r2_\d+', metric)):
    near = [k for k in known if metric and k.startswith(metric)] or difflib.get_close_matches(
        metric, known, n=2)
    raise errors.UsageError(f'{flag}: output {out!r} reports no metric {metric!r}'
                            + (f'; did you mean {" or ".join(map(repr, near))}?' if near else '')
                            + f'; its metrics are {", ".join(known)}')
  return name, 'min' if metric in LOWER_IS_BETTER else 'max'


def check_reported(best: str, widths: Mapping[str, int]) -> None:
  """The best-checkpoint metric `best` (OUTPUT/METRIC) is one its output reports at its width
  (`widths`: output -> number of labels, 0 if not known before the data is read): a one-label
  output reports no ranking metric (B26), so choosing by one would fail after the first epoch."""
  out, _, metric = best.partition('/')
  if widths.get(out) == 1 and metric in metrics_lib.RANKING_KEYS:
    raise errors.UsageError(
        f'--config.best_metric={best!r}: output {out!r} has one label, and metrics that rank a '
        f'row\'s labels ({", ".join(metrics_lib.RANKING_KEYS)}) say nothing there and are not '
        'reported; choose another, e.g. average_precision_macro or roc_auc_macro')


class EarlyStopping:
  """Stops training once the best metric on validation has gone `patience` epochs without
  improving (`patience` 0: never).

  Its whole state is the curve of that metric, `[[epoch, value], ...]` in the order evaluated,
  which every checkpoint carries (state/extras.py): a resumed run rebuilds the counter exactly.
  "Improving" is strictly better than every earlier value, as the best checkpoint is chosen
  (ties go to the earlier epoch); an undefined value (NaN) never improves.
  """

  def __init__(self, patience: int, metric: str, mode: str, curve=()):
    self.patience, self.metric, self.mode = patience, metric, mode
    self.curve = [[int(e), None if v is None else float(v)] for e, v in curve]  # a copy

  def update(self, epoch: int, metrics: Mapping[str, Mapping[str, float]]) -> None:
    """Records `epoch`'s validation metrics (`metrics_of`' output)."""
    out, _, key = self.metric.partition('/')
    value = metrics.get(out, {}).get(key)
    defined = value is not None and np.isfinite(value)  # None, not NaN: extras are strict JSON
    self.curve.append([int(epoch), float(value) if defined else None])

  def best(self) -> tuple[int, float | None]:
    """(epoch, value) of the best evaluation so far; (0, None) before any finite one."""
    best_epoch, best = 0, None
    for epoch, v in self.curve:
      if v is not None and (best is None or (v > best if self.mode == 'max' else v < best)):
        best_epoch, best = epoch, v
    return best_epoch, best

  def stale_epochs(self) -> int:
    """Epochs evaluated since the best one (all of them before any finite value)."""
    return self.curve[-1][0] - self.best()[0] if self.curve else 0

  def should_stop(self) -> bool:
    return self.patience > 0 and bool(self.curve) and self.stale_epochs() >= self.patience

  def reason(self) -> str:
    epoch, value = self.best()
    best = 'never defined' if value is None else f'best {value:.4f} at epoch {epoch}'
    return (f'early stopping after epoch {self.curve[-1][0]}: validation {self.metric} has not '
            f'improved for {self.stale_epochs()} epochs (patience {self.patience}; {best})')
