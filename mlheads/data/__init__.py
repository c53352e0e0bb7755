"""Data sets by name: one registry, `DATASETS`, of how each is prepared and encoded.

Each entry is a `Source`: `build(config.data)` returns a tfds ArrayBuilder (prepared
once, cached) or, for a tfds catalog data set (catalog.py), a ready `Dataset`;
`encode(table, meta, source) -> (inputs, number of texts truncated)` turns raw
table rows (a pandas DataFrame, its index naming the rows in messages) into model
inputs `{key: [n, ...]}` with the data set's metadata (tokenizer, scaling). Each
builder makes its records with it, and predict encodes new rows with it. A new
data set is one module plus one line here.

`load_checked(config)` is what training calls: the prepared splits, read into
memory and checked (B01-B11) before anything compiles.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

from absl import logging
import numpy as np

from mlheads import errors
from mlheads.data import base
from mlheads.data import catalog
from mlheads.data import checks
from mlheads.data import csv_data
from mlheads.data import digits
from mlheads.data import movies
from mlheads.data import synthetic
from mlheads.data import pipeline
from mlheads.data import tweets


@dataclasses.dataclass(frozen=True)
class Source:
  """How one data set is prepared (`build`) and how its raw rows become inputs (`encode`)."""
  build: Callable[..., Any]
  encode: Callable[..., tuple[dict[str, np.ndarray], int]]


DATASETS = {
    'trump_tweets': Source(tweets.builder, tweets.encode),
    'movie_genres': Source(movies.builder, movies.encode),
    'digit_mosaics': Source(digits.builder, digits.encode),
    'from_csv': Source(csv_data.builder, csv_data.encode),
    'synthetic_xml': Source(synthetic.builder, synthetic.encode),
    **{name: Source(catalog.loader, catalog.encode) for name in catalog.CATALOG},
}


def get(name: str) -> Source:
  """The data set `config.data.name` names; the one place that name is checked (B14)."""
  if name not in DATASETS:
    raise errors.UsageError(f'unknown data set {name!r}; known: {sorted(DATASETS)}')
  return DATASETS[name]


def load(data_config, batch_size: int = 1) -> base.Dataset:
  """Prepares the named data set if needed and returns its splits and fields.

  `batch_size`: a train split smaller than one batch is rejected, before
  preparing where the builder knows its split sizes in advance (from_csv).
  """
  b = get(data_config.name).build(data_config)
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


def load_checked(config) -> tuple[base.Dataset, dict[str, dict[str, np.ndarray]]]:
  """The data set's splits as checked in-memory arrays (B01-B11 before compiling)."""
  ds = load(config.data, batch_size=config.batch_size)
  arrays = {}
  for split in base.SPLITS:
    arrays[split] = pipeline.read_split(ds.split(split))
    checks.check_split(ds, split, arrays[split])
  checks.check_batch_size(ds, 'train', pipeline.num_rows(arrays['train']), config.batch_size)
  logging.info('Labels in train: %s', checks.label_summary(ds, arrays['train']))
  return ds, arrays
