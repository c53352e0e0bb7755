"""digit_mosaics: labels are the digits placed; train and test digits never share a source image."""

import jax
import ml_collections
import numpy as np

from mlheads.data import base
from mlheads.data import digits
from mlheads.model import trunks
import mlheads.data as data_lib


def test_compose_labels_are_the_digits_placed():
  images, labels = digits.load_source()
  mosaics, hot, placed = digits.compose(images[:50], labels[:50], 400, seed=7)
  assert mosaics.shape == (400, 16, 16, 1) and hot.shape == (400, 10)
  filled = (placed >= 0).sum(1)
  assert set(filled.tolist()) == {1, 2, 3, 4}
  for i in range(400):
    want = np.zeros(10)
    for cell in range(4):
      r, c = divmod(cell, 2)
      tile = mosaics[i, 8 * r:8 * r + 8, 8 * c:8 * c + 8, 0]
      if placed[i, cell] < 0:
        assert not tile.any()
      else:
        np.testing.assert_array_equal(tile, images[placed[i, cell]])
        want[labels[placed[i, cell]]] = 1
    np.testing.assert_array_equal(hot[i], want)


def test_builder_splits_use_disjoint_source_images(tmp_path):
  cfg = ml_collections.ConfigDict(dict(name='digit_mosaics', dir=str(tmp_path), max_rows=150))
  ds = data_lib.load(cfg)
  used = {s: set(v) for s, v in ds.meta['source_images_used'].items()}
  assert used['train'] and used['validation'] and used['test']
  assert not used['train'] & used['test']
  assert not used['train'] & used['validation']
  assert not used['validation'] & used['test']
  for s in base.SPLITS:
    src = ds.split(s)
    assert len(src) == 150
    hot = np.stack([src[i]['digits'] for i in range(len(src))])
    img = np.stack([src[i]['image'] for i in range(len(src))])
    assert set(hot.sum(1).astype(int).tolist()) <= {1, 2, 3, 4}
    assert img.min() >= 0 and img.max() <= 1 and img.max() > 0


def test_conv_trunk():
  t = trunks.ConvTrunk(channels=(3, 5), hidden=(7,), image_input='image')
  x = {'image': np.ones((2, 16, 16, 1), np.float32)}
  params = t.init(jax.random.key(0), x)
  feats, inter = t.apply(params, x)
  assert feats.shape == (2, 7) and inter['conv'].shape == (2, 4 * 4 * 5)
