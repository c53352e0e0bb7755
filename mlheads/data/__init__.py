"""Data sets by name: one registry, `DATASETS`, of how each is prepared and encoded.

Each entry is a `Source`: `build(config.data)` returns a tfds ArrayBuilder (prepared
once, cached) or, for a tfds catalog data set (catalog.py), a ready `Dataset`;
`encode(table, meta, source) -> (inputs, number of texts truncated)` turns raw
table rows (a pandas DataFrame, its index naming the rows in messages) into model
inputs `{key: [n, ...]}` with the data set's metadata (tokenizer, scaling). Each
builder makes its records with it, and predict encodes new rows with it.
`rows(config.data)`, for a data set with text, hands back the raw table and the
rows of each split in record order (`splits.Rows`; the builder encodes the same
rows), for models that read the text itself (the baseline's TF-IDF); None where
the records are all there is (digit_mosaics: pixels) or no table is at hand
(the tfds catalog). A new data set is one module plus one line here.

`load_checked(config)` is what training calls: the prepared splits as sources
read batch by batch from their files (records.py), whose contents were checked
(B01-B11) when they were prepared; a run checks only what was recorded then.
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
from mlheads.data import fingerprint as fingerprint_lib
from mlheads.data import movies
from mlheads.data import splits
from mlheads.data import synthetic
from mlheads.data import tweets


@dataclasses.dataclass(frozen=True)
class Source:
  """How one data set is prepared (`build`), how its raw rows become inputs (`encode`),
  the record fields it will have (`schema(config.data)`, known from the settings alone: it
  checks them, and lets every name in the config be checked before any data is read) and
  (`rows`, None where there are none) its raw rows of each split."""
  build: Callable[..., Any]
  encode: Callable[..., tuple[dict[str, np.ndarray], int]]
  schema: Callable[..., dict[str, base.Field]]
  rows: Callable[..., splits.Rows] | None = None


DATASETS = {
    'trump_tweets': Source(tweets.builder, tweets.encode, tweets.schema, tweets.rows),
    'movie_genres': Source(movies.builder, movies.encode, movies.schema, movies.rows),
    'digit_mosaics': Source(digits.builder, digits.encode, digits.schema),
    'from_csv': Source(csv_data.builder, csv_data.encode, csv_data.schema, csv_data.rows),
    'synthetic_xml': Source(synthetic.builder, synthetic.encode, synthetic.schema),
    **{name: Source(catalog.loader, catalog.encode, catalog.schema) for name in catalog.CATALOG},
}


def get(name: str) -> Source:
  """The data set `config.data.name` names; the one place that name is checked (B14)."""
  if name not in DATASETS:
    raise errors.UsageError(f'unknown data set {name!r}; known: {sorted(DATASETS)}')
  return DATASETS[name]


def schema(data_config) -> base.Dataset:
  """The data set's fields (no splits, no metadata) from `config.data` alone: no data is read
  or prepared. Raises UsageError for a bad `data` setting (B26)."""
  return base.Dataset.of_fields(data_config.name, get(data_config.name).schema(data_config))


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
  meta, digests = base.prepare(b)
  splits = base.prepared_splits(b)
  logging.info('Data set %s: %s examples per split.', data_config.name,
               {s: len(v) for s, v in splits.items()})
  fingerprint = fingerprint_lib.of_files(
      {s: [str(p) for p in b.info.splits[s].filepaths] for s in splits},
      {s: len(v) for s, v in splits.items()}, meta, digests)
  return base.Dataset.of_fields(data_config.name, b.fields(), splits=splits, meta=meta,
                                fingerprint=fingerprint)


def load_checked(config) -> base.Dataset:
  """The data set, its records checked (B01-B11) when prepared and its splits as sources;
  raises before anything compiles."""
  ds = load(config.data, batch_size=config.batch_size)
  check_loaded(ds, config.batch_size)
  return ds


def check_loaded(ds: base.Dataset, batch_size: int) -> None:
  """A loaded data set against the checks recorded when it was prepared (B01-B11) and the
  batch size; reads no split."""
  recorded = base.meta_entry(ds.meta, 'checks', ds.name)
  checks.check_recorded(ds, recorded, {s: len(ds.split(s)) for s in base.SPLITS}, batch_size)
  logging.info('Labels in train: %s', recorded['train']['labels'])
