"""Where a run's numbers go: JSONL always, TensorBoard event files (no TensorFlow), and
files written whole or not at all."""

import json
import math
import os
from collections.abc import Callable
from typing import TextIO

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


def atomic_write(path: str, content: str | bytes | Callable[[TextIO], None], *,
                 fsync: bool = False, newline: str | None = None) -> None:
  """Writes `path` whole or not at all: into `path + '.tmp'`, then `os.replace`.

  content: the text, bytes (written as they are), or a function writing text to the open
  file. With `fsync` the bytes reach the disk before the rename (for commit markers). A
  failure removes the temporary file and leaves an existing `path` untouched.
  """
  tmp = path + '.tmp'
  binary = isinstance(content, bytes)
  try:
    with (open(tmp, 'wb') if binary else
          open(tmp, 'w', encoding='utf-8', newline=newline)) as f:
      if isinstance(content, (str, bytes)):
        f.write(content)
      else:
        content(f)
      if fsync:
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    try:
      os.remove(tmp)
    except OSError:
      pass
    raise


def write_json(path: str, obj) -> None:
  """`obj` as indented JSON (NaN and Inf as null), written atomically."""
  atomic_write(path, json.dumps(jsonable(obj), indent=2))


class MetricWriter:
  """Appends `{'step', 'split', ...}` lines to WORKDIR/metrics.jsonl and TB scalars.

  `enabled=False` (every process but 0 of a multi-process run, B30) opens and writes
  nothing: the processes log the same numbers, and one file must hold them once.
  """

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.enabled = enabled
    if not enabled:
      return
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a', encoding='utf-8')
    self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, split: str, scalars: dict) -> None:
    if not self.enabled:
      return
    flat = {k: _plain(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({'step': step, 'split': split, **flat}) + '\n')
    self._jsonl.flush()
    for k, v in flat.items():
      if v is not None:
        self._tb.add_scalar(f'{split}/{k}', v, step)

  def close(self) -> None:
    if not self.enabled:
      return
    self._jsonl.close()
    self._tb.close()

  def __enter__(self) -> 'MetricWriter':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def read_jsonl(path) -> tuple[list[dict], int]:
  """Records of metrics.jsonl and the count of unreadable lines.

  A run killed mid-write leaves a truncated last line: skip it, don't fail.
  """
  records, bad = [], 0
  if not os.path.exists(path):
    return records, bad
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  for line in lines:
    try:
      r = json.loads(line)
    except json.JSONDecodeError:
      r = None
    if isinstance(r, dict) and isinstance(r.get('split'), str):
      records.append(r)
    else:
      bad += 1
  return records, bad
