"""A user's own table (CSV, TSV or JSONL) as a multi-label data set: `from_csv`.

  ./launch.sh from_csv --config.data.path=films.csv --config.data.text=title \
      --config.data.features=year,rating --config.data.label_list=genres \
      --config.data.separator='|'

Labels come in one of two layouts:
  * `labels=x,y,z`: one column per class holding 0, 1 or nothing (unknown);
  * `label_list=COL`: one column of names joined by `separator` (`Drama|Romance`);
    an empty cell is unknown, a cell holding only the separator means "none of
    the classes". The class list is `classes=a,b,c` if given (any other name is
    an error), else every name seen in the train split, sorted; names seen only
    in validation or test are dropped and counted.
Unknown labels are masked (record key `labels_mask`, 0 = unknown) out of the
loss and the metrics. Records:
  tokens       `[max_len]` int32: the `text` column as word ids (vocabulary built
               on train, as for the tweets); all padding if there is no text.
  features     `[F]` float32: the `features` columns, standardized on train (F may be 0).
  labels       `labels=` layout: `[K]` float32 0/1, with `labels_mask` `[K]`;
               `label_list=` layout: stored sparse (`base.Field.sparse`), the class
               indices `[P]` int32 (-1 padded, P the most names in a row) with
               `labels_count` and a row-level `labels_mask` `[]`, so a list of
               50,000 classes costs 4 (P + 2) bytes a row; densified per batch.
Split: rows permuted by `split_seed`, then 80% train, 10% validation, 10% test; or
(`split=stratified`) by iterative stratification of the labels (splits.py); the log
shows each split's positives per class.

`encode` turns raw rows (the `text` and `features` columns, named in the
metadata's `columns`) into `tokens` and `features`, for the builder and for
predict alike.

Every cell is checked before anything is written into the tfds folder; a bad
cell is one UsageError naming the file, the line, the column and the value.
The prepared data is cached under `<data dir>/from_csv/<file stem>_<hash>/`,
the hash covering the file's bytes and every setting above, so an edited file
or a changed setting is prepared afresh.
"""

import dataclasses
import hashlib
import json
import os
import re

from absl import logging
import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from mlheads import errors
from mlheads.data import base
from mlheads.data import files
from mlheads.data import splits as splits_lib
from mlheads.data import tokenizer as tokenizer_lib

FRACTIONS = (0.8, 0.1, 0.1)
TARGET = 'labels'


@dataclasses.dataclass(frozen=True)
class Settings:
  """What `config.data` says about the file; all of it enters the cache hash."""
  path: str
  text: str = ''
  features: tuple[str, ...] = ()
  labels: tuple[str, ...] = ()
  label_list: str = ''
  separator: str = '|'
  classes: tuple[str, ...] = ()
  vocab_size: int = 10_000
  max_len: int = 30
  max_rows: int = 0
  split_seed: int = 0
  split: str = 'random'  # splits.RULES


def _names(s: str) -> tuple[str, ...]:
  return tuple(p.strip() for p in str(s).split(',') if p.strip())


def settings_from_config(data_config) -> Settings:
  """Reads `config.data` and rejects inconsistent settings."""
  s = Settings(path=data_config.path, text=data_config.text,
               features=_names(data_config.features), labels=_names(data_config.labels),
               label_list=data_config.label_list, separator=data_config.separator,
               classes=_names(data_config.classes), vocab_size=data_config.vocab_size,
               max_len=data_config.max_len, max_rows=data_config.max_rows,
               split_seed=data_config.split_seed, split=data_config.split)
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
  if not s.text and not s.features:
    raise errors.UsageError('from_csv needs an input: --config.data.text=COLUMN and/or '
                            '--config.data.features=a,b')
  return s


# ----------------------------------------------------------------------------- parsing cells

_blank = base.blank


def _binary(cell, where: str) -> float | None:
  """A 0/1 label cell; None when empty (unknown)."""
  if _blank(cell):
    return None
  if isinstance(cell, bool):
    return float(cell)
  try:
    v = float(cell.strip() if isinstance(cell, str) else cell)
  except (TypeError, ValueError):
    v = None
  if v not in (0.0, 1.0):
    raise errors.UsageError(f'{where} is {cell!r}; a label cell must be 0, 1 or empty (unknown)')
  return v


def _name_list(cell, separator: str) -> list[str] | None:
  """Label names in a label_list cell; None when empty (unknown)."""
  if _blank(cell):
    return None
  parts = cell if isinstance(cell, list) else str(cell).split(separator)
  return [str(p).strip() for p in parts if str(p).strip()]


def raw_features(table: pd.DataFrame, features, source: str) -> np.ndarray:
  """The `features` columns as finite float64 `[n, F]` (UsageError naming a bad cell)."""
  cols = [base.numbers(table, c, source) for c in features]
  return np.stack(cols, axis=1) if cols else np.zeros((len(table), 0))


def encode(table: pd.DataFrame, meta: dict, source: str) -> tuple[dict[str, np.ndarray], int]:
  """Raw rows -> ({'tokens', 'features'}, number of texts truncated).

  Reads the columns `meta['columns']` names: `text` ('' = none: all padding)
  and `features` (standardized with `meta['scaling']`).
  """
  cols = base.meta_entry(meta, 'columns', 'from_csv')
  text, features = cols['text'], list(cols['features'])
  base.require_columns(table, ([text] if text else []) + features, source)
  tok = tokenizer_lib.Tokenizer.from_json(base.meta_entry(meta, 'tokenizer', 'from_csv'))
  tokens, truncated = tok.encode_all(base.texts(table, text) if text else [''] * len(table))
  feats = base.apply_scaling(raw_features(table, features, source),
                             base.meta_entry(meta, 'scaling', 'from_csv')['features'])
  return {'tokens': tokens, 'features': feats}, truncated


@dataclasses.dataclass
class Table:
  """The checked file, one entry per data row."""
  rows: pd.DataFrame  # the cells as read, indexed by line number
  texts: list[str]
  features: np.ndarray  # [n, F] float64, finite
  label_cells: list  # labels layout: [K] of 0/1/None; label_list layout: names or None
  lines: list[int]


def parse(s: Settings) -> Table:
  """Reads and checks every cell the settings name."""
  columns, rows, lines = files.read_rows(s.path)
  if s.max_rows:
    rows, lines = rows[:s.max_rows], lines[:s.max_rows]
  needed = ([s.text] if s.text else []) + list(s.features) + list(s.labels) + (
      [s.label_list] if s.label_list else [])
  base.require_columns(pd.DataFrame(columns=columns), needed, s.path)
  at = lambda line, col: f'{s.path}, line {line}, column {col!r}'
  table = files.frame(columns, rows, lines)
  texts = base.texts(table, s.text) if s.text else [''] * len(rows)
  features = raw_features(table, s.features, s.path)
  if s.labels:
    cells = [[_binary(r.get(c), at(line, c)) for c in s.labels] for r, line in zip(rows, lines)]
    for k, c in enumerate(s.labels):
      if all(row[k] is None for row in cells):
        raise errors.UsageError(f'{s.path}, column {c!r}: empty on every row; nothing to learn')
  else:
    cells = []
    for r, line in zip(rows, lines):
      cell = r.get(s.label_list)
      if cell is not None and not isinstance(cell, (str, list)):
        raise errors.UsageError(f'{at(line, s.label_list)} is {cell!r}; expected names joined '
                                f'by {s.separator!r}')
      names = _name_list(cell, s.separator)
      if names is not None and s.classes:
        for name in names:
          if name not in s.classes:
            raise errors.UsageError(f'{at(line, s.label_list)}: label {name!r} is not one of '
                                    f'the given classes {list(s.classes)}')
      cells.append(names)
    if all(c is None for c in cells):
      raise errors.UsageError(f'{s.path}, column {s.label_list!r}: empty on every row; '
                              'nothing to learn')
  return Table(rows=table, texts=texts, features=features, label_cells=cells, lines=lines)


# ----------------------------------------------------------------------------- arrays

def split_sizes(n: int, seed: int) -> dict[str, int]:
  return {k: len(v) for k, v in zip(base.SPLITS, base.split_indices(n, FRACTIONS, seed))}


def _stratify_on(s: Settings, table: Table) -> np.ndarray | None:
  """`[n, K]` 0/1 known positives to stratify on (every name in the file for a label list:
  the class list is learned on train, after the split), or None for a random split."""
  if s.split != 'stratified':
    return None
  if s.labels:
    return np.array([[v == 1.0 for v in row] for row in table.label_cells], bool)
  names = sorted({n for c in table.label_cells for n in c or ()})
  index = {name: k for k, name in enumerate(names)}
  y = np.zeros((len(table.label_cells), len(names)), bool)
  for i, c in enumerate(table.label_cells):
    y[i, [index[name] for name in c or ()]] = True
  return y


def make_arrays(s: Settings) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
  """Parses, checks and converts the file: `({split: {key: array}}, metadata)`."""
  table = parse(s)
  n = len(table.texts)
  index, rule = splits_lib.split(n, FRACTIONS, s.split_seed, s.split, _stratify_on(s, table))
  parts = dict(zip(base.SPLITS, index))
  for name, idx in parts.items():
    if len(idx) == 0:
      raise errors.UsageError(f'{s.path}: {n} data rows leave the {name} split empty '
                              f'(split {FRACTIONS}); the file needs more rows')
  if s.labels:
    classes = s.labels
    y = np.array([[0.0 if v is None else v for v in row] for row in table.label_cells],
                 np.float32).reshape(n, len(classes))
    mask = np.array([[v is not None for v in row] for row in table.label_cells],
                    np.float32).reshape(n, len(classes))
    dropped = {}
  else:
    classes = s.classes or tuple(sorted({name for i in parts['train']
                                         for name in (table.label_cells[i] or ())}))
    if not classes:
      raise errors.UsageError(f'{s.path}, column {s.label_list!r}: no label name in the train '
                              'split; nothing to learn')
    index = {c: k for k, c in enumerate(classes)}
    mask = np.array([c is not None for c in table.label_cells], np.float32)
    dropped = {name: 0 for name in base.SPLITS}
    split_of = np.empty(n, object)
    for name, idx in parts.items():
      split_of[idx] = name
    rows = []
    for i, names in enumerate(table.label_cells):
      known = {index[name] for name in names or () if name in index}
      dropped[split_of[i]] += len(set(names or ())) - len(known)  # names outside the list
      rows.append(known)
    y, count = base.sparse_labels(rows)
  tok = tokenizer_lib.Tokenizer.fit([table.texts[i] for i in parts['train']], s.vocab_size,
                                    s.max_len)
  coding = {'columns': {'text': s.text, 'features': list(s.features)},
            'tokenizer': tok.to_json(),
            'scaling': {'features': base.fit_scaling(table.features[parts['train']])}}
  splits, truncated = {}, {}
  for name, idx in parts.items():
    inputs, truncated[name] = encode(table.rows.iloc[idx], coding, s.path)
    splits[name] = {**inputs, TARGET: y[idx], f'{TARGET}_mask': mask[idx]}
    if not s.labels:
      splits[name][f'{TARGET}_count'] = count[idx]
  if s.labels:
    counts = splits_lib.positives(parts, np.where(mask > 0, y, 0))
  else:
    counts = {k: np.bincount(y[v][y[v] >= 0], minlength=len(classes)) for k, v in parts.items()}
  splits_lib.log_label_counts(f'from_csv {s.path}', counts, {k: len(v) for k, v in parts.items()},
                              list(classes), s.split)
  logging.info('from_csv %s: %d rows, split %s (%s); %d classes %s; unknown label cells %d; '
               'texts truncated to %d tokens: %s; label names outside the class list '
               'dropped: %s.', s.path, n, {k: len(v) for k, v in parts.items()}, rule,
               len(classes), list(classes) if len(classes) <= 50 else
               f'{list(classes[:10])} ...', int((mask == 0).sum()), s.max_len, truncated,
               dropped)
  meta = {
      'file': os.path.abspath(s.path),
      'classes': list(classes),
      'max_labels': 0 if s.labels else int(y.shape[1]),
      **coding,
      'split_rule': rule,
      'truncated': truncated,
      'dropped_label_names': dropped,
      'first_line_of_each_row': {k: [table.lines[i] for i in v[:3]] for k, v in parts.items()},
  }
  return splits, meta


# ----------------------------------------------------------------------------- the builder

@dataclasses.dataclass
class CsvConfig(tfds.core.BuilderConfig):
  settings: Settings | None = None
  classes: tuple[str, ...] = ()
  max_labels: int = 0  # the label_list layout's sparse width (0: the labels= layout, dense)


class FromCsv(base.ArrayBuilder):
  """A user's CSV / TSV / JSONL file: text + numbers -> multi-label, with unknown cells."""
  # 1.1.0: metadata names the text and feature columns, for `encode` on new rows.
  # 1.2.0: label lists stored sparse.
  VERSION = tfds.core.Version('1.2.0')
  RELEASE_NOTES = {'1.2.0': 'label_list layout stored sparse', '1.1.0': 'metadata: columns',
                   '1.0.0': 'first version'}
  BUILDER_CONFIGS = []

  def __init__(self, *, arrays=None, **kwargs):
    super().__init__(**kwargs)
    self._arrays = arrays  # (splits, meta) parsed and checked before tfds writes anything.

  def fields(self):
    c = self.builder_config
    s = c.settings
    return {
        'tokens': base.Field((s.max_len,), 'int32', 'tokens', vocab_size=s.vocab_size),
        'features': base.Field((len(s.features),), 'float32', 'features', names=s.features),
        TARGET: base.Field((len(c.classes),), 'float32', 'binary', names=c.classes,
                           has_mask=True, sparse=c.max_labels),
    }

  def make_splits(self):
    return self._arrays if self._arrays is not None else make_arrays(self.builder_config.settings)

  def planned_sizes(self):
    if self._arrays is None:
      return None
    return {k: len(v[TARGET]) for k, v in self._arrays[0].items()}


def cache_key(s: Settings) -> str:
  """`<file stem>_<12 hex>`: the hash of the file's bytes and every setting."""
  with open(s.path, 'rb') as f:
    h = hashlib.file_digest(f, 'sha256')
  settings = dataclasses.asdict(s)
  settings.pop('path')  # the content counts, not where the file lies.
  h.update(json.dumps(settings, sort_keys=True).encode())
  stem = re.sub(r'[^a-z0-9]+', '_', os.path.splitext(os.path.basename(s.path))[0].lower())
  return f'{stem.strip("_")[:40] or "data"}_{h.hexdigest()[:12]}'


def builder(data_config) -> FromCsv:
  """The builder for `config.data`; the file is fully checked here unless already prepared."""
  s = settings_from_config(data_config)
  if not os.path.isfile(s.path):
    raise errors.UsageError(f'{s.path}: no such file')
  key = cache_key(s)
  kw = dict(data_dir=data_config.dir or None, file_format='array_record')
  probe = FromCsv(config=CsvConfig(name=key, settings=s, classes=s.labels or s.classes), **kw)
  if probe.is_prepared():
    # Same bytes and settings were checked when it was prepared; the class list is in its metadata.
    meta = probe.metadata()
    return FromCsv(config=CsvConfig(name=key, settings=s, classes=tuple(meta['classes']),
                                    max_labels=meta['max_labels']), **kw)
  arrays = make_arrays(s)  # raises on any bad cell, before tfds writes anything.
  meta = arrays[1]
  return FromCsv(config=CsvConfig(name=key, settings=s, classes=tuple(meta['classes']),
                                  max_labels=meta['max_labels']), arrays=arrays, **kw)
