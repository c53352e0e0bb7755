"""What every data set gives the trainer, and the tfds builder they share.

A data set is prepared once by a tfds builder (array_record files, no
TensorFlow), then read back as random-access data sources. Each record is a flat
dict of numpy arrays: the model inputs, the targets, and for a target with
missing labels a `<target>_mask` of the same shape (1 = known, 0 = unknown).
A target of many classes may be stored sparse (`Field.sparse`): its positive
label indices per example, densified per batch only. `Dataset` says which keys
are which, so the pipeline can hand the train step
`{'inputs': {...}, 'targets': {...}, 'masks': {...}}`.
"""

import abc
import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging
import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from mlheads import errors

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
  splits: Mapping[str, Sequence[dict[str, np.ndarray]]]
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

  def split(self, name: str):
    if name not in self.splits:
      raise errors.UsageError(
          f'data set {self.name} has no split {name!r}; it has {sorted(self.splits)}')
    return self.splits[name]


def tfds_features(fields: Mapping[str, Field]) -> tfds.features.FeaturesDict:
  """The tfds feature spec for records made of `fields` (and their masks)."""
  spec = {}
  for key, f in fields.items():
    for k, (shape, dtype) in f.stored(key).items():
      spec[k] = tfds.features.Tensor(shape=shape, dtype=np.dtype(dtype))
  return tfds.features.FeaturesDict(spec)


class ArrayBuilder(tfds.core.GeneratorBasedBuilder, abc.ABC):
  """A tfds builder whose splits are computed in memory from a packaged table.

  Subclasses define `fields()` (every record key) and `make_splits()`, which
  returns `{split: {key: [n, ...] array}}` and a JSON-serialisable metadata
  dict (vocabulary, scaling, split rule) saved next to the data. tfds writes
  into a temporary folder and renames it when done, so an interrupted build
  leaves no half-written data set behind. Records are written in the order
  they are made (tfds' shuffling by key hash is off), so record i of a split
  is row i of the split's `Rows` (the metadata says so: `record_order`).
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
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything comes from an installed package.
    splits, meta = self.make_splits()
    meta = {**meta, 'record_order': RECORD_ORDER}
    # Stored as one JSON string: MetadataDict round-trips it exactly.
    self.info.metadata['mlheads'] = json.dumps(meta)
    return {name: self._generate_examples(arrays) for name, arrays in splits.items()}

  def _generate_examples(self, arrays):
    n = len(next(iter(arrays.values())))
    for i in range(n):
      yield i, {k: v[i] for k, v in arrays.items()}

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


def prepare(builder: ArrayBuilder) -> dict:
  """Builds the data set once (cached in the builder's data_dir); returns its metadata."""
  if not builder.is_prepared():
    logging.info('Preparing %s in %s (once; later runs reuse it).', builder.name, builder.data_dir)
  builder.download_and_prepare()
  return builder.metadata()


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


# ----------------------------------------------------------------------------- raw rows
# Each data module's `encode(table, meta, source)` turns raw table rows into model inputs; its
# builder and predict both call it. `table.index` names the rows in messages: predict puts each
# row's line number in the input file there. Cells may be typed (a packaged table) or strings
# and JSON values (a user's CSV / JSONL file).


def require_columns(table: pd.DataFrame, columns: Sequence[str], source: str) -> None:
  """UsageError naming the first of `columns` that `table` lacks."""
  for col in columns:
    if col not in table.columns:
      raise errors.UsageError(f'{source}, line 1: no column {col!r}; the columns are '
                              f'{list(table.columns)}')


def cell_where(source: str, line, col: str) -> str:
  return f'{source}, line {line}, column {col!r}'


def blank(cell) -> bool:
  """An empty cell: None, NaN (pandas' missing) or a string of only spaces."""
  if cell is None or (isinstance(cell, float) and math.isnan(cell)):
    return True
  return isinstance(cell, str) and not cell.strip()


def number(cell, where: str, what: str = 'features') -> float:
  """A finite number from a cell (number, bool or numeric string), else UsageError at `where`."""
  if isinstance(cell, (bool, np.bool_)):
    return float(cell)
  if isinstance(cell, (int, float, np.integer, np.floating)) and not blank(cell):
    v = float(cell)
  elif isinstance(cell, str) and cell.strip():
    try:
      v = float(cell.strip())
    except ValueError:
      raise errors.UsageError(f'{where} is {cell!r}, not a number') from None
  else:
    raise errors.UsageError(f'{where} is {"empty" if blank(cell) else repr(cell)}; '
                            f'{what} must be numbers')
  if not math.isfinite(v):
    raise errors.UsageError(f'{where} is {cell!r}; {what} must be finite')
  return v


def numbers(table: pd.DataFrame, col: str, source: str, *, blank_ok: bool = False,
            low: float | None = None, high: float | None = None,
            what: str = 'features') -> np.ndarray:
  """Column `col` as finite float64 `[n]`; blank cells are NaN where `blank_ok`.

  Any other cell that is not a finite number in [low, high] is a UsageError
  naming the source, the row's line and the column (and `what` must be numbers).
  """
  values = table[col]
  if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
    out = values.to_numpy(np.float64)  # a typed table: fast path, same numbers.
    bad = ~np.isfinite(out)
    if blank_ok:
      bad &= ~np.isnan(out)
    if bad.any():
      i = int(np.flatnonzero(bad)[0])
      number(values.iloc[i], cell_where(source, table.index[i], col), what)  # raises
  else:
    out = np.array([np.nan if blank_ok and blank(c) else
                    number(c, cell_where(source, line, col), what)
                    for line, c in zip(table.index, values)], np.float64).reshape(len(table))
  for bound, side, bad in ((low, 'below', lambda: out < low), (high, 'above', lambda: out > high)):
    if bound is not None and (b := bad()).any():
      i = int(np.flatnonzero(b)[0])
      raise errors.UsageError(f'{cell_where(source, table.index[i], col)} is '
                              f'{values.iloc[i]!r}, {side} {bound:g}')
  return out


def texts(table: pd.DataFrame, col: str) -> list[str]:
  """Column `col` as strings; a blank cell is the empty text."""
  return ['' if blank(c) else str(c) for c in table[col]]


def joined_texts(table: pd.DataFrame, cols: Sequence[str]) -> list[str]:
  """Columns `cols` as one string per row, joined by a space (no columns: empty strings)."""
  parts = [texts(table, c) for c in cols]
  return [' '.join(cells) for cells in zip(*parts)] if parts else [''] * len(table)


def timestamps(table: pd.DataFrame, col: str, source: str) -> pd.Series:
  """Column `col` of ISO 8601 times as UTC timestamps (no zone: read as UTC)."""
  cells = pd.Series(['' if blank(c) else str(c).strip() for c in table[col]], index=table.index)
  t = pd.to_datetime(cells, utc=True, format='ISO8601', errors='coerce')
  if t.isna().any():
    i = int(np.flatnonzero(t.isna().to_numpy())[0])
    cell = table[col].iloc[i]
    raise errors.UsageError(f'{cell_where(source, table.index[i], col)} is '
                            f'{"empty" if blank(cell) else repr(cell)}; expected an ISO 8601 '
                            'time such as 2016-11-08T15:04:05Z')
  return t


def meta_entry(meta: Mapping[str, Any], key: str, dataset: str):
  """`meta[key]`, or a UsageError saying the run's data predates this entry."""
  if key not in meta:
    raise errors.UsageError(f'data set {dataset}: the run\'s data metadata has no {key!r}; it '
                            'was prepared by an older mlheads: train the run again')
  return meta[key]
