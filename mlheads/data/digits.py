"""Pictures holding several digits: the seed's "a cat and a mouse in one picture".

Each example is a 2x2 grid of scikit-learn's 8x8 handwritten digits
(`sklearn.datasets.load_digits`, 1,797 images shipped with the package): 1 to
4 cells (uniformly) hold a digit drawn at random, the other cells stay blank.
Records:
  image   `[16, 16, 1]` float32 in [0, 1] (pixel / 16).
  digits  `[10]` float32 0/1: which digits 0-9 appear (a digit drawn twice
          counts once).
Splits: the 1,797 source images are first permuted by seed 0 and cut 60% /
20% / 20% into train / validation / test pools; each split's mosaics are
composed only from its own pool (seeds 1, 2, 3), so no handwritten digit is
seen in training and test. Sizes: 12,000 / 2,000 / 2,000 mosaics
(`max_rows` caps every split for quick checks).
`encode` turns raw rows of 256 pixel columns `px0..px255` (the mosaic row by
row, values 0-16 as in scikit-learn's digits) into `image`, for the builder
and for predict alike.
"""

import dataclasses

from absl import logging
import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from mlheads.data import base
from mlheads.data import cells as cells_lib
from mlheads.data import splits as splits_lib

CELL = 8
GRID = 2
_SOURCE_SEED = 0
_SOURCE_FRACTIONS = (0.6, 0.2, 0.2)
_COMPOSE_SEEDS = {'train': 1, 'validation': 2, 'test': 3}
_SIZES = {'train': 12_000, 'validation': 2_000, 'test': 2_000}
SIDE = GRID * CELL
PIXELS = tuple(f'px{i}' for i in range(SIDE * SIDE))  # row-major over the 16 x 16 mosaic
MAX_PIXEL = 16.0


@dataclasses.dataclass
class DigitsConfig(tfds.core.BuilderConfig):
  max_rows: int = 0  # 0: the full sizes; else at most this many mosaics per split.
  split: str = 'random'  # of the source images; 'stratified': by digit (splits.py)


def _config(max_rows: int, split: str = 'random') -> DigitsConfig:
  splits_lib.check_rule(split)
  name = (f'rows{max_rows}' if max_rows else 'full') + ('' if split == 'random' else f'_{split}')
  return DigitsConfig(name=name, max_rows=max_rows, split=split)


def load_source(raw: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's digits: images `[1797, 8, 8]` float in [0, 1] (raw: 0-16), labels `[1797]`."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top  (only when preparing)
  d = datasets.load_digits()
  images = d.images if raw else d.images / MAX_PIXEL
  return images.astype(np.float32), d.target.astype(np.int64)


def encode(table: pd.DataFrame, meta: dict, source: str) -> tuple[dict[str, np.ndarray], int]:
  """Raw rows (PIXELS, each in [0, 16]) -> ({'image': `[n, 16, 16, 1]` in [0, 1]}, 0)."""
  del meta  # nothing is fitted on train.
  cells_lib.require_columns(table, PIXELS, source)
  pixels = np.stack([cells_lib.numbers(table, col, source, low=0, high=MAX_PIXEL)
                     for col in PIXELS], axis=1).reshape(len(table), SIDE * SIDE)
  return {'image': (pixels / MAX_PIXEL).astype(np.float32).reshape(-1, SIDE, SIDE, 1)}, 0


def compose(images: np.ndarray, labels: np.ndarray, n: int,
            seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`n` mosaics from the source `images` `[m, 8, 8]`.

  Returns (mosaics `[n, 16, 16, 1]`, multi-hot digits `[n, 10]`, the source
  index placed in each cell `[n, 4]`, -1 for a blank cell).
  """
  rng = np.random.default_rng(seed)
  cells = GRID * GRID
  placed = np.full((n, cells), -1, np.int64)
  for i in range(n):
    k = rng.integers(1, cells + 1)
    where = rng.choice(cells, size=k, replace=False)
    placed[i, where] = rng.integers(0, len(images), size=k)
  mosaics = np.zeros((n, GRID * CELL, GRID * CELL, 1), np.float32)
  multi_hot = np.zeros((n, 10), np.float32)
  for c in range(cells):
    r, col = divmod(c, GRID)
    has = placed[:, c] >= 0
    mosaics[has, r * CELL:(r + 1) * CELL, col * CELL:(col + 1) * CELL, 0] = images[placed[has, c]]
    multi_hot[np.flatnonzero(has), labels[placed[has, c]]] = 1.0
  return mosaics, multi_hot, placed


class DigitMosaics(base.ArrayBuilder):
  """2x2 mosaics of 1-4 sklearn digits -> the set of digits present."""
  # 2.1.0: records in the order they are made (tfds' shuffling off).
  VERSION = tfds.core.Version('2.1.0')
  RELEASE_NOTES = {'2.1.0': base.RAW_BYTES_NOTE + '; records in row order',
                   '2.0.0': base.RAW_BYTES_NOTE, '1.0.0': 'first version'}
  BUILDER_CONFIGS = [_config(0)]

  def fields(self):
    return schema(None)

  def make_splits(self):
    c = self.builder_config
    images, labels = load_source(raw=True)
    one_hot = np.eye(10, dtype=bool)[labels]
    index, rule = splits_lib.split(len(images), _SOURCE_FRACTIONS, _SOURCE_SEED, c.split,
                                   one_hot)
    pools = dict(zip(base.SPLITS, index))
    splits, sources = {}, {}
    for name, pool in pools.items():
      n = min(_SIZES[name], c.max_rows) if c.max_rows else _SIZES[name]
      mosaics, multi_hot, placed = compose(images[pool], labels[pool], n, _COMPOSE_SEEDS[name])
      pixels = pd.DataFrame(mosaics.reshape(n, SIDE * SIDE), columns=PIXELS)
      splits[name] = {**encode(pixels, {}, 'digit_mosaics')[0], 'digits': multi_hot}
      # Global source-image ids per cell, kept so tests can check pools stay disjoint.
      sources[name] = np.unique(pool[placed[placed >= 0]]).tolist()
    logging.info('digit_mosaics: %s mosaics from %s source images.',
                 {k: len(v['image']) for k, v in splits.items()},
                 {k: len(v) for k, v in pools.items()})
    meta = {
        'split_rule': (f'source images: {rule}; mosaics composed per split with seeds '
                       f'{_COMPOSE_SEEDS}'),
        'source_images_used': sources,
    }
    return splits, meta


def schema(data_config) -> dict[str, base.Field]:
  """The record layout (the same for every setting), without building anything."""
  del data_config
  return {
      'image': base.Field((SIDE, SIDE, 1), 'float32', 'image'),
      'digits': base.Field((10,), 'float32', 'binary', names=tuple(str(d) for d in range(10))),
  }


def builder(data_config) -> DigitMosaics:
  split = data_config.get('split', 'random')  # a partial config (tests, the API): random
  return base.make_builder(DigitMosaics, _config(data_config.max_rows, split), data_config)
