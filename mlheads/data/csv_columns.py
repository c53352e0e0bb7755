"""from_csv's columns: which are read, how rows become model inputs, the label and split
cells, and what a stratified split stratifies on (`stratify_on`).

Column settings name columns or glob patterns over the header (`px*`); `features='*'` is
every column that no other setting uses. Records (each only if some column feeds it):
  tokens      `[T * max_len]` int32: the T text columns, each tokenized into its own
              segment of `max_len` ids (one vocabulary, built on train), in the given order.
  bigrams     `[T * max_len]` int32: each text column's hashed word bigrams (ngrams.py).
  chargrams   `[T * max_ngrams]` int32: each text column's hashed character 3-5-grams.
  features    `[F]` float32: the numeric columns standardized on train, then for
              `categorical_encoding='onehot'` one 0/1 column per category.
  categories  `[C]` int32 (`categorical_encoding='embed'`): one id per categorical column,
              each column's ids offset into one table (its block's first id = unknown),
              for a trunk to embed.
A categorical column's categories are the `max_categories` most frequent values in train
(ties by name); any other value, or an empty cell, is unknown (all zeros one-hot, the
block's first id embedded).

`Fit` learns the coding (tokenizer, n-gram lengths, scaling, categories) on the train rows,
a chunk at a time; `encode` applies it, for the builder and for predict alike. `max_len` /
`max_ngrams` 0: the 99.5th percentile of the train texts' words / character n-grams
(ngrams.lengths_of), so a schema read before the data knows those widths as 0.
"""

import collections
import fnmatch
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mlheads import errors
from mlheads.data import base
from mlheads.data import cells as cells_lib
from mlheads.data import ngrams
from mlheads.data import tokenizer as tokenizer_lib

ENCODINGS = ('onehot', 'embed')
SPLIT_NAMES = {'train': 'train', 'validation': 'validation', 'valid': 'validation',
               'val': 'validation', 'dev': 'validation', 'test': 'test'}


def names(s: str) -> tuple[str, ...]:
  """'a, b,,c' -> ('a', 'b', 'c')."""
  return tuple(p.strip() for p in str(s).split(',') if p.strip())


def _is_glob(p: str) -> bool:
  return any(c in p for c in '*?[')


def resolve(patterns: Sequence[str], columns: Sequence[str], free: Sequence[str], flag: str,
            source: str) -> list[str]:
  """The columns `patterns` name, in their order (a glob's in the file's): a plain name must be
  a column; a glob matches among `free` (the columns no other setting uses) and must match at
  least one."""
  out = []
  for p in patterns:
    if _is_glob(p):
      hits = [c for c in free if fnmatch.fnmatchcase(c, p)]
      if not hits:
        raise errors.UsageError(f'{source}: --config.data.{flag}={p!r} matches no column; the '
                                f'columns no other setting uses are {list(free)}')
      out += hits
    elif p not in columns:
      raise errors.UsageError(f'{source}, line 1: no column {p!r} (--config.data.{flag}); the '
                              f'columns are {list(columns)}')
    else:
      out.append(p)
  return list(dict.fromkeys(out))


def layout(s, columns: Sequence[str], source: str) -> dict:
  """Which column feeds what, from the settings and the header: `{'text': [...], 'features':
  [...], 'categorical': [...], 'encoding': ...}`. Raises naming a missing column or a glob that
  matches nothing; a column may be used once."""
  text = list(s.text)
  for c in text:
    if c not in columns:
      resolve((c,), columns, (), 'text', source)  # raises, naming the columns
  taken = set(text) | set(s.labels) | {s.label_list, s.split_column} - {''}
  free = [c for c in columns if c not in taken]
  categorical = resolve(s.categorical, columns, free, 'categorical', source)
  free = [c for c in free if c not in categorical]
  features = resolve(s.features, columns, free, 'features', source)
  for group, flag in ((categorical, 'categorical'), (features, 'features')):
    clash = sorted(set(group) & (taken | (set(categorical) if flag == 'features' else set())))
    if clash:
      raise errors.UsageError(f'{source}: column {clash[0]!r} is given to '
                              f'--config.data.{flag} and to another column setting')
  return {'text': text, 'features': features, 'categorical': categorical,
          'encoding': s.categorical_encoding, 'max_len': s.max_len,
          'max_ngrams': s.max_ngrams, 'hash_buckets': s.hash_buckets}


def _category_values(table: pd.DataFrame, col: str) -> list[str | None]:
  return [None if cells_lib.blank(c) else str(c).strip() for c in table[col]]


class Moments:
  """Column means and stds of `[n, F]` rows added in chunks (Chan et al.'s pairwise update,
  float64); rows added at once give `base.fit_scaling`'s numbers."""

  def __init__(self, width: int):
    self.n, self.mean, self.m2 = 0, np.zeros(width), np.zeros(width)

  def add(self, x: np.ndarray) -> None:
    if len(x):
      n, mean = len(x), x.mean(axis=0)
      m2 = ((x - mean)**2).sum(axis=0)
      if self.n:
        total, delta = self.n + n, mean - self.mean
        mean = self.mean + delta * (n / total)
        m2 = self.m2 + m2 + delta**2 * (self.n * n / total)
      self.n, self.mean, self.m2 = self.n + n, mean, m2

  def scaling(self) -> dict:
    """`{'mean', 'std'}` as JSON lists (a constant column gets std 1)."""
    std = np.sqrt(self.m2 / max(self.n, 1))
    return {'mean': self.mean.tolist(), 'std': np.where(std > 0, std, 1.0).tolist()}


class Fit:
  """The coding learned on the train rows (tokenizer, n-gram lengths, feature scaling,
  categories), from rows added a chunk at a time; `s` is csv_data.Settings."""

  def __init__(self, cols: dict, s):
    self.cols, self.s = cols, s
    self.words = collections.Counter()
    self.lengths = ([], [])  # per chunk, per train text: words, character n-grams
    self.counts = {c: collections.Counter() for c in cols['categorical']}
    self.moments = Moments(len(cols['features']))

  def add(self, train: pd.DataFrame, numeric_train: np.ndarray,
          words: Sequence[Sequence[str]]) -> None:
    """Train rows: their cells, numeric columns `[m, F]` and the split words of every text
    of theirs (tokenizer.split_words, text column after text column)."""
    for w in words:
      self.words.update(w)
    self.lengths[0].append(np.array([len(w) for w in words], np.int32))
    self.lengths[1].append(np.array([ngrams.chargram_count(w) for w in words], np.int32))
    for c, counts in self.counts.items():
      counts.update(v for v in _category_values(train, c) if v is not None)
    self.moments.add(numeric_train)

  def coding(self) -> dict:
    s = self.s
    max_len, max_ngrams = ngrams.lengths_of(*(np.concatenate(c) if c else np.zeros(0)
                                              for c in self.lengths), s.max_len, s.max_ngrams)
    tok = tokenizer_lib.Tokenizer.from_counts(self.words, s.vocab_size, max_len, s.min_count)
    categories = {c: [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                      [:s.max_categories]] for c, counts in self.counts.items()}
    return {'columns': {**self.cols, 'max_len': max_len, 'max_ngrams': max_ngrams},
            'tokenizer': tok.to_json(),
            'ngrams': ngrams.Hasher(s.hash_buckets, max_len, max_ngrams).to_json(),
            'categories': categories, 'scaling': {'features': self.moments.scaling()}}


def numeric(table: pd.DataFrame, features: Sequence[str], source: str) -> np.ndarray:
  """The numeric columns as finite float64 `[n, F]` (UsageError naming a bad cell)."""
  cols = []
  for c in features:
    try:
      cols.append(cells_lib.numbers(table, c, source))
    except errors.UsageError as e:
      if 'not a number' not in str(e):
        raise
      raise errors.UsageError(f'{e} (a column of names goes in --config.data.categorical)'
                              ) from None
  return np.stack(cols, axis=1) if cols else np.zeros((len(table), 0))


def fields(cols: dict, coding: dict | None) -> dict[str, base.Field]:
  """The input fields `encode` gives; with `coding` None (a schema, before the data is read)
  the vocabulary, the one-hot width and the category table's size are 0: not known yet. The
  vocabulary is the tokenizer's (at most `vocab_size`: no embedding rows for words the
  train split does not have)."""
  out = {}
  if cols['text']:
    vocab = 0 if coding is None else len(coding['tokenizer']['words'])
    out['tokens'] = base.Field((len(cols['text']) * cols['max_len'],), 'int32', 'tokens',
                               vocab_size=vocab, names=tuple(cols['text']))
    if 'max_ngrams' in cols:  # metadata of mlheads <= 1.2 data: no n-grams.
      out.update(ngrams.fields(cols['hash_buckets'], len(cols['text']) * cols['max_len'],
                               len(cols['text']) * cols['max_ngrams']))
  onehot = cols['encoding'] == 'onehot' and cols['categorical']
  if cols['features'] or onehot:
    width = names_of = None
    if coding is not None or not onehot:
      names_of = tuple(cols['features']) + (tuple(
          f'{c}={v}' for c in cols['categorical'] for v in coding['categories'][c])
                                           if onehot else ())
      width = len(names_of)
    out['features'] = base.Field((width or 0,), 'float32', 'features', names=names_of or ())
  if cols['categorical'] and cols['encoding'] == 'embed':
    size = 0 if coding is None else sum(len(v) + 1 for v in coding['categories'].values())
    out['categories'] = base.Field((len(cols['categorical']),), 'int32', 'categories',
                                   vocab_size=size, names=tuple(cols['categorical']))
  return out


def encode(table: pd.DataFrame, meta: Mapping, source: str) -> tuple[dict[str, np.ndarray], int]:
  """Raw rows -> (the input arrays `fields` names, number of texts truncated)."""
  cols = dict(base.meta_entry(meta, 'columns', 'from_csv'))
  if isinstance(cols.get('text'), str):  # metadata of mlheads <= 1.1 data: one text column,
    cols = {**cols, 'text': [cols['text']] if cols['text'] else [], 'categorical': [],
            'encoding': 'onehot', 'always': True}  # tokens and features always present.
  categorical = list(cols.get('categorical', []))
  cells_lib.require_columns(table, list(cols['text']) + list(cols['features']) + categorical,
                            source)
  tok = tokenizer_lib.Tokenizer.from_json(base.meta_entry(meta, 'tokenizer', 'from_csv'))
  hasher = (ngrams.Hasher.from_json(meta['ngrams']) if 'ngrams' in meta and cols['text']
            else None)
  out, truncated = {}, 0
  if cols['text'] or cols.get('always'):
    parts = collections.defaultdict(list)
    for c in cols['text'] or [None]:
      texts = cells_lib.texts(table, c) if c else [''] * len(table)
      if hasher is None:
        ids, cut = tok.encode_all(texts)
        coded = {'tokens': ids}
      else:
        coded, cut = ngrams.encode_texts(texts, tok, hasher)
      for k, v in coded.items():
        parts[k].append(v)
      truncated += cut
    out.update({k: np.concatenate(v, axis=1) for k, v in parts.items()})
  blocks = [base.apply_scaling(numeric(table, cols['features'], source),
                               base.meta_entry(meta, 'scaling', 'from_csv')['features'])]
  categories = meta.get('categories', {})
  ids = []
  offset = 0
  for c in categorical:
    index = {v: i for i, v in enumerate(categories[c])}
    local = np.array([index.get(v, -1) for v in _category_values(table, c)], np.int64)
    if cols['encoding'] == 'onehot':
      hot = np.zeros((len(table), len(index)), np.float32)
      known = local >= 0
      hot[np.flatnonzero(known), local[known]] = 1.0
      blocks.append(hot)
    else:
      ids.append((offset + 1 + local).astype(np.int32))  # local -1 (unknown) -> offset.
      offset += len(index) + 1
  features = np.concatenate(blocks, axis=1).astype(np.float32)
  if features.shape[1] or cols.get('always'):
    out['features'] = features
  if ids:
    out['categories'] = np.stack(ids, axis=1)
  return out, truncated


# ----------------------------------------------------------------------------- labels, splits

def _binary(cell, where: str) -> float | None:
  """A 0/1 label cell; None when empty (unknown)."""
  if cells_lib.blank(cell):
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
  if cells_lib.blank(cell):
    return None
  parts = cell if isinstance(cell, list) else str(cell).split(separator)
  return [str(p).strip() for p in parts if str(p).strip()]


def label_cells(s, rows, lines, path) -> list:
  """Each row's labels, checked: `[K]` of 0/1/None (the `labels` layout), or the names (None:
  unknown) of the `label_list` column; `s` is csv_data.Settings."""
  at = lambda line, col: f'{path}, line {line}, column {col!r}'
  if s.labels:
    return [[_binary(r.get(c), at(line, c)) for c in s.labels] for r, line in zip(rows, lines)]
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
  return cells


def split_cells(s, rows, lines, path) -> list[str]:
  """Each row's split from the `split_column` cell (train, validation or test)."""
  out = []
  for r, line in zip(rows, lines):
    cell = r.get(s.split_column)
    name = SPLIT_NAMES.get(str(cell).strip().lower()) if not cells_lib.blank(cell) else None
    if name is None:
      raise errors.UsageError(f'{path}, line {line}, column {s.split_column!r} is {cell!r}; '
                              'expected train, validation (or val, valid, dev) or test')
    out.append(name)
  return out


# ----------------------------------------------------------------------------- targets

def stratify_on(s, cells: list) -> np.ndarray | None:
  """`[n, K]` 0/1 known positives of the label cells (`label_cells`) to stratify on (every
  name in the file for a label list: the class list is learned on train, after the split),
  or None for a random split."""
  if s.split != 'stratified':
    return None
  if s.labels:
    return np.array([[v == 1.0 for v in row] for row in cells], bool)
  classes = sorted({n for c in cells for n in c or ()})
  index = {name: k for k, name in enumerate(classes)}
  y = np.zeros((len(cells), len(classes)), bool)
  for i, c in enumerate(cells):
    y[i, [index[name] for name in c or ()]] = True
  return y
