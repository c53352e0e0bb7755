"""from_csv's preparation: two streamed passes over the files, CHUNK rows at a time, so that a
file larger than memory can be prepared.

`scan`, the first pass, checks every cell (a bad one is one UsageError naming the file, the
line, the column and the value), gives each row its split and fits the coding on the train
rows (vocabulary, feature scaling, categories, the class list), before anything is written
into the tfds folder. `generate`, the second (once per split), encodes a split's rows a chunk
at a time, in file order: its records. What is held at once is one chunk of rows, what is
being counted for the fit, and one byte per row (its split). `read` gives the same checked
chunks, for what needs the rows whole (`csv_data.parse`: the baseline's TF-IDF).
"""

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence

from absl import logging
import numpy as np
import pandas as pd

from mlheads import errors
from mlheads.data import base
from mlheads.data import cells as cells_lib
from mlheads.data import csv_columns
from mlheads.data import files
from mlheads.data import ngrams
from mlheads.data import splits as splits_lib
from mlheads.data import tokenizer as tokenizer_lib

# Rows parsed at a time: what bounds the memory of preparing a file, whatever its size.
CHUNK = 50_000
FRACTIONS = (0.8, 0.1, 0.1)
TARGET = 'labels'


def needed(s, cols: dict) -> list[str]:
  """The columns the settings `s` (csv_data.Settings) read, with `cols` (csv_columns.layout)."""
  return (cols['text'] + cols['features'] + cols['categorical'] + list(s.labels)
          + [c for c in (s.label_list, s.split_column) if c])


@dataclasses.dataclass(frozen=True)
class Source:
  """One file: the split all its rows belong to (None: the rule or split_column says), its
  columns and the number of its data rows read (the first `max_rows`)."""
  path: str
  split: str | None
  columns: list[str]
  rows: int


def sources(s, cols: dict) -> list[Source]:
  """Every file's columns (checked against the settings) and rows, keeping no row."""
  out = []
  for path, split in s.files():
    columns, n = files.scan(path)
    cells_lib.require_columns(pd.DataFrame(columns=columns), needed(s, cols), path)
    out.append(Source(path, split, columns, min(n, s.max_rows) if s.max_rows else n))
  return out


@dataclasses.dataclass
class Chunk:
  """Consecutive data rows of one file, every cell the settings name checked."""
  path: str
  start: int  # the first row's index over all the files
  rows: pd.DataFrame  # the cells as read, indexed by line number
  numeric: np.ndarray  # [m, F] float64, finite: the numeric feature columns
  label_cells: list  # labels layout: [K] of 0/1/None; label_list layout: names or None
  splits: list  # each row's split where the files or split_column say it, else None


def read(s, cols: dict, srcs: Sequence[Source], size: int = CHUNK,
         keep: Callable[[int, int], np.ndarray] | None = None) -> Iterator[Chunk]:
  """The files' data rows, `size` at a time, checked. `keep(start, m)`: a `[m]` bool mask of
  the rows of the next m (from row `start`) to parse; the others are skipped unread."""
  names, start = needed(s, cols), 0
  for src in srcs:
    seen = 0
    for rows, lines in files.chunks(src.path, size):
      rows, lines = rows[:src.rows - seen], lines[:src.rows - seen]
      m = len(rows)
      if keep is not None:
        mine = np.flatnonzero(keep(start, m))
        rows, lines = [rows[i] for i in mine], [lines[i] for i in mine]
      if rows:
        table = files.frame(src.columns, rows, lines)
        yield Chunk(
            path=src.path, start=start, rows=table[names],
            numeric=csv_columns.numeric(table, cols['features'], src.path),
            label_cells=csv_columns.label_cells(s, rows, lines, src.path),
            splits=(csv_columns.split_cells(s, rows, lines, src.path) if s.split_column
                    else [src.split] * len(rows)))
      seen, start = seen + m, start + m
      if seen >= src.rows:
        break


def by_rule(s, n: int, labels: np.ndarray | None = None
            ) -> tuple[dict[str, np.ndarray] | None, str]:
  """Each split's rows where the rule gives them (random, stratified on `labels` `[n, K]`
  (`csv_columns.stratify_on`), folds; None where the files or split_column say), and the rule
  in words."""
  if s.split_column:
    return None, f'the column {s.split_column!r}'
  if s.validation_path:
    return None, f'the files {s.path}, {s.validation_path}, {s.test_path}'
  if s.folds:
    folds = np.array_split(np.random.default_rng(s.split_seed).permutation(n), s.folds)
    val = (s.fold + 1) % s.folds
    return ({'train': np.sort(np.concatenate([f for i, f in enumerate(folds)
                                              if i not in (s.fold, val)])),
             'validation': np.sort(folds[val]), 'test': np.sort(folds[s.fold])},
            f'rows permuted by seed {s.split_seed}; {s.folds} folds: test fold {s.fold}, '
            f'validation fold {val}')
  index, rule = splits_lib.split(n, FRACTIONS, s.split_seed, s.split, labels)
  return dict(zip(base.SPLITS, index)), rule


def stratify_on(s, cols: dict, srcs: Sequence[Source], size: int) -> np.ndarray | None:
  """`csv_columns.stratify_on` of every row's label cells, read a chunk at a time (a pass of
  its own: the split must be known before anything is fitted on train); None unless the
  split is stratified."""
  if s.split != 'stratified' or s.split_column or s.validation_path or s.folds:
    return None
  if s.labels:
    return np.concatenate([csv_columns.stratify_on(s, c.label_cells)
                           for c in read(s, cols, srcs, size)])
  index, rows, ids, n = {}, [], [], 0
  for c in read(s, cols, srcs, size):
    for i, cell in enumerate(c.label_cells):
      for name in cell or ():
        rows.append(n + i)
        ids.append(index.setdefault(name, len(index)))
    n += len(c.label_cells)
  order = {name: k for k, name in enumerate(sorted(index))}  # columns by name, as in memory
  y = np.zeros((n, len(index)), bool)
  y[np.asarray(rows, np.int64), np.asarray([order[name] for name in index], np.int64)[
      np.asarray(ids, np.int64)]] = True
  return y


def check_parts(s, n: int, parts, rule: str) -> None:
  for name, idx in parts.items():
    if len(idx) == 0:
      raise errors.UsageError(f'{s.path}: {n} data rows leave the {name} split empty '
                              f'({rule}); the file needs more rows')


@dataclasses.dataclass
class Plan:
  """What the first pass learns, before anything is written: the settings, the column layout,
  the files, each row's split (`[n]` int8, an index into base.SPLITS), the class list and the
  metadata (the coding `encode` reads, the split rule, counts)."""
  settings: object
  cols: dict
  srcs: list[Source]
  split_of: np.ndarray
  classes: tuple[str, ...]
  meta: dict

  def sizes(self) -> dict[str, int]:
    return {name: int((self.split_of == k).sum()) for k, name in enumerate(base.SPLITS)}


def scan(s, cols: dict, size: int = CHUNK) -> Plan:
  """The first pass (see the module docstring)."""
  srcs = sources(s, cols)
  n = sum(src.rows for src in srcs)
  parts, rule = by_rule(s, n, stratify_on(s, cols, srcs, size))
  split_of = np.full(n, -1, np.int8)
  for k, name in enumerate(base.SPLITS):
    if parts is not None:
      split_of[parts[name]] = k
  fit = csv_columns.Fit(cols, s)
  labels = Labels(s, n)
  known = [False] * max(len(s.labels), 1)
  unknown = 0  # label cells (labels layout) or rows (label_list layout)
  first = [[] for _ in base.SPLITS]
  lengths = []  # per chunk: (split, words, character n-grams) of each text, for B09's count
  for c in read(s, cols, srcs, size):
    m = len(c.rows)
    if parts is None:
      split_of[c.start:c.start + m] = [base.SPLITS.index(x) for x in c.splits]
    where = split_of[c.start:c.start + m]
    train = np.flatnonzero(where == 0)
    words = [[tokenizer_lib.split_words(t) for t in cells_lib.texts(c.rows, col)]
             for col in cols['text']]
    fit.add(c.rows.iloc[train], c.numeric[train], [w[i] for w in words for i in train])
    lengths += [(where, np.array([len(x) for x in w], np.int32),
                 np.array([ngrams.chargram_count(x) for x in w], np.int32)) for w in words]
    labels.add(c.start, where, c.label_cells)
    for line, k, cell in zip(c.rows.index, where, c.label_cells):
      if len(first[k]) < 3:
        first[k].append(int(line))
      if s.labels:
        known = [a or v is not None for a, v in zip(known, cell)]
        unknown += sum(v is None for v in cell)
      elif cell is None:
        unknown += 1
      else:
        known = [True]
  for col, k in zip(list(s.labels) or [s.label_list], known):
    if not k:
      raise errors.UsageError(f'{s.path}, column {col!r}: empty on every row; nothing to learn')
  rows_of = {name: np.flatnonzero(split_of == k) for k, name in enumerate(base.SPLITS)}
  check_parts(s, n, rows_of, rule)
  classes, dropped, counts, max_labels = labels.result(split_of)
  splits_lib.log_label_counts(f'from_csv {s.path}', counts,
                              {k: len(v) for k, v in rows_of.items()}, list(classes), s.split)
  coding = fit.coding()
  fitted = coding['columns']
  # A text is truncated when its words or its character n-grams do not all fit (ngrams.py).
  truncated = {split: int(sum(((w > fitted['max_len']) | (g > fitted['max_ngrams']))[
      where == k].sum() for where, w, g in lengths)) for k, split in enumerate(base.SPLITS)}
  logging.info('from_csv %s: %d rows, split %s (%s); inputs %s; %d classes %s; unknown label '
               'cells %d; texts truncated to %d words or %d character n-grams: %s; label names '
               'outside the class list dropped: %s.', s.path, n,
               {k: len(v) for k, v in rows_of.items()}, rule,
               {k: f.shape for k, f in csv_columns.fields(fitted, coding).items()},
               len(classes), list(classes) if len(classes) <= 50 else
               f'{list(classes[:10])} ...', unknown * (1 if s.labels else len(classes)),
               fitted['max_len'], fitted['max_ngrams'], truncated, dropped)
  meta = {
      'file': os.path.abspath(s.path),
      'classes': list(classes),
      'max_labels': max_labels,
      **coding,
      'split_rule': rule,
      'truncated': truncated,
      'dropped_label_names': dropped,
      'first_line_of_each_row': dict(zip(base.SPLITS, first)),
  }
  return Plan(s, cols, srcs, split_of, classes, meta)


class Labels:
  """What the first pass learns of the label cells: for the `labels=` layout each split's
  known positives per class; for a label list each row's names (as ids: 4 bytes a name), so
  that the class list (every name of train, or `classes`), the names outside it and the
  sparse width (the most names of the list in a row) are known before anything is written."""

  def __init__(self, s, n: int):
    self.s, self.n = s, n
    self.positives = np.zeros((len(base.SPLITS), len(s.labels)), np.int64)
    self.index, self.rows, self.ids = {}, [], []

  def add(self, start: int, where: np.ndarray, cells: list) -> None:
    if self.s.labels:
      y = np.array([[v == 1.0 for v in row] for row in cells], bool).reshape(len(cells), -1)
      np.add.at(self.positives, where, y)
      return
    rows, ids = [], []
    for i, cell in enumerate(cells):
      for name in dict.fromkeys(cell or ()):  # a name twice in a cell is one label
        rows.append(start + i)
        ids.append(self.index.setdefault(name, len(self.index)))
    self.rows.append(np.asarray(rows, np.int64))
    self.ids.append(np.asarray(ids, np.int64))

  def result(self, split_of: np.ndarray):
    """(classes, names dropped per split, positives per class per split, sparse width)."""
    s = self.s
    if s.labels:
      return tuple(s.labels), {}, dict(zip(base.SPLITS, self.positives)), 0
    rows = np.concatenate(self.rows) if self.rows else np.zeros(0, np.int64)
    ids = np.concatenate(self.ids) if self.ids else np.zeros(0, np.int64)
    names = np.array(list(self.index), object)
    where = split_of[rows]
    classes = tuple(s.classes or sorted(set(names[np.unique(ids[where == 0])])))
    if not classes:
      raise errors.UsageError(f'{s.path}, column {s.label_list!r}: no label name in the train '
                              'split; nothing to learn')
    column = {c: k for k, c in enumerate(classes)}
    of_id = np.array([column.get(name, -1) for name in names], np.int64).reshape(len(names))
    k = of_id[ids]
    inside = k >= 0
    dropped = {split: int((~inside & (where == j)).sum()) for j, split in enumerate(base.SPLITS)}
    counts = {split: np.bincount(k[inside & (where == j)], minlength=len(classes))
              for j, split in enumerate(base.SPLITS)}
    width = int(np.bincount(rows[inside], minlength=1).max(initial=0))
    return classes, dropped, counts, max(width, 1)


def labels(s, classes: Sequence[str], cells: list, width: int) -> dict[str, np.ndarray]:
  """The target records of checked label cells: the `labels=` layout `[n, K]` 0/1 and its
  mask (0 = unknown); a label list sparse (`base.Field.sparse`): the class indices `[n, width]`
  (-1 after the `labels_count` `[n]` real ones) and a row-level mask `[n]`."""
  n, index = len(cells), {c: k for k, c in enumerate(classes)}
  if s.labels:
    y = np.array([[0.0 if v is None else v for v in row] for row in cells],
                 np.float32).reshape(n, len(classes))
    mask = np.array([[v is not None for v in row] for row in cells],
                    np.float32).reshape(n, len(classes))
    return {TARGET: y, f'{TARGET}_mask': mask}
  # A name outside a learned list (seen only outside train) is dropped.
  y, count = base.sparse_labels([{index[x] for x in cell or () if x in index} for cell in cells],
                                width)
  return {TARGET: y, f'{TARGET}_count': count,
          f'{TARGET}_mask': np.array([c is not None for c in cells], np.float32).reshape(n)}


def generate(plan: Plan, split: str, size: int = CHUNK) -> Iterator[dict[str, np.ndarray]]:
  """The second pass: one split's records, `{key: [m, ...]}` a chunk at a time, in file order
  (the order of `csv_data.rows`)."""
  k = base.SPLITS.index(split)
  keep = lambda start, m: plan.split_of[start:start + m] == k
  for c in read(plan.settings, plan.cols, plan.srcs, size, keep):
    inputs, _ = csv_columns.encode(c.rows, plan.meta, c.path)
    yield {**inputs, **labels(plan.settings, plan.classes, c.label_cells,
                              plan.meta['max_labels'])}
