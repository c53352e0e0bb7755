"""What every data set gives the trainer, and the tfds builder they share.

A data set is prepared once by a tfds builder (array_record files, no
TensorFlow), then read back as random-access data sources. Each record is a flat
dict of numpy arrays: the model inputs, the targets, and for a target with
missing labels a `<target>_mask` of the same shape (1 = known, 0 = unknown).
`Dataset` says which keys are which, so the pipeline can hand the train step
`{'inputs': {...}, 'targets': {...}, 'masks': {...}}`.
"""

import abc
import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from mlheads import errors

SPLITS = ('train', 'validation', 'test')


@dataclasses.dataclass(frozen=True)
class Field:
  """One record key.

  Attributes:
    shape: per-example shape, e.g. `(100,)` for token ids.
    dtype: numpy dtype name.
    kind: 'tokens' (int ids < vocab_size), 'features' (finite floats),
      'image' (finite floats), 'binary' (0/1 labels) or 'real' (regression).
    vocab_size: for 'tokens', ids lie in [0, vocab_size).
    names: for targets, one name per column (class names).
    has_mask: for targets, whether records carry `<key>_mask`.
  """
  shape: tuple[int, ...]
  dtype: str
  kind: str
  vocab_size: int | None = None
  names: tuple[str, ...] = ()
  has_mask: bool = False


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A prepared data set: its splits and what its keys mean."""
  name: str
  splits: Mapping[str, Sequence[dict[str, np.ndarray]]]
  inputs: Mapping[str, Field]
  targets: Mapping[str, Field]
  meta: Mapping[str, Any]  # JSON-serialisable: vocabulary, scaling, split rule.

  def split(self, name: str):
    if name not in self.splits:
      raise errors.UsageError(
          f'data set {self.name} has no split {name!r}; it has {sorted(self.splits)}')
    return self.splits[name]


def tfds_features(fields: Mapping[str, Field]) -> tfds.features.FeaturesDict:
  """The tfds feature spec for records made of `fields` (and their masks)."""
  spec = {}
  for key, f in fields.items():
    spec[key] = tfds.features.Tensor(shape=f.shape, dtype=np.dtype(f.dtype))
    if f.has_mask:
      spec[f'{key}_mask'] = tfds.features.Tensor(shape=f.shape, dtype=np.float32)
  return tfds.features.FeaturesDict(spec)


class ArrayBuilder(tfds.core.GeneratorBasedBuilder, abc.ABC):
  """A tfds builder whose splits are computed in memory from a packaged table.

  Subclasses define `fields()` (every record key) and `make_splits()`, which
  returns `{split: {key: [n, ...] array}}` and a JSON-serialisable metadata
  dict (vocabulary, scaling, split rule) saved next to the data. tfds writes
  into a temporary folder and renames it when done, so an interrupted build
  leaves no half-written data set behind.
  """

  @abc.abstractmethod
  def fields(self) -> dict[str, Field]:
    """Every record key, inputs and targets alike."""

  @abc.abstractmethod
  def make_splits(self) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """Returns `({split: {key: array}}, metadata)`."""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        features=tfds_features(self.fields()),
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything comes from an installed package.
    splits, meta = self.make_splits()
    # Stored as one JSON string: MetadataDict round-trips it exactly.
    self.info.metadata['mlheads'] = json.dumps(meta)
    return {name: self._generate_examples(arrays) for name, arrays in splits.items()}

  def _generate_examples(self, arrays):
    n = len(next(iter(arrays.values())))
    for i in range(n):
      yield i, {k: v[i] for k, v in arrays.items()}

  def metadata(self) -> dict:
    return json.loads(self.info.metadata['mlheads'])

  def planned_sizes(self) -> dict[str, int] | None:
    """Split sizes known before preparing (None if not known yet), so that a split
    too small for one batch is rejected before anything is written."""
    return None


def prepare(builder: ArrayBuilder) -> dict:
  """Builds the data set once (cached in the builder's data_dir); returns its metadata."""
  if not builder.is_prepared():
    logging.info('Preparing %s in %s (once; later runs reuse it).', builder.name, builder.data_dir)
  builder.download_and_prepare()
  return builder.metadata()


def split_indices(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
  """Random disjoint index sets of the given fractions of `n` rows, from `seed`."""
  perm = np.random.default_rng(seed).permutation(n)
  bounds = np.round(np.cumsum((0.0,) + tuple(fractions)) * n).astype(int)
  bounds[-1] = n
  return [np.sort(perm[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def standardize(train: np.ndarray, *others: np.ndarray):
  """Scales columns by the train split's mean and std; returns arrays and the scaling."""
  mean = train.mean(axis=0)
  std = train.std(axis=0)
  std = np.where(std > 0, std, 1.0)
  scaled = [((a - mean) / std).astype(np.float32) for a in (train,) + others]
  return scaled, {'mean': mean.tolist(), 'std': std.tolist()}
