"""Data sets by name: `load(config.data)` prepares (once) and reads one.

DATASETS maps a name to a function `(data_config) -> ArrayBuilder`.
"""

from absl import logging

from mlheads import errors
from mlheads.data import base
from mlheads.data import tweets

DATASETS = {
    'trump_tweets': tweets.builder,
}


def get_builder(data_config) -> base.ArrayBuilder:
  if data_config.name not in DATASETS:
    raise errors.UsageError(f'unknown data set {data_config.name!r}; known: {sorted(DATASETS)}')
  return DATASETS[data_config.name](data_config)


def load(data_config) -> base.Dataset:
  """Prepares the named data set if needed and returns its splits and fields."""
  b = get_builder(data_config)
  meta = base.prepare(b)
  fields = b.fields()
  inputs = {k: f for k, f in fields.items() if f.kind in ('tokens', 'features', 'image')}
  targets = {k: f for k, f in fields.items() if f.kind in ('binary', 'real')}
  splits = {s: b.as_data_source(s) for s in b.info.splits}
  logging.info('Data set %s: %s examples per split.', data_config.name,
               {s: len(v) for s, v in splits.items()})
  return base.Dataset(name=data_config.name, splits=splits, inputs=inputs, targets=targets,
                      meta=meta)
