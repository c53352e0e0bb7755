"""How a table's rows become train / validation / test, and what each split holds of each label.

`config.data.split`:
  'random'      rows permuted by the seed, then cut by the fractions (the default);
  'stratified'  iterative stratification (Sechidis, Tsoumakas and Vlahavas, ECML PKDD 2011;
                the `iterative-stratification` package): labels are placed rarest first,
                each example going to the split that most lacks that label, so that a rare
                label lands in every split in proportion where it can. For multi-label
                targets; its cost grows with rows x labels^2 (thousands of labels: slow).

`log_label_counts` logs each split's positives per label and warns, naming them, about
labels with positives in train but none in validation or test (their AP / ROC AUC are then
undefined there, B05). `Rows` is a table and the rows each split holds, in record order;
`split_table` cuts a packaged table the fixed way (base.SPLIT_SEED, base.FRACTIONS).
"""

import dataclasses
from collections.abc import Mapping, Sequence

from absl import logging
import numpy as np
import pandas as pd

from mlheads import errors
from mlheads.data import base
from mlheads.data import cells as cells_lib

RULES = ('random', 'stratified')
SPLITS = base.SPLITS


def check_rule(rule: str) -> None:
  if rule not in RULES:
    raise errors.UsageError(f'--config.data.split={rule!r}: use one of {list(RULES)}')


def split_indices(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
  """Random disjoint index sets of the given fractions of `n` rows, from `seed`."""
  perm = np.random.default_rng(seed).permutation(n)
  bounds = np.round(np.cumsum((0.0,) + tuple(fractions)) * n).astype(int)
  bounds[-1] = n
  return [np.sort(perm[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def stratified_indices(labels: np.ndarray, fractions: Sequence[float], seed: int
                       ) -> list[np.ndarray]:
  """Index sets of about the given fractions of the rows of 0/1 `labels` `[n, K]`, by
  iterative stratification (unknown labels: pass them as 0)."""
  from iterstrat import ml_stratifiers  # pylint: disable=g-import-not-at-top
  y = np.asarray(labels).reshape(len(labels), -1) > 0
  fold = ml_stratifiers.IterativeStratification(
      y, np.asarray(fractions, np.float64), np.random.RandomState(seed))
  return [np.flatnonzero(fold == i) for i in range(len(fractions))]


def split(n: int, fractions: Sequence[float], seed: int, rule: str = 'random',
          labels: np.ndarray | None = None) -> tuple[list[np.ndarray], str]:
  """The split's index sets and the rule in words (for the data's metadata)."""
  check_rule(rule)
  if rule == 'random':
    return split_indices(n, fractions, seed), (f'rows permuted by seed {seed}; fractions '
                                               f'{tuple(fractions)}')
  return stratified_indices(labels, fractions, seed), (
      f'iterative stratification (Sechidis et al. 2011) of {np.shape(labels)[-1]} labels, '
      f'seed {seed}; fractions {tuple(fractions)}')


def positives(parts: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, np.ndarray]:
  """{split: positives per label `[K]`} of dense 0/1 `labels` `[n, K]` split by `parts`."""
  y = np.asarray(labels).reshape(len(labels), -1) > 0
  return {s: y[idx].sum(0) for s, idx in parts.items()}


def log_label_counts(dataset: str, counts: dict[str, np.ndarray], rows: dict[str, int],
                     names: Sequence[str], rule: str = 'random') -> dict[str, list[str]]:
  """Logs each split's positives per label (`counts`: {split: `[K]`}) and warns about labels
  with positives in train but none in validation or test. Returns {split: [those names]}."""
  k = len(next(iter(counts.values())))
  for s, c in counts.items():
    if k <= 50:
      logging.info('%s %s split: %d rows; positives per label: %s', dataset, s, rows[s],
                   dict(zip(names, np.asarray(c).tolist())))
    else:
      logging.info('%s %s split: %d rows; positives per label: min %d, median %g, max %d; %d '
                   'labels without one', dataset, s, rows[s], np.min(c), np.median(c),
                   np.max(c), int((np.asarray(c) == 0).sum()))
  absent = {}
  for s in SPLITS[1:]:
    missing = np.flatnonzero((np.asarray(counts[s]) == 0) & (np.asarray(counts[SPLITS[0]]) > 0))
    absent[s] = [names[i] for i in missing]
    if len(missing):
      shown = ', '.join(absent[s][:20]) + (f' and {len(missing) - 20} more'
                                           if len(missing) > 20 else '')
      logging.warning('%s: %d label(s) with positives in train have none in %s (AP / ROC AUC '
                      'undefined there): %s%s', dataset, len(missing), s, shown,
                      '' if rule == 'stratified' else
                      ' (--config.data.split=stratified spreads rare labels over the splits)')
  return absent


@dataclasses.dataclass(frozen=True)
class Rows:
  """A data set's raw table and the rows each split holds, in the order of its records.

  The builder encodes exactly these rows, and models that read the raw text rather than the
  token ids (the scikit-learn baseline's TF-IDF) read them back from here, so both see the
  same rows in the same order.

  Attributes:
    table: the raw rows (a packaged table: index 0..n-1; a user's file: line numbers).
    parts: split -> positions (`iloc`) into `table` of its rows, in record order.
    text: the text columns the records' token ids encode (empty: none).
    rule: the split rule in words, for the metadata and the log.
  """
  table: pd.DataFrame
  parts: Mapping[str, np.ndarray]
  text: tuple[str, ...] = ()
  rule: str = ''

  def split(self, name: str) -> pd.DataFrame:
    return self.table.iloc[self.parts[name]]

  def texts(self, name: str) -> list[str]:
    """Split `name`'s text, one string per record: the text columns joined by a space."""
    return cells_lib.joined_texts(self.split(name), self.text)


def split_table(df, max_rows: int, text: Sequence[str] = (), rule: str = 'random',
                labels=None, names: Sequence[str] = (), dataset: str = 'table') -> Rows:
  """The first `max_rows` rows of a packaged table (0: all), re-indexed, split the fixed way:
  by `rule` (RULES; 'stratified' stratifies `labels(table)` `[n, K]`), seed base.SPLIT_SEED,
  fractions base.FRACTIONS. `text`: its text columns. Logs each split's positives per label
  when `labels` is given."""
  if max_rows:
    df = df.iloc[:max_rows]
  df = df.reset_index(drop=True)
  y = None if labels is None else labels(df)
  index, words = split(len(df), base.FRACTIONS, base.SPLIT_SEED, rule, y)
  parts = dict(zip(SPLITS, index))
  if y is not None:
    log_label_counts(dataset, positives(parts, y), {k: len(v) for k, v in parts.items()},
                     list(names) or [str(i) for i in range(np.shape(y)[-1])], rule)
  return Rows(df, parts, tuple(text), words)

