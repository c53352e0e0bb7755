"""A catalog tfds data set (goemotions) read through as_data_source, with tfds.testing.mock_data."""

import types

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from mlheads import errors
from mlheads.data import catalog
import mlheads.data as data_lib


@pytest.fixture
def goemotions_without_tf(monkeypatch):
  """goemotions' tfds code spells its label type `tf.bool`; no TensorFlow here, so lend it numpy's."""
  from tensorflow_datasets.text import goemotions  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(goemotions, 'tf', types.SimpleNamespace(bool=np.bool_))


def _config(tmp_path, **kw):
  c = dict(name='goemotions', dir=str(tmp_path), vocab_size=60, max_len=5, max_rows=0)
  return ml_collections.ConfigDict({**c, **kw})


def test_goemotions_maps_to_tokens_and_28_labels(tmp_path, goemotions_without_tf):
  del goemotions_without_tf
  with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
    ds = data_lib.load(_config(tmp_path))
    source = tfds.builder('goemotions', data_dir=str(tmp_path)).as_data_source('test')
    raw = [source[i] for i in range(20)]
  assert set(ds.splits) == {'train', 'validation', 'test'}
  assert ds.targets['labels'].names == catalog.GOEMOTIONS_LABELS
  test = ds.split('test')
  assert len(test) == 20
  for i in range(20):
    r = test[i]
    want = [float(raw[i][k]) for k in catalog.GOEMOTIONS_LABELS]
    np.testing.assert_array_equal(r['labels'], want)
    assert r['tokens'].shape == (5,) and ((r['tokens'] >= 0) & (r['tokens'] < 60)).all()
  labels = np.stack([test[i]['labels'] for i in range(20)])
  assert 0 < labels.mean() < 1  # the mock's booleans came through, not all one value


def test_max_rows_keeps_the_first_rows(tmp_path, goemotions_without_tf):
  del goemotions_without_tf
  with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
    ds = data_lib.load(_config(tmp_path, max_rows=6))
    source = tfds.builder('goemotions', data_dir=str(tmp_path)).as_data_source('train')
    raw = [source[i] for i in range(6)]
  assert {s: len(v) for s, v in ds.splits.items()} == {'train': 6, 'validation': 6, 'test': 6}
  for i in range(6):
    np.testing.assert_array_equal(ds.split('train')[i]['labels'],
                                  [float(raw[i][k]) for k in catalog.GOEMOTIONS_LABELS])


def test_unavailable_catalog_set_is_one_line(tmp_path, monkeypatch):
  def fail(*a, **k):
    raise ConnectionError('no route to host\nsecond line')
  monkeypatch.setattr(tfds, 'builder', fail)
  with pytest.raises(errors.UsageError, match=r'catalog data set goemotions: cannot build it '
                     r'here \(no route to host\); .*tfds build goemotions') as e:
    data_lib.load(_config(tmp_path))
  assert '\n' not in str(e.value)
