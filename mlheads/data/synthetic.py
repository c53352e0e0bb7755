"""SYNTHETIC extreme multi-label data (no real data): thousands of classes with power-law
frequencies and a signal a model can learn. For scale tests and benchmarks only.

  ./launch.sh synthetic_xml                                # 20,000 rows, 10,000 classes
  ./launch.sh synthetic_xml --config.data.classes=50000    # any K

Class c has a random unit prototype mu_c in R^F (F = `features`). An example takes
L = min(1 + Poisson(mean_labels - 1), max_labels) distinct classes, drawn with probability
proportional to (c + 1)^-alpha (Zipf: class 0 the most frequent, the tail rare, as tags
and codes are), and its features are

    x = sum_{c in labels} mu_c / sqrt(L) + noise * eps,   eps ~ N(0, I_F / F),

so a class's score mu_c . x is about 1 / sqrt(L) for its examples and about
N(0, 1 / F + noise^2 / F) otherwise: a linear or MLP model can learn it, the rare classes
less well (few examples, and F << K prototypes overlap). `oracle_scores` are the scores of
that ideal linear model (the benchmark's stand-in for a trained one).

Records: `features` `[F]` float32; `labels` stored sparse (`base.Field.sparse` =
max_labels): class indices, -1 padded, with `labels_count`. Split: rows permuted by seed 0,
80/10/10. Class names: 'c0', 'c1', ... The settings are in the builder config's name, so
each setting is prepared once (cached in the tfds data dir).
"""

import dataclasses

from absl import logging
import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from mlheads import errors
from mlheads.data import base
from mlheads.data import cells as cells_lib
from mlheads.data import splits as splits_lib

TARGET = 'labels'


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
  rows: int = 20_000
  classes: int = 10_000
  features: int = 64
  max_labels: int = 8
  mean_labels: float = 3.0
  alpha: float = 1.0
  noise: float = 0.5
  seed: int = 0


_SETTINGS = ('rows', 'classes', 'features', 'max_labels', 'mean_labels', 'alpha', 'noise', 'seed')


# The settings' ranges (B26): checked before anything is generated.
RANGES = {
    'rows': errors.Range(10, 10**8, integer=True),
    'classes': errors.Range(1, 10**6, integer=True),
    'features': errors.Range(1, 10**5, integer=True),
    'max_labels': errors.Range(1, 1000, integer=True),
    'mean_labels': errors.Range(1, 1000),
    'alpha': errors.Range(0, 10),
    'noise': errors.Range(0, 1000),
    'seed': errors.Range(0, 2**31 - 1, integer=True),
}


def config_from(data_config) -> SyntheticConfig:
  kw = {f: data_config[f] for f in _SETTINGS}
  for key, allowed in RANGES.items():
    allowed.check(f'--config.data.{key}', kw[key])
  name = 'n{rows}_k{classes}_f{features}_p{max_labels}_m{mean_labels:g}_a{alpha:g}_' \
         'z{noise:g}_s{seed}'.format(**kw).replace('.', 'p')
  return SyntheticConfig(name=name, **kw)


def prototypes(c: SyntheticConfig) -> np.ndarray:
  """The classes' unit prototypes `[K, F]` float32."""
  mu = np.random.default_rng([c.seed, 1]).normal(size=(c.classes, c.features))
  return (mu / np.linalg.norm(mu, axis=1, keepdims=True)).astype(np.float32)


def class_probabilities(c: SyntheticConfig) -> np.ndarray:
  p = (np.arange(c.classes) + 1.0) ** -c.alpha
  return p / p.sum()


def generate(c: SyntheticConfig, rows: int | None = None, seed: int | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(features `[n, F]` float32, label indices `[n, max_labels]` int32 (-1 padded), counts
  `[n]` int32) of `rows` examples (default: the config's) from `seed` (default: its own)."""
  n = c.rows if rows is None else rows
  rng = np.random.default_rng([c.seed if seed is None else seed, 2])
  want = np.minimum(1 + rng.poisson(max(c.mean_labels - 1, 0.0), n), c.max_labels)
  # Draw with replacement, keep each row's first `want` distinct classes (repeats are rare
  # but for the head classes; a row short of distinct draws keeps fewer).
  draws = rng.choice(c.classes, size=(n, 3 * c.max_labels), p=class_probabilities(c))
  rows_ = []
  for d, w in zip(draws, want):
    _, first = np.unique(d, return_index=True)
    rows_.append(d[np.sort(first)][:w].tolist())
  idx, count = base.sparse_labels(rows_, c.max_labels)
  mu = prototypes(c)
  x = np.zeros((n, c.features), np.float32)
  for slot in range(idx.shape[1]):
    has = idx[:, slot] >= 0
    x[has] += mu[idx[has, slot]]
  x /= np.sqrt(np.maximum(count, 1))[:, None]
  x += (c.noise / np.sqrt(c.features)) * rng.normal(size=x.shape).astype(np.float32)
  return x, idx, count


def oracle_scores(c: SyntheticConfig, features: np.ndarray, sharpness: float = 8.0,
                  offset: float = 0.5) -> np.ndarray:
  """The ideal linear model's scores `[n, K]` in (0, 1): sigmoid(s (mu_c . x - offset))."""
  z = sharpness * (features @ prototypes(c).T - offset)
  return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def columns(features: int) -> tuple[str, ...]:
  return tuple(f'x{i}' for i in range(features))


def encode(table: pd.DataFrame, meta: dict, source: str) -> tuple[dict[str, np.ndarray], int]:
  """Raw rows (columns x0 .. x{F-1}) -> ({'features': `[n, F]`}, 0)."""
  cols = columns(int(base.meta_entry(meta, 'features', 'synthetic_xml')))
  cells_lib.require_columns(table, cols, source)
  x = np.stack([cells_lib.numbers(table, col, source) for col in cols], axis=1)
  return {'features': x.astype(np.float32).reshape(len(table), len(cols))}, 0


def _fields(c: SyntheticConfig) -> dict[str, base.Field]:
  return {
      'features': base.Field((c.features,), 'float32', 'features'),
      TARGET: base.Field((c.classes,), 'float32', 'binary',
                         names=tuple(f'c{i}' for i in range(c.classes)), sparse=c.max_labels),
  }


class SyntheticXml(base.ArrayBuilder):
  """SYNTHETIC: features -> thousands of power-law labels (see the module docstring)."""
  # 2.0.0: tensors as raw bytes (base.RAW_BYTES_NOTE), the record checks in the metadata.
  VERSION = tfds.core.Version('2.0.0')
  RELEASE_NOTES = {'2.0.0': base.RAW_BYTES_NOTE, '1.0.0': 'first version'}
  BUILDER_CONFIGS = []

  def fields(self):
    return _fields(self.builder_config)

  def make_splits(self):
    c = self.builder_config
    x, idx, count = generate(c)
    index, rule = splits_lib.split(c.rows, base.FRACTIONS, base.SPLIT_SEED)
    parts = dict(zip(base.SPLITS, index))
    splits = {name: {'features': x[i], TARGET: idx[i], f'{TARGET}_count': count[i]}
              for name, i in parts.items()}
    freq = np.bincount(idx[idx >= 0], minlength=c.classes)
    logging.info('synthetic_xml (SYNTHETIC data): %d rows, %d classes, %.2f labels a row; '
                 'class frequencies from %d (c0) down, %d classes never drawn.', c.rows,
                 c.classes, count.mean(), freq.max(), int((freq == 0).sum()))
    return splits, {'synthetic': True, 'features': c.features, 'split_rule': rule,
                    'settings': {f: getattr(c, f) for f in _SETTINGS}}


def builder(data_config) -> SyntheticXml:
  c = config_from(data_config)
  return SyntheticXml(config=c, data_dir=data_config.dir or None, file_format='array_record')


def schema(data_config) -> dict[str, base.Field]:
  """The record layout `builder(data_config)` writes, without building anything."""
  return _fields(config_from(data_config))
