"""A prepared data set's array_record files: read by index a batch at a time, and checked
against the sizes and hashes recorded when they were written (B12).

`RecordSource` is one split as a source for the pipeline (pipeline.py): `read(indices)`
fetches the raw records through tfds' data source and decodes the whole batch at once.
Each tensor is stored as raw bytes (base.tfds_features), so decoding a key is one
`np.frombuffer` per batch; tfds' own per-example decoding takes 3.7x as long (median,
notes/perf.md). tests/data/test_records.py checks that both decode to the same arrays.

`record_files` / `verify_files`: right after tfds prepares a data set, the size and
sha256 of each of its files go into `FILES` beside them; every load checks them before
anything is read, so a truncated, damaged or missing file fails at once, naming it,
rather than mid-epoch or silently.

`bounded_buffer()`: while a data set is prepared, tfds' writer holds each split's serialized
records in memory up to 1 GB, then spills them to temporary files through tf.io.gfile,
which fails without TensorFlow, and reads a bucket back whole to sort it (for an unshuffled
split: every record). Within it the writer spills past 64 MB, through local files, and reads
them back in order a record at a time, so a table of any size prepares in a small, fixed
footprint (notes/perf.md).
"""

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping

from absl import logging
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import shuffle as tfds_shuffle
from tensorflow_datasets.proto import tf_example_pb2

from mlheads import errors

FILES = 'mlheads_files.json'
# Rewritten by tfds itself on some loads (update_metadata); tfds parses it and fails on damage.
_UNHASHED = (FILES, 'dataset_info.json')


# Serialized records tfds' writer keeps in memory per split before spilling to disk.
BUFFER_BYTES = 64 << 20


class _LocalFiles:
  """The names tfds' Shuffler spills through (`tf.io.gfile`, `tf.errors`) on local files:
  TensorFlow is not a dependency, and tfds imports it only on the first spill."""

  class io:  # pylint: disable=invalid-name
    class gfile:  # pylint: disable=invalid-name
      GFile = staticmethod(open)
      exists = staticmethod(os.path.exists)
      remove = staticmethod(os.remove)

  class errors:  # pylint: disable=invalid-name
    class ResourceExhaustedError(Exception):
      """Never raised: open() reports a full table of open files as OSError."""


def _iter_in_order(shuffler) -> Iterator[tuple[int, bytes]]:
  """The spilled records read back one at a time. Unshuffled (`disable_shuffling`, every
  ArrayBuilder's), a record's key is its index, which tfds' bucketing by key hash maps to the
  first bucket for all of them, and tfds sorts each bucket in memory: the whole split. Our
  builders add records in key order, so the bucket files are in order already."""
  if not shuffler._disable_shuffling:  # pylint: disable=protected-access
    yield from _ITER_BUCKETS(shuffler)
    return
  previous = -1
  for bucket in shuffler._buckets:  # pylint: disable=protected-access
    for key, data in bucket.read_values():
      if key <= previous:
        raise AssertionError(f'records added out of key order: {key} after {previous}')
      previous = key
      yield key, data
    bucket.del_file()


_ITER_BUCKETS = tfds_shuffle.Shuffler._iter_buckets  # pylint: disable=protected-access


@contextlib.contextmanager
def bounded_buffer() -> Iterator[None]:
  """tfds' writer spills a split to temporary files past BUFFER_BYTES (its own limit is
  1 GB) and reads them back a record at a time (`_iter_in_order`). The files written are
  the same either way: both paths order records by key (tests/data/test_records.py)."""
  saved = tfds_shuffle.MAX_MEM_BUFFER_SIZE, tfds_shuffle.tf
  # Module globals the Shuffler reads as it adds records, and its read-back.
  tfds_shuffle.MAX_MEM_BUFFER_SIZE, tfds_shuffle.tf = BUFFER_BYTES, _LocalFiles
  tfds_shuffle.Shuffler._iter_buckets = _iter_in_order  # pylint: disable=protected-access
  try:
    yield
  finally:
    tfds_shuffle.MAX_MEM_BUFFER_SIZE, tfds_shuffle.tf = saved
    tfds_shuffle.Shuffler._iter_buckets = _ITER_BUCKETS  # pylint: disable=protected-access


class RecordSource:
  """One prepared split: `len()` records, `read(indices) -> {key: [n, ...]}`.

  Args:
    builder: a prepared tfds builder writing array_record.
    split: its split name.
    layout: record key -> (shape, numpy dtype name), every key the records hold.
  """

  def __init__(self, builder, split: str, layout: Mapping[str, tuple[tuple[int, ...], str]]):
    self._records = builder.as_data_source(
        split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    self._layout = {k: (tuple(shape), np.dtype(dtype)) for k, (shape, dtype) in layout.items()}
    self.where = f'{builder.name} split {split} in {builder.data_dir}'

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    return {k: v[0] for k, v in self.read(np.array([i])).items()}

  def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    indices = [int(i) for i in indices]
    try:
      raw = self._records.__getitems__(indices)
    except Exception as e:  # pylint: disable=broad-except  (array_record raises many kinds)
      raise errors.UsageError(f'cannot read records of {self.where}: '
                              f'{errors.os_reason(e)}; prepare the data set again') from None
    parts = {k: [] for k in self._layout}
    for r in raw:
      feature = tf_example_pb2.Example.FromString(r).features.feature
      for k, values in parts.items():
        values.append(feature[k].bytes_list.value[0])
    return {k: np.frombuffer(b''.join(parts[k]), dtype).reshape((len(indices),) + shape)
            for k, (shape, dtype) in self._layout.items()}


def _listing(directory: str) -> list[str]:
  return sorted(n for n in os.listdir(directory)
                if n not in _UNHASHED and not n.endswith('.tmp')
                and os.path.isfile(os.path.join(directory, n)))


def _sha256(path: str) -> str:
  with open(path, 'rb') as f:
    return hashlib.file_digest(f, 'sha256').hexdigest()


def record_files(directory: str) -> None:
  """Writes FILES: the size and sha256 of every file tfds prepared in `directory`."""
  files = {n: {'size': os.path.getsize(os.path.join(directory, n)),
               'sha256': _sha256(os.path.join(directory, n))} for n in _listing(directory)}
  tmp = os.path.join(directory, FILES + '.tmp')
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump({'files': files}, f, indent=1)
  os.replace(tmp, os.path.join(directory, FILES))


def verify_files(directory: str) -> dict[str, str]:
  """Raises UsageError naming the first prepared file that is missing, of another size or
  whose sha256 differs from FILES (B12); returns file name -> its sha256 (hex), so the data's
  fingerprint need not read the files again. A data set prepared without FILES (by an
  interrupted run between tfds' last write and ours) is recorded as it is now."""
  path = os.path.join(directory, FILES)
  if not os.path.exists(path):
    logging.warning('%s has no record of its files (%s); recording them now', directory, FILES)
    record_files(directory)
  redo = (f'; delete {directory} to prepare the data set again')
  try:
    with open(path, encoding='utf-8') as f:
      files = json.load(f)['files']
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise errors.UsageError(f'prepared data file {path} is unreadable ({e}){redo}') from None
  for name, want in sorted(files.items()):
    p = os.path.join(directory, name)
    if not os.path.exists(p):
      raise errors.UsageError(f'prepared data file {p} is missing{redo}')
    if (size := os.path.getsize(p)) != want['size']:
      raise errors.UsageError(f'prepared data file {p} is damaged: {size} bytes, '
                              f'{want["size"]} when prepared (truncated?){redo}')
    if _sha256(p) != want['sha256']:
      raise errors.UsageError(f'prepared data file {p} is damaged: its sha256 differs from '
                              f'the one recorded when it was prepared{redo}')
  extra = sorted(set(_listing(directory)) - set(files))
  if extra:
    raise errors.UsageError(f'prepared data in {directory} has files it was not prepared with: '
                            f'{extra}{redo}')
  return {name: want['sha256'] for name, want in files.items()}
