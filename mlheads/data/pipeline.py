"""Grain pipelines: shuffled training batches and complete evaluation batches.

The training order is a pure function of (seed, step): batch `s` is element `s`
of a grain MapDataset over a new permutation each epoch, so a resumed run sees
exactly the batches an uninterrupted one would. Evaluation covers every example: the
last partial batch is padded and its padding masked out through `valid`.

A batch is `{'inputs': {key: [B, ...]}, 'targets': {key: [B, K]},
'masks': {key: [B, K]}, 'valid': [B]}`.
"""

import functools
from collections.abc import Iterator, Mapping

import grain
import numpy as np

from mlheads.data import base


class ArraySource:
  """A grain random-access source over a dict of equally long arrays."""

  def __init__(self, arrays: Mapping[str, np.ndarray]):
    self.arrays = dict(arrays)
    self._n = len(next(iter(self.arrays.values())))

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    return {k: v[i] for k, v in self.arrays.items()}


def read_split(source, chunk: int = 4096) -> dict[str, np.ndarray]:
  """Reads a whole tfds data source into `{key: [n, ...]}` arrays.

  The data sets here are small (at most tens of MB), so each split is read once
  and checked as a whole before anything compiles.
  """
  n = len(source)
  parts = []
  for start in range(0, n, chunk):
    keys = list(range(start, min(n, start + chunk)))
    records = source.__getitems__(keys) if hasattr(source, '__getitems__') else [
        source[i] for i in keys]
    parts.append({k: np.stack([np.asarray(r[k]) for r in records]) for k in records[0]})
  if not parts:
    return {}
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _structure(ds: base.Dataset, flat: dict[str, np.ndarray], valid: np.ndarray) -> dict:
  """A batch of stored records -> the step's structure; sparse targets are densified here,
  per batch, and nowhere else."""
  batch = {'inputs': {k: flat[k] for k in ds.inputs}, 'targets': {}, 'masks': {}, 'valid': valid}
  for k, f in ds.targets.items():
    batch['targets'][k], batch['masks'][k] = f.densify(flat, k)
  return batch


def positives(ds: base.Dataset, arrays: Mapping[str, np.ndarray], key: str) -> tuple[np.ndarray,
                                                                                      int]:
  """Target `key`'s known positives per class `[K]` int64 over a split, and the number of
  rows with a known label (without densifying a sparse target)."""
  f = ds.targets[key]
  k = int(np.prod(f.shape))
  if f.sparse:
    idx = np.asarray(arrays[key])
    known = np.ones(len(idx), bool) if f'{key}_mask' not in arrays else (
        np.asarray(arrays[f'{key}_mask']).reshape(len(idx)) > 0)
    hits = idx[known]
    return np.bincount(hits[hits >= 0], minlength=k).astype(np.int64), int(known.sum())
  y, m = f.densify(arrays, key)
  y, m = y.reshape(len(y), -1), m.reshape(len(m), -1) > 0
  return np.where(m, y, 0).sum(0).astype(np.int64), int(m.any(1).sum())


def num_rows(arrays: Mapping[str, np.ndarray]) -> int:
  """The number of examples in a split's `{key: [n, ...]}` arrays."""
  return len(next(iter(arrays.values())))


def steps_per_epoch(n: int, batch_size: int) -> int:
  return n // batch_size


def example_inputs(ds: base.Dataset) -> dict[str, np.ndarray]:
  """One all-zero example of every input, `{key: [1, ...]}`: what a model is initialized on."""
  return {k: np.zeros((1,) + f.shape, f.dtype) for k, f in ds.inputs.items()}


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
  """The order of the n examples in epoch `epoch`: a pure function of (seed, epoch)."""
  return np.random.default_rng((seed, epoch)).permutation(n)


def train_dataset(ds: base.Dataset, arrays: dict[str, np.ndarray], batch_size: int,
                  seed: int, num_epochs: int) -> grain.MapDataset:
  """Batch `s` of the result is training step `s`'s batch.

  The epochs' shuffled orders are concatenated and cut into batches (the last partial one
  dropped); each batch gathers its rows with one indexing per array, so a batch costs
  microseconds, not a Python call per example (notes/perf.md).
  """
  ones = np.ones((batch_size,), np.float32)
  n = num_rows(arrays)

  def batch(step):
    position = np.arange(step * batch_size, (step + 1) * batch_size)
    epoch, index = np.divmod(position, n)
    rows = np.empty_like(index)
    for e in np.unique(epoch):  # one epoch, or two where the batch straddles a boundary
      rows[epoch == e] = _epoch_order(seed, int(e), n)[index[epoch == e]]
    return _structure(ds, {k: v[rows] for k, v in arrays.items()}, ones)

  return grain.MapDataset.range(n * num_epochs // batch_size).map(batch)


def train_batches(ds: base.Dataset, arrays: dict[str, np.ndarray], batch_size: int,
                  seed: int, num_epochs: int, start_step: int = 0,
                  prefetch: int = 8) -> Iterator[dict]:
  """Training batches from `start_step` on, prefetched by background threads."""
  data = train_dataset(ds, arrays, batch_size, seed, num_epochs)[start_step:]
  return iter(data.to_iter_dataset(
      grain.ReadOptions(num_threads=2, prefetch_buffer_size=prefetch)))


def eval_batches(ds: base.Dataset, arrays: dict[str, np.ndarray],
                 batch_size: int) -> Iterator[dict]:
  """Every example once, in order; the last batch padded with `valid` = 0."""
  n = len(next(iter(arrays.values())))
  for start in range(0, n, batch_size):
    stop = min(n, start + batch_size)
    flat = {k: v[start:stop] for k, v in arrays.items()}
    valid = np.ones((batch_size,), np.float32)
    if stop - start < batch_size:
      pad = batch_size - (stop - start)
      flat = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in flat.items()}
      valid[stop - start:] = 0.0
    yield _structure(ds, flat, valid)
