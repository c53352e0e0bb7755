"""A user's own table (CSV, TSV or JSONL) as a multi-label data set: `from_csv`.

  ./launch.sh from_csv --config.data.path=films.csv --config.data.text=title \
      --config.data.features=year,rating --config.data.label_list=genres \
      --config.data.separator='|'

Inputs (csv_columns.py): text columns, numeric columns (names, globs such as `px*`, or `*`
for every column no other setting uses), categorical columns (one-hot or embedded).
Labels come in one of two layouts:
  * `labels=x,y,z`: one column per class holding 0, 1 or nothing (unknown);
  * `label_list=COL`: one column of names joined by `separator` (`Drama|Romance`);
    an empty cell is unknown, a cell holding only the separator means "none of
    the classes". The class list is `classes=a,b,c` if given (any other name is
    an error), else every name seen in the train split, sorted; names seen only
    in validation or test are dropped and counted.
Unknown labels are masked (record key `labels_mask`, 0 = unknown) out of the
loss and the metrics. The target `labels`: in the `labels=` layout `[K]` float32 0/1,
with `labels_mask` `[K]`; in the `label_list=` layout stored sparse (`base.Field.sparse`),
the class indices `[P]` int32 (-1 padded, P the most names in a row) with `labels_count`
and a row-level `labels_mask` `[]`, so a list of 50,000 classes costs 4 (P + 2) bytes a
row; densified per batch.
Splits, one of:
  * default: rows permuted by `split_seed`, then 80% train, 10% validation, 10% test;
    with `split=stratified`, 80/10/10 by iterative stratification of the labels
    (splits.py; the log shows each split's positives per class);
  * `split_column=COL`: the column says `train`, `validation` (or `val`, `valid`, `dev`) or
    `test` for each row;
  * `validation_path=F`, `test_path=G`: the splits in files of their own (`path` is train);
  * `folds=k`, `fold=i` (k-fold cross-validation, `./launch.sh cv`): rows permuted by
    `split_seed` and cut into k folds; fold i is test, fold i + 1 (mod k) validation, the
    rest train.
`max_len` / `max_ngrams` 0 (the defaults): the 99.5th percentile of the train split's
words / character n-grams per text (at most 128 / 1024), saved in the metadata. `rows` hands
back each split's raw rows (for the baseline's TF-IDF), split by the same `split_parts` as the
records.

Every cell is checked before anything is written into the tfds folder; a bad
cell is one UsageError naming the file, the line, the column and the value. The
files are read in two streamed passes (csv_prepare.py: checks and what is fitted on
train, then the records chunk by chunk), so a file larger than memory is prepared.
The prepared data is cached under `<data dir>/from_csv/<file stem>_<hash>/`,
the hash covering the files' bytes and every setting above, so an edited file
or a changed setting is prepared afresh. `schema(config.data)` gives the record
fields from the settings and the header alone, before any row is read.
"""

import dataclasses
import hashlib
import json
import os
import re

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from mlheads import errors
from mlheads.data import base
from mlheads.data import cells as cells_lib
from mlheads.data import csv_columns
from mlheads.data import csv_prepare
from mlheads.data import files
from mlheads.data import ngrams
from mlheads.data import splits as splits_lib

FRACTIONS = csv_prepare.FRACTIONS
TARGET = csv_prepare.TARGET
RANGES = {
    'split_seed': errors.Range(0, 2**31 - 1, integer=True),
    'folds': errors.Range(0, 1000, integer=True),
    'fold': errors.Range(0, 999, integer=True),
    'max_categories': errors.Range(1, 1_000_000, integer=True),
    'min_count': errors.Range(1, 2**31 - 1, integer=True),
}


@dataclasses.dataclass(frozen=True)
class Settings:
  """What `config.data` says about the files; all of it enters the cache hash."""
  path: str
  text: tuple[str, ...] = ()
  features: tuple[str, ...] = ()
  categorical: tuple[str, ...] = ()
  categorical_encoding: str = 'onehot'
  max_categories: int = 100
  labels: tuple[str, ...] = ()
  label_list: str = ''
  separator: str = '|'
  classes: tuple[str, ...] = ()
  vocab_size: int = 10_000
  max_len: int = 0  # 0: from the train split (AUTO_CAPS)
  max_rows: int = 0
  split_seed: int = 0
  split: str = 'random'  # splits.RULES (the 80/10/10 split's rule)
  min_count: int = 2
  max_ngrams: int = 0  # 0: from the train split
  hash_buckets: int = ngrams.BUCKETS
  split_column: str = ''
  validation_path: str = ''
  test_path: str = ''
  folds: int = 0
  fold: int = 0

  def files(self) -> list[tuple[str, str | None]]:
    """(path, the split all its rows belong to, or None)."""
    if self.validation_path:
      return [(self.path, 'train'), (self.validation_path, 'validation'),
              (self.test_path, 'test')]
    return [(self.path, None)]


def settings_from_config(data_config) -> Settings:
  """Reads `config.data` and rejects inconsistent settings (B15, B26)."""
  d = {f.name: data_config[f.name] for f in dataclasses.fields(Settings) if f.name in data_config}
  for key in ('text', 'features', 'categorical', 'labels', 'classes'):
    if key in d:
      d[key] = csv_columns.names(d[key])
  s = Settings(**d)
  for key, allowed in RANGES.items():
    allowed.check(f'--config.data.{key}', getattr(s, key))
  splits_lib.check_rule(s.split)
  if not s.path:
    raise errors.UsageError('from_csv needs --config.data.path=FILE (a .csv, .tsv or .jsonl)')
  if bool(s.labels) == bool(s.label_list):
    raise errors.UsageError('from_csv needs exactly one of --config.data.labels=a,b,c (one 0/1 '
                            'column per class) or --config.data.label_list=COLUMN')
  if s.classes and not s.label_list:
    raise errors.UsageError('--config.data.classes goes with --config.data.label_list')
  if s.label_list and not s.separator:
    raise errors.UsageError('--config.data.separator must not be empty')
  if not s.text and not s.features and not s.categorical:
    raise errors.UsageError("from_csv needs an input: --config.data.text=COLUMN, "
                            "--config.data.features=a,b (or '*': every other column) and/or "
                            '--config.data.categorical=COLUMN')
  if s.categorical_encoding not in csv_columns.ENCODINGS:
    raise errors.UsageError(f'--config.data.categorical_encoding={s.categorical_encoding!r}: '
                            f'use one of {list(csv_columns.ENCODINGS)}')
  if bool(s.validation_path) != bool(s.test_path):
    raise errors.UsageError('give both --config.data.validation_path and '
                            '--config.data.test_path (with --config.data.path as train)')
  ways = [w for w, on in (('split_column', s.split_column), ('validation_path/test_path',
                                                              s.validation_path),
                          ('folds', s.folds)) if on]
  if len(ways) > 1:
    raise errors.UsageError(f'choose one way to split: {" or ".join(ways)}')
  if ways and s.split != 'random':
    raise errors.UsageError(f'--config.data.split={s.split!r} is a rule for the 80/10/10 split; '
                            f'{ways[0]} splits the rows itself')
  if s.folds and not 3 <= s.folds:
    raise errors.UsageError(f'--config.data.folds={s.folds}: k-fold needs at least 3 folds '
                            '(test, validation, train); 0 = the 80/10/10 split')
  if s.folds and s.fold >= s.folds:
    raise errors.UsageError(f'--config.data.fold={s.fold} is not one of the {s.folds} folds '
                            f'(0 to {s.folds - 1})')
  for path, _ in s.files():
    if not os.path.isfile(path):
      raise errors.UsageError(f'{path}: no such file')
  return s


def _layout(s: Settings) -> dict:
  columns = files.read_header(s.path)
  for col in list(s.labels) + [s.label_list, s.split_column]:
    if col and col not in columns:
      cells_lib.require_columns(pd.DataFrame(columns=columns), [col], s.path)
  return csv_columns.layout(s, columns, s.path)


def schema(data_config) -> dict[str, base.Field]:
  """The record fields, from the settings and the files' headers alone (no row is read)."""
  s = settings_from_config(data_config)
  classes = s.labels or s.classes
  return {**csv_columns.fields(_layout(s), None),
          TARGET: base.Field((len(classes),), 'float32', 'binary', names=classes,
                             has_mask=True)}


# ----------------------------------------------------------------------------- reading

@dataclasses.dataclass
class Table:
  """The checked files, one entry per data row, held whole (see `csv_prepare` for the
  streamed passes that prepare the records)."""
  rows: pd.DataFrame  # the cells as read, indexed by line number
  numeric: np.ndarray  # [n, F] float64, finite: the numeric feature columns
  label_cells: list  # labels layout: [K] of 0/1/None; label_list layout: names or None
  lines: list[int]
  sources: list[str]  # each row's file
  splits: list[str | None]  # each row's split, where the files or split_column say it
  columns: dict  # csv_columns.layout


def parse(s: Settings) -> Table:
  """Reads and checks every cell the settings name, in every file, into memory."""
  cols = _layout(s)
  chunks = list(csv_prepare.read(s, cols, csv_prepare.sources(s, cols)))
  label_cells = [cell for c in chunks for cell in c.label_cells]
  for k, col in enumerate(s.labels or [s.label_list]):
    if all((row[k] if s.labels else row) is None for row in label_cells):
      raise errors.UsageError(f'{s.path}, column {col!r}: empty on every row; nothing to learn')
  rows = pd.concat([c.rows for c in chunks])
  return Table(rows=rows, numeric=np.concatenate([c.numeric for c in chunks]),
               label_cells=label_cells, lines=[int(i) for i in rows.index],
               sources=[c.path for c in chunks for _ in range(len(c.rows))],
               splits=[x for c in chunks for x in c.splits], columns=cols)


def split_parts(s: Settings, table: Table) -> tuple[dict[str, np.ndarray], str]:
  """Row indices of each split, and the rule in words (for the log and the metadata)."""
  n = len(table.lines)
  parts, rule = csv_prepare.by_rule(s, n, csv_columns.stratify_on(s, table.label_cells))
  if parts is None:
    where = np.array(table.splits)
    parts = {name: np.flatnonzero(where == name) for name in base.SPLITS}
  csv_prepare.check_parts(s, n, parts, rule)
  return parts, rule


def rows(data_config) -> splits_lib.Rows:
  """The files' rows (parsed and checked) and the rows of each split, as its records are: the
  raw text for the baseline's TF-IDF (`mlheads.baselines`)."""
  s = settings_from_config(data_config)
  table = parse(s)
  parts, rule = split_parts(s, table)
  return splits_lib.Rows(table.rows, parts, tuple(table.columns['text']), rule)


def make_arrays(s: Settings, chunk: int = csv_prepare.CHUNK
                ) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
  """The records the builder writes, whole: `({split: {key: array}}, metadata)`, made by the
  same two streamed passes (`chunk` rows at a time)."""
  plan = csv_prepare.scan(s, _layout(s), chunk)
  splits = {}
  for split in base.SPLITS:
    parts = list(csv_prepare.generate(plan, split, chunk))
    splits[split] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  return splits, plan.meta


# ----------------------------------------------------------------------------- the builder

@dataclasses.dataclass
class CsvConfig(tfds.core.BuilderConfig):
  settings: Settings | None = None
  classes: tuple[str, ...] = ()
  max_labels: int = 0  # the label_list layout's sparse width (0: the labels= layout, dense)
  # The metadata's coding, once known: the fields' widths.
  coding: dict | None = dataclasses.field(default=None, repr=False)


class FromCsv(base.ArrayBuilder):
  """A user's CSV / TSV / JSONL files: text, numbers, categories -> multi-label, with unknown
  cells."""
  # 1.2.0: several text columns, categorical columns, no empty tokens or features record;
  # 1.3.0, 1.4.0, 1.5.0 (1.x formats): records in row order (splits.Rows); hashed n-grams,
  # lengths from the data; label lists stored sparse. 2.0.0: tensors as raw bytes, the record
  # checks in the metadata; 2.1.0: and in row order; 2.2.0: and the n-grams; 2.3.0: and the
  # sparse label lists.
  VERSION = tfds.core.Version('2.3.0')
  RELEASE_NOTES = {'2.3.0': base.RAW_BYTES_NOTE + '; row order; n-grams; sparse label lists',
                   '2.2.0': base.RAW_BYTES_NOTE + '; row order; hashed n-grams',
                   '2.1.0': base.RAW_BYTES_NOTE + '; records in row order',
                   '2.0.0': base.RAW_BYTES_NOTE, '1.5.0': 'label_list layout stored sparse',
                   '1.4.0': 'hashed bigrams and character n-grams; lengths from the data',
                   '1.3.0': 'records in row order',
                   '1.2.0': 'text columns, categorical columns, own splits',
                   '1.1.0': 'metadata: columns', '1.0.0': 'first version'}
  BUILDER_CONFIGS = []

  def __init__(self, *, plan: csv_prepare.Plan | None = None, **kwargs):
    super().__init__(**kwargs)
    self._plan = plan  # the first pass, done (every cell checked) before tfds writes anything.

  def fields(self):
    c = self.builder_config
    s = c.settings
    inputs = (csv_columns.fields(c.coding['columns'], c.coding) if c.coding
              else csv_columns.fields(_layout(s), None))  # a probe's
    return {
        **inputs,
        TARGET: base.Field((len(c.classes),), 'float32', 'binary', names=c.classes,
                           has_mask=True, sparse=c.max_labels),
    }

  def make_splits(self):
    s = self.builder_config.settings
    plan = self._plan or csv_prepare.scan(s, _layout(s))
    return {split: csv_prepare.generate(plan, split) for split in base.SPLITS}, dict(plan.meta)

  def planned_sizes(self):
    return None if self._plan is None else self._plan.sizes()


def cache_key(s: Settings) -> str:
  """`<file stem>_<12 hex>`: the hash of the files' bytes and every setting."""
  h = hashlib.sha256()
  for path, _ in s.files():
    with open(path, 'rb') as f:
      h.update(hashlib.file_digest(f, 'sha256').digest())
  settings = dataclasses.asdict(s)
  for key in ('path', 'validation_path', 'test_path'):
    settings.pop(key)  # the content counts, not where the files lie.
  h.update(json.dumps(settings, sort_keys=True).encode())
  stem = re.sub(r'[^a-z0-9]+', '_', os.path.splitext(os.path.basename(s.path))[0].lower())
  return f'{stem.strip("_")[:40] or "data"}_{h.hexdigest()[:12]}'


_CODING = ('columns', 'tokenizer', 'ngrams', 'categories', 'scaling')


def builder(data_config) -> FromCsv:
  """The builder for `config.data`; the files are fully checked here unless already prepared."""
  s = settings_from_config(data_config)
  key = cache_key(s)
  kw = dict(data_dir=data_config.dir or None, file_format='array_record')
  probe = FromCsv(config=CsvConfig(name=key, settings=s, classes=s.labels or s.classes), **kw)
  if probe.is_prepared():
    # Same bytes and settings were checked when it was prepared; the class list is in its metadata.
    meta = probe.metadata()
    return FromCsv(config=CsvConfig(name=key, settings=s, classes=tuple(meta['classes']),
                                    coding={k: meta[k] for k in _CODING},
                                    max_labels=meta['max_labels']), **kw)
  plan = csv_prepare.scan(s, _layout(s))  # raises on any bad cell, before tfds writes anything.
  return FromCsv(config=CsvConfig(name=key, settings=s, classes=plan.classes,
                                  coding={k: plan.meta[k] for k in _CODING},
                                  max_labels=plan.meta['max_labels']), plan=plan, **kw)


encode = csv_columns.encode
