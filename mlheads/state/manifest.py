"""The sha256 manifest that makes a checkpoint step count as committed (B17, B20).

`<step>/manifest.json` holds every other file's size and sha256, the saved tree's
paths / shapes / dtypes and the step's metrics, plus a hash of itself. It is
written last, atomically (temp file, fsync, os.replace), so a step whose
manifest is missing was never committed, and one whose files disagree with it
is corrupt.
"""

import hashlib
import json
import math
import os
from typing import Any

import jax
import numpy as np

from mlheads.state import writers

MANIFEST = 'manifest.json'
FORMAT = 1


def sha256(path: str) -> str:
  with open(path, 'rb') as f:
    return hashlib.file_digest(f, 'sha256').hexdigest()


def list_files(step_dir: str) -> list[str]:
  """Relative paths of all files under step_dir except our manifest, sorted."""
  out = []
  for root, _, files in os.walk(step_dir):
    for name in files:
      rel = os.path.relpath(os.path.join(root, name), step_dir)
      if rel not in (MANIFEST, MANIFEST + '.tmp'):
        out.append(rel)
  return sorted(out)


def self_hash(manifest: dict[str, Any]) -> str:
  body = {k: v for k, v in manifest.items() if k != 'selfsha256'}
  return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def fsync_dir(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def write(step_dir: str, manifest: dict[str, Any]) -> None:
  """Writes manifest.json atomically: it is the commit marker, so it must never be half there."""
  manifest = dict(manifest, selfsha256=self_hash(manifest))
  writers.atomic_write(os.path.join(step_dir, MANIFEST), json.dumps(manifest, indent=1),
                       fsync=True)
  fsync_dir(step_dir)


def read(step_dir: str) -> tuple[dict[str, Any] | None, str | None]:
  """(manifest, None) if valid; (None, reason) otherwise; reason None means 'not committed'."""
  path = os.path.join(step_dir, MANIFEST)
  try:
    with open(path, 'rb') as f:
      manifest = json.loads(f.read().decode('utf-8'))
  except FileNotFoundError:
    return None, None
  except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors.
    return None, f'{path} is unreadable ({e})'
  if not isinstance(manifest, dict) or manifest.get('selfsha256') != self_hash(manifest):
    return None, f'{path} fails its self-hash'
  if manifest.get('format') != FORMAT:
    return None, f'{path} has format {manifest.get("format")!r}, this code reads {FORMAT}'
  return manifest, None


def verify_files(step_dir: str, manifest: dict[str, Any]) -> str | None:
  """What differs between step_dir and its manifest, naming every bad file; None if nothing."""
  expected = manifest['files']
  actual = set(list_files(step_dir))
  problems = []
  for rel in sorted(expected):
    path = os.path.join(step_dir, rel)
    if rel not in actual:
      problems.append(f'{path} is missing')
    elif (size := os.path.getsize(path)) != expected[rel]['size']:
      problems.append(f'{path} has {size} bytes, manifest says {expected[rel]["size"]}')
    elif sha256(path) != expected[rel]['sha256']:
      problems.append(f'{path} does not match its sha256 (corrupted or swapped)')
  problems += [f'{os.path.join(step_dir, rel)} is not in the manifest'
               for rel in sorted(actual - set(expected))]
  return '; '.join(problems) or None


# ----------------------------------------------------------------------------- what is saved


def leaf_record(x: Any) -> tuple[tuple[int, ...], str]:
  """(shape, dtype) of a leaf; Python scalars get 'py:<type>' since they carry no width."""
  if isinstance(x, bool):
    return (), 'py:bool'
  if isinstance(x, int):
    return (), 'py:int'
  if isinstance(x, float):
    return (), 'py:float'
  if hasattr(x, 'shape') and hasattr(x, 'dtype'):
    return tuple(int(d) for d in x.shape), str(x.dtype)
  raise TypeError(f'checkpoint leaves must be arrays or Python scalars, got {type(x).__name__}')


def tree_sha256(tree: Any) -> str:
  """A fingerprint of a pytree of arrays (the parameters a run ends with, `params_sha256` in
  metrics.json), so runs can be compared from outside: 1 vs 2 processes, resumed vs not.

  SHA-256 over the leaves in path order (sorted by `jax.tree_util.keystr`), each as its
  path, dtype and shape on one line, then its bytes (C order, little-endian as numpy
  stores them on every platform JAX runs on).
  """
  h = hashlib.sha256()
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  for path, leaf in sorted(leaves, key=lambda pl: jax.tree_util.keystr(pl[0])):
    a = np.ascontiguousarray(jax.device_get(leaf))
    h.update(f'{jax.tree_util.keystr(path)} {a.dtype.str} {list(a.shape)}\n'.encode())
    h.update(a.reshape(-1).view(np.uint8))  # the bytes in place: no copy of a 100 MB table
  return h.hexdigest()


def tree_record(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  """Maps each leaf's key path (as jax.tree_util.keystr prints it) to (shape, dtype)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): leaf_record(x) for path, x in leaves}


def dtypes_agree(saved: str, expected: str) -> bool:
  """Exact dtype match, except that a Python scalar matches any dtype of its kind.

  A fresh TrainState holds `step=0` (a Python int) while a trained one holds an int32 array;
  both are the same value with no width to lose, so neither side is a silent cast.
  """
  if saved == expected:
    return True
  kinds = {'py:bool': 'b', 'py:int': 'iu', 'py:float': 'f'}
  for py, other in ((saved, expected), (expected, saved)):
    if py in kinds and not other.startswith('py:'):
      return np.dtype(other).kind in kinds[py]
  return False


def structure_diffs(saved: dict[str, Any], expected: dict[str, Any]) -> list[str]:
  """Human-readable differences between a saved and an expected tree record."""
  diffs = []
  for path in expected:
    if path not in saved:
      diffs.append(f'{path}: expected {_record_str(expected[path])} but not in checkpoint')
      continue
    (s_shape, s_dtype), (e_shape, e_dtype) = saved[path], expected[path]
    if tuple(s_shape) != tuple(e_shape) or not dtypes_agree(s_dtype, e_dtype):
      diffs.append(f'{path}: saved {_record_str(saved[path])}, expected {_record_str(expected[path])}')
  diffs += [f'{p}: saved {_record_str(saved[p])} but not expected' for p in saved if p not in expected]
  return diffs


def _record_str(record) -> str:
  shape, dtype = record
  return f'{tuple(shape)} {dtype}'


def nonfinite_paths(tree: Any) -> list[str]:
  """Key paths of inexact leaves holding NaN or Inf; one device->host transfer for all of them."""
  paths, checks = [], []
  for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if isinstance(x, float):
      if not math.isfinite(x):
        paths.append(jax.tree_util.keystr(path))
    elif hasattr(x, 'dtype') and jax.numpy.issubdtype(x.dtype, jax.numpy.inexact):  # bf16 too.
      xp = jax.numpy if isinstance(x, jax.Array) else np
      checks.append((jax.tree_util.keystr(path), xp.all(xp.isfinite(x))))
  flags = jax.device_get([c for _, c in checks])
  return paths + [p for (p, _), ok in zip(checks, flags) if not ok]


def json_problem(obj: Any, path: str = 'extras') -> str | None:
  """Where `obj` stops being strict JSON (no NaN, str keys), or None if it is fine."""
  if isinstance(obj, dict):
    for k, v in obj.items():
      if not isinstance(k, str):
        return f'{path}: key {k!r} is not a string'
      if (p := json_problem(v, f'{path}[{k!r}]')) is not None:
        return p
    return None
  if isinstance(obj, (list, tuple)):
    return next((p for i, v in enumerate(obj) if (p := json_problem(v, f'{path}[{i}]'))), None)
  if isinstance(obj, float) and not math.isfinite(obj):
    return f'{path}: {obj} is not valid JSON'
  if obj is None or isinstance(obj, (str, int, float)):
    return None
  return f'{path}: {type(obj).__name__} is not JSON-serialisable (convert it to list/float first)'


def plain_metrics(metrics: dict | None, best_metric: str | None) -> dict[str, float | None] | None:
  """Metrics as plain floats for the manifest; NaN/Inf become null (undefined, never best)."""
  if metrics is None:
    return None
  out = {}
  for k, v in metrics.items():
    try:
      v = float(np.asarray(v))
    except (TypeError, ValueError) as e:
      raise TypeError(f'metric {k!r} must be a scalar number, got {type(v).__name__}') from e
    out[str(k)] = v if math.isfinite(v) else None
  if best_metric is not None and best_metric not in out:
    raise ValueError(f'best_metric {best_metric!r} is not among the metrics passed to '
                     f'save: {sorted(out)}')
  return out
