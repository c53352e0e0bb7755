"""Where a run's numbers go: JSONL always, TensorBoard event files (no TensorFlow)."""

import json
import math
import os

import numpy as np
import tensorboardX


def _plain(v):
  v = float(np.asarray(v))
  return v if math.isfinite(v) else None  # JSON has no NaN; undefined is null.


def jsonable(obj):
  """Nested dicts/lists with NaN and Inf as None (JSON has neither; undefined is null)."""
  if isinstance(obj, dict):
    return {str(k): jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [jsonable(v) for v in obj]
  if isinstance(obj, (float, np.floating)):
    return _plain(obj)
  if isinstance(obj, np.integer):
    return int(obj)
  if isinstance(obj, np.ndarray):
    return jsonable(obj.tolist())
  return obj


class MetricWriter:
  """Appends `{'step', 'split', ...}` lines to WORKDIR/metrics.jsonl and TB scalars."""

  def __init__(self, workdir: str):
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a', encoding='utf-8')
    self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, split: str, scalars: dict) -> None:
    flat = {k: _plain(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({'step': step, 'split': split, **flat}) + '\n')
    self._jsonl.flush()
    for k, v in flat.items():
      if v is not None:
        self._tb.add_scalar(f'{split}/{k}', v, step)

  def close(self) -> None:
    self._jsonl.close()
    self._tb.close()
