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
  c = dict(name='goemotions', dir=str(tmp_path), vocab_size=60, max_len=5, max_rows=0,
           max_ngrams=16, hash_buckets=64)
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


class FakeCatalogText(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A catalog-like data set prepared on disk whose code tfds does not know."""
  VERSION = tfds.core.Version('0.1.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {'text': tfds.features.Text(), 'a': np.bool_, 'b': np.bool_}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {s: self._generate_examples(s) for s in ('train', 'validation', 'test')}

  def _generate_examples(self, split):
    for i in range(12):
      yield i, {'text': f'{split} word{i % 3} common', 'a': i % 2 == 0, 'b': i % 3 == 0}


def test_a_prepared_copy_is_read_from_its_files_without_code(tmp_path, monkeypatch):
  FakeCatalogText(data_dir=str(tmp_path), file_format='array_record').download_and_prepare()
  spec = catalog.CatalogSpec('fake_catalog_text', 'text', ('a', 'b'))
  monkeypatch.setitem(catalog.CATALOG, 'fake', spec)
  monkeypatch.setitem(data_lib.DATASETS, 'fake', data_lib.Source(catalog.loader, catalog.encode,
                                                                   catalog.schema))
  ds = data_lib.load(_config(tmp_path, name='fake'))
  assert {s: len(v) for s, v in ds.splits.items()} == {'train': 12, 'validation': 12, 'test': 12}
  got = sorted(tuple(ds.split('test')[i]['labels']) for i in range(12))
  want = sorted((float(i % 2 == 0), float(i % 3 == 0)) for i in range(12))
  assert got == want
  # 'test' is not a train word: out of vocabulary; 'common' is known.
  words = ds.meta['tokenizer']['words']
  assert 'test' not in words and 'common' in words
  assert all((ds.split('test')[i]['tokens'] == 1).any() for i in range(12))
