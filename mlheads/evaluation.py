"""Evaluation over a whole split: scores, losses and each head's metrics."""

from collections.abc import Callable, Mapping

import jax
import numpy as np

from mlheads import heads as heads_lib
from mlheads import metrics as metrics_lib
from mlheads.data import base
from mlheads.data import pipeline


def regression_metrics(targets, preds, mask) -> dict[str, float]:
  """MSE, MAE and R^2 over the known entries, plus per column."""
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


def head_metrics(head: heads_lib.Head, out: Mapping[str, np.ndarray]) -> dict[str, float]:
  """One output's metrics: the head's loss plus classification or regression metrics."""
  known_rows = out['mask'].sum(-1) > 0
  res = {'loss': float(out['loss'][known_rows].mean()) if known_rows.any() else float('nan')}
  if head.target_kind == 'real':
    res.update(regression_metrics(out['labels'], out['scores'], out['mask']))
  else:
    res.update(metrics_lib.compute(out['labels'], out['scores'], threshold=head.threshold,
                                   mask=out['mask']))
  return res
