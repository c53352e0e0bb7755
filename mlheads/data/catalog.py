"""Multi-label text data sets from the tensorflow-datasets catalog (GoEmotions, ...).

The catalog builder prepares its own data once (it needs the network the
first time; a copy prepared elsewhere with
`tfds build goemotions --file_format=array_record` and placed in the data dir
works offline), and is read through `tfds.builder(name).as_data_source`. Its
records are then mapped, in memory at each run (and checked there, B01-B11), to the
record layout every mlheads data set has:
  tokens  `[max_len]` int32: the text as word ids (vocabulary built on the
          train split, as for the tweets; 1 = out of vocabulary).
  bigrams, chargrams  `[max_len]`, `[max_ngrams]` int32: its hashed word bigrams
          and character 3-5-grams (ngrams.py).
  labels  `[K]` float32 0/1: one column per boolean label feature.
Splits: the catalog's own (CatalogSpec.splits); `max_rows` keeps the first
rows of each.

CATALOG lists the data sets a config can name (`config.data.name`); adding one
is one entry: its text feature, its label features and its split names.
"""

import dataclasses
import importlib

from absl import logging
import numpy as np
import pandas as pd
import tensorflow_datasets as tfds
from tensorflow_datasets.core import read_only_builder

from mlheads import errors
from mlheads.data import base
from mlheads.data import cells as cells_lib
from mlheads.data import checks
from mlheads.data import fingerprint as fingerprint_lib
from mlheads.data import ngrams
from mlheads.data import pipeline
from mlheads.data import tokenizer as tokenizer_lib

GOEMOTIONS_LABELS = (
    'admiration', 'amusement', 'anger', 'annoyance', 'approval', 'caring', 'confusion',
    'curiosity', 'desire', 'disappointment', 'disapproval', 'disgust', 'embarrassment',
    'excitement', 'fear', 'gratitude', 'grief', 'joy', 'love', 'nervousness', 'optimism',
    'pride', 'realization', 'relief', 'remorse', 'sadness', 'surprise', 'neutral')
TARGET = 'labels'


@dataclasses.dataclass(frozen=True)
class CatalogSpec:
  """How one catalog data set maps to tokens + labels.

  Attributes:
    tfds_name: the name tfds.builder knows.
    text: the text feature.
    labels: boolean features, one per class.
    splits: mlheads split -> the catalog's split name.
    module: the module defining the builder; tfds imports its catalog lazily,
      so the builder is registered only once this is imported.
  """
  tfds_name: str
  text: str
  labels: tuple[str, ...]
  module: str = ''
  splits: tuple[tuple[str, str], ...] = (('train', 'train'), ('validation', 'validation'),
                                         ('test', 'test'))


CATALOG = {
    'goemotions': CatalogSpec('goemotions', 'comment_text', GOEMOTIONS_LABELS,
                              module='tensorflow_datasets.text.goemotions'),
}


def _first_line(e: Exception) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__


def source_builder(spec: CatalogSpec, data_dir: str) -> tfds.core.DatasetBuilder:
  """The catalog builder, prepared; any failure becomes one UsageError line.

  A copy already prepared in `data_dir` is read from its files alone, with no
  builder code (so no TensorFlow and no network); otherwise the catalog code
  builds it.
  """
  hint = (f'prepare it where the network (and TensorFlow, which some catalog builders import) '
          f'is available with `tfds build {spec.tfds_name} --file_format=array_record`, then '
          'copy the folder into --config.data.dir')
  try:
    return read_only_builder.builder_from_files(spec.tfds_name, data_dir=data_dir or None)
  except Exception:  # pylint: disable=broad-except  (not prepared there: build it below)
    pass
  try:
    if spec.module:
      importlib.import_module(spec.module)
    b = tfds.builder(spec.tfds_name, data_dir=data_dir or None, file_format='array_record')
  except Exception as e:  # pylint: disable=broad-except  (tfds raises many kinds)
    raise errors.UsageError(f'catalog data set {spec.tfds_name}: cannot build it here '
                            f'({_first_line(e)}); {hint}') from None
  try:
    b.download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except
    raise errors.UsageError(f'catalog data set {spec.tfds_name}: preparing it in {b.data_dir} '
                            f'failed ({_first_line(e)}); {hint}') from None
  return b


def _text(value) -> str:
  return value.decode('utf-8', 'replace') if isinstance(value, bytes) else str(value)


def read(source, spec: CatalogSpec, max_rows: int) -> tuple[list[str], np.ndarray]:
  """Texts and `[n, K]` 0/1 labels of one catalog split."""
  n = min(len(source), max_rows) if max_rows else len(source)
  records = [source[i] for i in range(n)]  # mocked sources lack a working __getitems__.
  missing = [k for k in (spec.text,) + spec.labels if records and k not in records[0]]
  if missing:
    raise errors.UsageError(f'catalog data set {spec.tfds_name}: records lack features '
                            f'{missing}; they have {sorted(records[0])}')
  texts = [_text(r[spec.text]) for r in records]
  labels = np.array([[float(r[k]) for k in spec.labels] for r in records],
                    np.float32).reshape(n, len(spec.labels))
  return texts, labels


def encode(table: pd.DataFrame, meta: dict, source: str) -> tuple[dict[str, np.ndarray], int]:
  """Raw rows (a `text` column) -> ({'tokens', 'bigrams', 'chargrams'}, number of texts
  truncated)."""
  cells_lib.require_columns(table, ('text',), source)
  return ngrams.encode_with(meta, cells_lib.texts(table, 'text'), 'catalog')


def loader(data_config) -> base.Dataset:
  """Prepares (once) and reads a CATALOG data set, mapped to tokens + labels."""
  base.check_lengths(data_config)
  spec = CATALOG[data_config.name]
  b = source_builder(spec, data_config.dir)
  raw = {ours: read(b.as_data_source(theirs), spec, data_config.max_rows)
         for ours, theirs in spec.splits}
  tok = tokenizer_lib.Tokenizer.fit(raw['train'][0], data_config.vocab_size,
                                    data_config.max_len)
  d = data_config
  coding = {'tokenizer': tok.to_json(),
            'ngrams': ngrams.Hasher(d.hash_buckets, d.max_len, d.max_ngrams).to_json()}
  arrays, truncated = {}, {}
  for name, (texts, labels) in raw.items():
    inputs, truncated[name] = encode(pd.DataFrame({'text': texts}, dtype=object), coding,
                                     f'{data_config.name} {name}')
    arrays[name] = {**inputs, TARGET: labels}
  logging.info('%s (tfds catalog, %s): %s rows; vocabulary %d words; texts truncated to %d '
               'tokens: %s.', data_config.name, b.data_dir,
               {k: len(v[TARGET]) for k, v in arrays.items()}, tok.vocab_size,
               data_config.max_len, truncated)
  meta = {**coding, 'source': f'tfds {spec.tfds_name} in {b.data_dir}',
          'split_rule': f'the catalog splits {dict(spec.splits)}', 'truncated': truncated}
  # Mapped in memory at each run, so checked here, as a builder checks what it writes.
  ds = base.Dataset.of_fields(data_config.name, schema(data_config),
                              splits={k: pipeline.ArraySource(v) for k, v in arrays.items()},
                              meta=meta)
  meta['checks'] = checks.check_splits(ds, arrays)
  return dataclasses.replace(ds, fingerprint=fingerprint_lib.of_arrays(arrays, meta))


def schema(data_config) -> dict[str, base.Field]:
  """The record layout `loader(data_config)` gives, without reading anything."""
  spec, d = CATALOG[data_config.name], data_config
  base.check_lengths(d)
  return {'tokens': base.Field((d.max_len,), 'int32', 'tokens', vocab_size=d.vocab_size),
          **ngrams.fields(d.hash_buckets, d.max_len, d.max_ngrams),
          TARGET: base.Field((len(spec.labels),), 'float32', 'binary', names=spec.labels)}
