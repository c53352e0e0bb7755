"""Grain pipelines that stream a split by index: shuffled training batches, complete
evaluation batches.

A split is a *source*: `len(source)` examples and `source.read(indices)` returning
`{key: [len(indices), ...]}`, either `ArraySource` (arrays in memory) or
`records.RecordSource` (the prepared array_record files, read batch by batch, so a data
set need not fit in memory). The training order is a pure function of (seed, step): batch
`s` is element `s` of a grain MapDataset over a new permutation each epoch, so a resumed
run sees exactly the batches an uninterrupted one would. With several processes each reads
only its own rows of every global batch. Evaluation covers every example: the last partial
batch is padded and its padding masked out through `valid`.

A batch is `{'inputs': {key: [B, ...]}, 'targets': {key: [B, K]},
'masks': {key: [B, K]}, 'valid': [B]}`.
"""

import functools
from collections.abc import Iterator, Mapping, Sequence

import grain
import numpy as np

from mlheads.data import base


class ArraySource:
  """A split held in memory: a dict of equally long arrays, read by index."""

  def __init__(self, arrays: Mapping[str, np.ndarray]):
    self.arrays = dict(arrays)
    self._n = len(next(iter(self.arrays.values())))

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    return {k: v[i] for k, v in self.arrays.items()}

  def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[indices] for k, v in self.arrays.items()}


def as_source(split):
  """A source as it is; a `{key: [n, ...]}` dict of arrays as an ArraySource."""
  return ArraySource(split) if isinstance(split, Mapping) else split


# Records decoded at once by the passes over a split: small enough that the decoded Python
# objects of a chunk (~1 KB a record) stay a few MB (65,536 left ~250 MB in the allocator).
CHUNK = 8192


def chunks(split, keys: Sequence[str] | None = None,
           chunk: int = CHUNK) -> Iterator[dict[str, np.ndarray]]:
  """A split (or only its `keys`) as `{key: [m, ...]}` arrays, `chunk` examples at a time,
  in order: for what adds up over a split (label counts) in bounded memory."""
  source = as_source(split)
  n = len(source)
  for start in range(0, n, chunk):
    got = source.read(np.arange(start, min(n, start + chunk)))
    yield {k: got[k] for k in (keys or got)}


def read_split(split, keys: Sequence[str] | None = None,
               chunk: int = CHUNK) -> dict[str, np.ndarray]:
  """A whole split (or only its `keys`) as `{key: [n, ...]}` arrays, read in chunks.

  For what must see every example at once (a head fitted on the train labels, tests);
  training and evaluation stream instead.
  """
  parts = list(chunks(split, keys, chunk))
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


def num_rows(split) -> int:
  """The number of examples in a split (a source or `{key: [n, ...]}` arrays)."""
  if isinstance(split, Mapping):
    return len(next(iter(split.values())))
  return len(split)


def steps_per_epoch(n: int, batch_size: int) -> int:
  return n // batch_size


def example_inputs(ds: base.Dataset) -> dict[str, np.ndarray]:
  """One all-zero example of every input, `{key: [1, ...]}`: what a model is initialized on."""
  return {k: np.zeros((1,) + f.shape, f.dtype) for k, f in ds.inputs.items()}


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
  """The order of the n examples in epoch `epoch`: a pure function of (seed, epoch)."""
  return np.random.default_rng((seed, epoch)).permutation(n)


def train_dataset(ds: base.Dataset, split, batch_size: int, seed: int, num_epochs: int,
                  rows: slice | None = None) -> grain.MapDataset:
  """Element `s` is training step `s`'s batch, or its `rows` only: the part this process
  feeds (`sharding.DataParallel.process_rows`).

  The epochs' shuffled orders are concatenated and cut into batches (the last partial one
  dropped). Each element computes its example indices with a few numpy operations and
  reads them from the source in one call when it is asked for (one indexing per array in
  memory, one batch read from the prepared files), so a batch costs no Python call per
  example and nothing but the prefetched batches is held in memory (notes/perf.md).
  """
  source = as_source(split)
  n = len(source)
  rows = slice(0, batch_size) if rows is None else rows
  ones = np.ones((rows.stop - rows.start,), np.float32)

  def batch(step):
    position = np.arange(step * batch_size, (step + 1) * batch_size)[rows]
    epoch, index = np.divmod(position, n)
    idx = np.empty_like(index)
    for e in np.unique(epoch):  # one epoch, or two where the batch straddles a boundary
      idx[epoch == e] = _epoch_order(seed, int(e), n)[index[epoch == e]]
    return _structure(ds, source.read(idx), ones)

  return grain.MapDataset.range(n * num_epochs // batch_size).map(batch)


def train_batches(ds: base.Dataset, split, batch_size: int, seed: int, num_epochs: int,
                  start_step: int = 0, prefetch: int = 8,
                  rows: slice | None = None) -> Iterator[dict]:
  """Training batches from `start_step` on (their `rows`), read ahead by threads."""
  data = train_dataset(ds, split, batch_size, seed, num_epochs, rows)[start_step:]
  return iter(data.to_iter_dataset(
      grain.ReadOptions(num_threads=2, prefetch_buffer_size=prefetch)))


def eval_batches(ds: base.Dataset, split, batch_size: int, prefetch: int = 4) -> Iterator[dict]:
  """Every example once, in order, in global batches; the last one padded with `valid` = 0.

  Every process reads whole batches (evaluation splits are a fraction of the data), read
  ahead by a thread while the previous batch is evaluated.
  """
  source = as_source(split)
  n = len(source)

  def batch(start):
    stop = min(n, start + batch_size)
    idx = np.arange(start, stop)
    valid = np.ones((batch_size,), np.float32)
    if stop - start < batch_size:
      valid[stop - start:] = 0.0
      idx = np.concatenate([idx, np.full((batch_size - (stop - start),), stop - 1)])
    return _structure(ds, source.read(idx), valid)

  starts = grain.MapDataset.source(range(0, n, batch_size)).map(batch)
  return iter(starts.to_iter_dataset(
      grain.ReadOptions(num_threads=1, prefetch_buffer_size=prefetch)))
