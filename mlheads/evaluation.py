"""Evaluation over a whole split: predictions, each output's metrics, tuned thresholds."""

from collections.abc import Callable, Mapping

import jax
import numpy as np

from mlheads import errors
from mlheads import heads as heads_lib
from mlheads import metrics as metrics_lib
from mlheads import thresholds as thresholds_lib
from mlheads.data import base
from mlheads.data import pipeline

# Metrics where lower is better (for picking the best checkpoint).
LOWER_IS_BETTER = ('loss', 'mse', 'mae', 'hamming_loss', 'coverage_error', 'label_ranking_loss',
                   'one_error')


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


def predict_split(eval_fn: Callable, params, ds: base.Dataset, arrays: Mapping[str, np.ndarray],
                  batch_size: int, heads: Mapping[str, heads_lib.Head]) -> dict[str, dict]:
  """Runs the model over every example once.

  Returns output name -> {'scores' [n, K], 'labels' [n, K], 'mask' [n, K],
  'loss' [n]} as numpy, in split order.
  """
  parts = {name: {'scores': [], 'labels': [], 'mask': [], 'loss': []} for name in heads}
  for batch in pipeline.eval_batches(ds, arrays, batch_size):
    valid = batch['valid'] > 0
    scores, losses = jax.device_get(eval_fn(params, batch))
    for name, head in heads.items():
      p = parts[name]
      p['scores'].append(np.asarray(scores[name])[valid])
      p['loss'].append(np.asarray(losses[name])[valid])
      p['labels'].append(batch['targets'][head.target][valid])
      p['mask'].append(batch['masks'][head.target][valid])
  return {name: {k: np.concatenate(v) for k, v in p.items()} for name, p in parts.items()}


def head_metrics(head: heads_lib.Head, out: Mapping[str, np.ndarray],
                 threshold=None) -> dict[str, float]:
  """One output's metrics: its loss plus classification or regression metrics.

  `threshold` (scalar or `[K]`) defaults to the head's own (0.5; 1/C for softmax).
  """
  known_rows = np.asarray(head.known_rows(out['labels'], out['mask']))
  res = {'loss': float(out['loss'][known_rows].mean()) if known_rows.any() else float('nan')}
  if head.target_kind == 'real':
    res.update(regression_metrics(out['labels'], out['scores'], out['mask']))
  else:
    res.update(metrics_lib.compute(out['labels'], out['scores'],
                                   threshold=head.threshold if threshold is None else threshold,
                                   mask=out['mask']))
  return res


def all_metrics(heads, preds, thresholds=None) -> dict[str, dict[str, float]]:
  """Every output's metrics; binary outputs at `thresholds[out]['per_class']` if given."""
  out = {}
  for name, head in heads.items():
    if thresholds is None:
      out[name] = head_metrics(head, preds[name])
    elif name in thresholds:
      out[name] = head_metrics(head, preds[name], np.asarray(thresholds[name]['per_class']))
  return out


def tune_thresholds(heads, preds) -> dict[str, dict]:
  """Per-class thresholds maximizing F1 (and one global one) for each binary output."""
  out = {}
  for name, head in heads.items():
    if head.target_kind == 'binary':
      p = preds[name]
      per_class, global_t = thresholds_lib.tune(p['labels'], p['scores'], p['mask'])
      out[name] = {'per_class': [float(t) for t in per_class], 'global': float(global_t)}
  return out


def flatten(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
  """{'main': {'loss': x}} -> {'main/loss': x}."""
  return {f'{out}/{k}': v for out, m in metrics.items() for k, v in m.items()}


def best_metric(config, heads) -> tuple[str, str]:
  """The validation metric that picks the best checkpoint, and 'max' or 'min'."""
  name = config.best_metric
  if not name:
    first = next(iter(heads))
    name = (f'{first}/average_precision_macro' if heads[first].target_kind == 'binary'
            else f'{first}/loss')
  out, _, metric = name.partition('/')
  if out not in heads:
    raise errors.UsageError(f'--config.best_metric={name!r}: no output {out!r}; outputs are '
                            f'{sorted(heads)} (write OUTPUT/METRIC)')
  return name, 'min' if metric in LOWER_IS_BETTER else 'max'
