"""Data sets by name: `load(config.data)` prepares (once) and reads one.

DATASETS maps a name to a function `(data_config) -> ArrayBuilder`; a catalog
tfds data set (catalog.py) maps to a function returning a ready `Dataset`.
ENCODERS maps the same names to `encode(table, meta, source) -> (inputs,
number of texts truncated)`: raw table rows (a pandas DataFrame, its index
naming the rows in messages) -> model inputs `{key: [n, ...]}`, with the data
set's metadata (tokenizer, scaling). Each builder makes its records with it,
and predict encodes new rows with it.
"""

from absl import logging

from mlheads import errors
from mlheads.data import base
from mlheads.data import catalog
from mlheads.data import csv_data
from mlheads.data import digits
from mlheads.data import movies
from mlheads.data import tweets

DATASETS = {
    'trump_tweets': tweets.builder,
    'movie_genres': movies.builder,
    'digit_mosaics': digits.builder,
    'from_csv': csv_data.builder,
    **{name: catalog.loader for name in catalog.CATALOG},
}
ENCODERS = {
    'trump_tweets': tweets.encode,
    'movie_genres': movies.encode,
    'digit_mosaics': digits.encode,
    'from_csv': csv_data.encode,
    **{name: catalog.encode for name in catalog.CATALOG},
}


def get_builder(data_config):
  if data_config.name not in DATASETS:
    raise errors.UsageError(f'unknown data set {data_config.name!r}; known: {sorted(DATASETS)}')
  return DATASETS[data_config.name](data_config)


def load(data_config, batch_size: int = 1) -> base.Dataset:
  """Prepares the named data set if needed and returns its splits and fields.

  `batch_size`: a train split smaller than one batch is rejected, before
  preparing where the builder knows its split sizes in advance (from_csv).
  """
  b = get_builder(data_config)
  if isinstance(b, base.Dataset):
    return b
  planned = b.planned_sizes()
  if planned is not None and planned['train'] < batch_size:
    raise errors.UsageError(f'data set {data_config.name}: the train split would hold '
                            f'{planned["train"]} examples, fewer than one batch of {batch_size} '
                            f'(splits {planned}); use more rows or a smaller '
                            '--config.batch_size')
  meta = base.prepare(b)
  fields = b.fields()
  inputs = {k: f for k, f in fields.items() if f.kind in ('tokens', 'features', 'image')}
  targets = {k: f for k, f in fields.items() if f.kind in ('binary', 'real')}
  splits = {s: b.as_data_source(s) for s in b.info.splits}
  logging.info('Data set %s: %s examples per split.', data_config.name,
               {s: len(v) for s, v in splits.items()})
  return base.Dataset(name=data_config.name, splits=splits, inputs=inputs, targets=targets,
                      meta=meta)
