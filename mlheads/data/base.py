"""What every data set gives the trainer, and the tfds builder they share.

A data set is prepared once by a tfds builder (array_record files, no
TensorFlow), then read back by index, a batch at a time (records.RecordSource). Each
record is a flat dict of numpy arrays: the model inputs, the targets, and for a target
with missing labels a `<target>_mask` of the same shape (1 = known, 0 = unknown).
A target of many classes may be stored sparse (`Field.sparse`): its positive
label indices per example, densified per batch only. `Dataset` says which keys
are which, so the pipeline can hand the train step
`{'inputs': {...}, 'targets': {...}, 'masks': {...}}`.

The record checks (checks.py, B01-B11) run once, on the arrays a builder makes, before
tfds writes anything; what they counted goes into the data set's metadata (`checks`),
so a run reads it instead of reading whole splits into memory.
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
from mlheads.data import checks
from mlheads.data import records

SPLITS = ('train', 'validation', 'test')
# The metadata's `record_order` when records are in the order of their split's rows (`Rows`).
RECORD_ORDER = 'rows'
INPUT_KINDS = ('tokens', 'hashed', 'features', 'image', 'categories')  # what a model reads
TARGET_KINDS = ('binary', 'real')


@dataclasses.dataclass(frozen=True)
class Field:
  """One record key.

  Attributes:
    shape: per-example shape, e.g. `(100,)` for token ids.
    dtype: numpy dtype name.
    kind: 'tokens' (word ids < vocab_size), 'hashed' (hashed n-gram ids < vocab_size,
      ngrams.py), 'features' (finite floats), 'image' (finite floats), 'categories' (int ids
      < vocab_size, one per column, each column's ids offset into one table; 0 = unknown),
      'binary' (0/1 labels) or 'real' (regression). A target of width 0 in a schema: known
      only once the data is read.
    vocab_size: for 'tokens', 'hashed' and 'categories', ids lie in [0, vocab_size); 0 is
      padding for 'tokens' and 'hashed'.
    names: one name per column (class names, feature columns).
    has_mask: for targets, whether records carry `<key>_mask`.
    sparse: for binary targets of shape `(K,)`, 0: stored as the `[K]` 0/1 vector;
      P > 0: stored as the example's positive class indices, `<key>` int32 `[P]`
      padded with -1 after the `<key>_count` int32 `[]` real ones, and (with has_mask)
      a row-level `<key>_mask` float32 `[]` (0: every label of the row unknown). A
      record then costs 4 (P + 1) bytes, not 4 K: 50,000 classes are fine.
  """
  shape: tuple[int, ...]
  dtype: str
  kind: str
  vocab_size: int | None = None
  names: tuple[str, ...] = ()
  has_mask: bool = False
  sparse: int = 0

  def stored(self, key: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """The record keys this field is stored as: key -> (per-example shape, dtype)."""
    if self.sparse:
      out = {key: ((self.sparse,), 'int32'), f'{key}_count': ((), 'int32')}
      return out | ({f'{key}_mask': ((), 'float32')} if self.has_mask else {})
    return {key: (self.shape, self.dtype)} | (
        {f'{key}_mask': (self.shape, 'float32')} if self.has_mask else {})

  def densify(self, arrays: Mapping[str, np.ndarray], key: str
              ) -> tuple[np.ndarray, np.ndarray]:
    """(targets, mask) float32 `[n, *shape]` from the stored arrays of n examples."""
    if not self.sparse:
      y = arrays[key].astype(np.float32)
      m = arrays.get(f'{key}_mask')
      return y, (np.ones_like(y) if m is None else m.astype(np.float32))
    idx = np.asarray(arrays[key])
    n, k = len(idx), self.shape[-1]
    y = np.zeros((n, k), np.float32)
    rows, slots = np.nonzero(idx >= 0)
    y[rows, idx[rows, slots]] = 1.0
    m = arrays.get(f'{key}_mask')
    m = np.ones((n, k), np.float32) if m is None else np.repeat(
        np.asarray(m, np.float32).reshape(n, 1), k, axis=1)
    return y, m

  def empty(self, key: str, n: int) -> dict[str, np.ndarray]:
    """Stored arrays of n examples with every label known and negative (predict's dummies)."""
    if self.sparse:
      return {key: np.full((n, self.sparse), -1, np.int32), f'{key}_count': np.zeros(n, np.int32),
              **({f'{key}_mask': np.ones(n, np.float32)} if self.has_mask else {})}
    return {key: np.zeros((n,) + self.shape, np.float32),
            **({f'{key}_mask': np.ones((n,) + self.shape, np.float32)} if self.has_mask else {})}


def sparse_labels(rows: Sequence[Sequence[int]], width: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Label index lists -> (indices int32 `[n, P]` padded with -1, count int32 `[n]`), P the
  longest list (at least 1) or `width`."""
  count = np.array([len(r) for r in rows], np.int32).reshape(len(rows))
  p = max(width, int(count.max(initial=0)), 1)
  idx = np.full((len(rows), p), -1, np.int32)
  for i, r in enumerate(rows):
    idx[i, :len(r)] = sorted(r)
  return idx, count


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A prepared data set: its splits and what its keys mean."""
  name: str
  splits: Mapping[str, Any]  # split -> a source: len() and read(indices) (pipeline.py)
  inputs: Mapping[str, Field]
  targets: Mapping[str, Field]
  meta: Mapping[str, Any]  # JSON-serialisable: vocabulary, scaling, split rule.
  # What the data holds, in hashes (data/fingerprint.py): checkpoints carry it (B28).
  fingerprint: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @classmethod
  def of_fields(cls, name: str, fields: Mapping[str, Field], splits=None, meta=None,
                fingerprint=None) -> 'Dataset':
    """A data set of these record fields, sorted into inputs and targets by kind; without
    splits and metadata it is a schema: what the checks before any data is read look at."""
    return cls(name=name, splits=splits or {}, meta=meta or {},
               inputs={k: f for k, f in fields.items() if f.kind in INPUT_KINDS},
               targets={k: f for k, f in fields.items() if f.kind in TARGET_KINDS},
               fingerprint=fingerprint or {})

  def class_names(self, target: str) -> list[str]:
    """The names of target `target`'s columns ('0', '1', ... where the data set names none)."""
    f = self.targets[target]
    return list(f.names) or [str(k) for k in range(int(np.prod(f.shape)))]

  def only(self, inputs, targets) -> 'Dataset':
    """The same data set with only these input and target keys: batches of it carry nothing
    else (a training step's batch: what the model reads, `Model.reads`)."""
    return dataclasses.replace(self, inputs={k: f for k, f in self.inputs.items() if k in inputs},
                               targets={k: f for k, f in self.targets.items() if k in targets})

  def split(self, name: str):
    if name not in self.splits:
      raise errors.UsageError(
          f'data set {self.name} has no split {name!r}; it has {sorted(self.splits)}')
    return self.splits[name]


# The release note of the builder versions that store tensors this way (every builder's):
# major version 2, apart from the 1.x formats other branches may have prepared.
RAW_BYTES_NOTE = 'tensors stored as raw bytes; metadata: the record checks'


def record_layout(fields: Mapping[str, Field]) -> dict[str, tuple[tuple[int, ...], str]]:
  """Every key a record holds (fields and their masks) -> (shape, dtype name)."""
  layout = {}
  for key, f in fields.items():
    layout.update(f.stored(key))
  return layout


def tfds_features(fields: Mapping[str, Field]) -> tfds.features.FeaturesDict:
  """The tfds feature spec for records made of `fields` (and their masks).

  Tensors are stored as raw bytes, which records.RecordSource decodes a batch at a time.
  """
  return tfds.features.FeaturesDict({
      key: tfds.features.Tensor(shape=shape, dtype=np.dtype(dtype),
                                encoding=tfds.features.Encoding.BYTES)
      for key, (shape, dtype) in record_layout(fields).items()})


class ArrayBuilder(tfds.core.GeneratorBasedBuilder, abc.ABC):
  """A tfds builder whose splits are computed as arrays: whole, or chunk by chunk (a
  file larger than memory).

  Subclasses define `fields()` (every record key) and `make_splits()`, which returns
  `{split: {key: [n, ...] array}}` (or, per split, an iterable of such chunks) and a
  JSON-serialisable metadata dict (vocabulary, scaling, split rule) saved next to the
  data. The record checks (B01-B11) run on whole splits before anything is written, or
  on each chunk as it is written; what they counted is recorded in the metadata
  (`checks`). tfds writes into a temporary folder and renames it when done, so an
  interrupted or failed build (a bad chunk) leaves no half-written data set behind.
  Records are written in the order they are made (tfds' shuffling by key hash is off), so
  record i of a split is row i of the split's `Rows` (the metadata says so: `record_order`).
  """

  @abc.abstractmethod
  def fields(self) -> dict[str, Field]:
    """Every record key, inputs and targets alike."""

  @abc.abstractmethod
  def make_splits(self) -> tuple[dict[str, Any], dict]:
    """Returns `({split: {key: array} or an iterable of them}, metadata)`."""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        features=tfds_features(self.fields()),
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything comes from an installed package.
    splits, meta = self.make_splits()
    meta = {**meta, 'record_order': RECORD_ORDER}
    layout = Dataset.of_fields(self.name, self.fields())
    if all(isinstance(v, Mapping) for v in splits.values()):
      meta['checks'] = checks.check_splits(layout, splits)  # raises before anything is written
      self._set_metadata(meta)
      return {name: self._generate_examples([arrays]) for name, arrays in splits.items()}
    meta['checks'] = {}
    self._set_metadata(meta)
    return {name: self._generate_examples(chunks, layout, name, meta)
            for name, chunks in splits.items()}

  def _set_metadata(self, meta: dict) -> None:
    # Stored as one JSON string: MetadataDict round-trips it exactly. tfds writes it to disk
    # after the last split is generated, so chunked splits can record their checks late.
    self.info.metadata['mlheads'] = json.dumps(meta)

  def _generate_examples(self, chunks, layout=None, split=None, meta=None):
    """Keys 0.. over a split's chunks; with `layout`, checks each chunk and records the
    split's counts in `meta['checks']` once it is done."""
    i, counts = 0, None
    for arrays in chunks:
      if layout is not None:
        checks.check_split(layout, split, arrays, first_row=i)
        counts = checks.merge_counts(counts, checks.label_counts(layout, arrays))
      for j in range(len(next(iter(arrays.values())))):
        yield i, {k: v[j] for k, v in arrays.items()}
        i += 1
    if layout is not None:
      if not i:
        raise errors.UsageError(f'data set {self.name}, split {split}: the split is empty')
      meta['checks'][split] = {'examples': i, 'labels': checks.summarize_labels(layout, counts)}
      self._set_metadata(meta)

  def metadata(self) -> dict:
    return json.loads(self.info.metadata['mlheads'])

  # tfds prints "Downloading and preparing dataset Unknown size ..." and "... downloaded and
  # prepared" on stdout, on purpose, for downloads one might cancel. Nothing is downloaded
  # here, and `prepare` logs what happens.
  def _log_download_bytes(self) -> None:
    pass

  def _log_download_done(self) -> None:
    pass

  def planned_sizes(self) -> dict[str, int] | None:
    """Split sizes known before preparing (None if not known yet), so that a split
    too small for one batch is rejected before anything is written."""
    return None


@dataclasses.dataclass
class TextTableConfig(tfds.core.BuilderConfig):
  """Settings that change a text table's prepared data; the name carries them all.

  `max_len` bounds the word ids and the hashed word bigrams, `max_ngrams` the hashed
  character n-grams, whose ids lie in [1, hash_buckets] (ngrams.py).
  """
  vocab_size: int = 10_000
  max_len: int = 100
  max_rows: int = 0  # 0: all rows; tests use a small slice.
  max_ngrams: int = 512
  hash_buckets: int = 2**18
  split: str = 'random'  # splits.RULES (checked by the builders)


def text_table_config(vocab_size: int, max_len: int, max_rows: int, max_ngrams: int,
                      hash_buckets: int, split: str = 'random') -> TextTableConfig:
  name = (f'v{vocab_size}_len{max_len}_ng{max_ngrams}_h{hash_buckets}'
          + (f'_rows{max_rows}' if max_rows else '') + ('' if split == 'random' else f'_{split}'))
  return TextTableConfig(name=name, vocab_size=vocab_size, max_len=max_len, max_rows=max_rows,
                         max_ngrams=max_ngrams, hash_buckets=hash_buckets, split=split)


def check_lengths(data_config) -> None:
  """A packaged text data set's records have fixed widths: `max_len` and `max_ngrams` 0 (from
  the train split) are from_csv's alone (B26)."""
  for key in ('max_len', 'max_ngrams'):
    if data_config[key] < 1:
      raise errors.UsageError(f'--config.data.{key} must be an integer >= 1 for data set '
                              f'{data_config.name}, got {data_config[key]!r} (0, from the train '
                              'split, is for from_csv)')


def text_table_config_of(data_config) -> TextTableConfig:
  """`text_table_config` from `config.data` (its lengths checked; a partial config without
  `split`, as tests and the API give: the random split)."""
  check_lengths(data_config)
  d = data_config
  return text_table_config(d.vocab_size, d.max_len, d.max_rows, d.max_ngrams, d.hash_buckets,
                           d.get('split', 'random'))


def make_builder(cls, builder_config, data_config) -> ArrayBuilder:
  """`cls` with `builder_config`, writing array_record under `data_config.dir`."""
  # tfds takes a listed config by name only; other settings are custom configs.
  listed = {c.name for c in cls.BUILDER_CONFIGS}
  cfg = builder_config.name if builder_config.name in listed else builder_config
  return cls(config=cfg, data_dir=data_config.dir or None, file_format='array_record')


def prepare(builder: ArrayBuilder) -> tuple[dict, dict[str, str]]:
  """Builds the data set once (cached in the builder's data_dir), checks that its files are
  the ones prepared (B12), and returns its metadata and its files' sha256 (name -> hex)."""
  if not builder.is_prepared():
    logging.info('Preparing %s in %s (once; later runs reuse it).', builder.name, builder.data_dir)
    with records.bounded_buffer():  # a large table prepares in bounded memory
      builder.download_and_prepare()
    records.record_files(builder.data_dir)
  digests = records.verify_files(builder.data_dir)
  try:
    return builder.metadata(), digests
  except (KeyError, ValueError) as e:  # metadata.json damaged in a way its hash missed
    raise errors.UsageError(f'prepared data in {builder.data_dir}: unreadable metadata ({e}); '
                            'delete the folder to prepare the data set again') from None


def prepared_splits(builder: ArrayBuilder) -> dict[str, records.RecordSource]:
  """Each split of a prepared builder as a source read from its files."""
  layout = record_layout(builder.fields())
  return {s: records.RecordSource(builder, s, layout) for s in builder.info.splits}


# The packaged tables' fixed split: rows permuted by this seed, then cut 80/10/10.
SPLIT_SEED = 0
FRACTIONS = (0.8, 0.1, 0.1)


def fit_scaling(train: np.ndarray) -> dict:
  """The train split's column means and stds (a constant column gets std 1), as JSON lists."""
  mean = train.mean(axis=0)
  std = train.std(axis=0)
  std = np.where(std > 0, std, 1.0)
  return {'mean': mean.tolist(), 'std': std.tolist()}


def apply_scaling(a: np.ndarray, scaling: Mapping[str, Any]) -> np.ndarray:
  """`(a - mean) / std` as float32; `scaling` is `fit_scaling`'s (or its JSON round trip,
  which gives the same float64 numbers, so prepared data and predict agree bit for bit)."""
  mean = np.asarray(scaling['mean'], np.float64)
  std = np.asarray(scaling['std'], np.float64)
  return ((a - mean) / std).astype(np.float32)


def standardize(train: np.ndarray, *others: np.ndarray):
  """Scales columns by the train split's mean and std; returns arrays and the scaling."""
  scaling = fit_scaling(train)
  return [apply_scaling(a, scaling) for a in (train,) + others], scaling


def meta_entry(meta: Mapping[str, Any], key: str, dataset: str):
  """`meta[key]`, or a UsageError saying the run's data predates this entry."""
  if key not in meta:
    raise errors.UsageError(f'data set {dataset}: the run\'s data metadata has no {key!r}; it '
                            'was prepared by an older mlheads: train the run again')
  return meta[key]
