import numpy as np
import pytest

from mlheads import data
from mlheads.data import checks
from mlheads.data import pipeline


@pytest.fixture(scope='module')
def tweets(tweets_dir):
  from conftest import tiny_headline_config  # pylint: disable=g-import-not-at-top
  cfg = tiny_headline_config(tweets_dir).data
  ds = data.load(cfg)
  return ds, {s: pipeline.read_split(ds.split(s)) for s in ('train', 'validation', 'test')}


def test_slice_is_split_80_10_10_without_overlap(tweets):
  ds, arrays = tweets
  sizes = {s: len(a['tokens']) for s, a in arrays.items()}
  assert sizes == {'train': 192, 'validation': 24, 'test': 24}
  assert set(ds.inputs) == {'tokens', 'bigrams', 'chargrams', 'extra'}
  assert set(ds.targets) == {'retweeted', 'engagement', 'log_counts'}


def test_records_are_valid_and_scaled_on_train(tweets):
  ds, arrays = tweets
  for split, a in arrays.items():
    checks.check_split(ds, split, a)  # raises on any bad value
    assert a['tokens'].max() < 60
  extra = arrays['train']['extra']
  np.testing.assert_allclose(extra.mean(0), 0, atol=1e-5)
  # android/iphone flags may be constant in a slice (std 0 -> left unscaled at 0).
  assert np.all((np.abs(extra.std(0) - 1) < 1e-3) | (extra.std(0) < 1e-6))


def test_label_is_retweets_above_train_median(tweets):
  ds, arrays = tweets
  train = arrays['train']
  retweets = np.expm1(train['log_counts'][:, 0])
  median = np.median(retweets)
  np.testing.assert_array_equal(train['retweeted'][:, 0], (retweets > median + 1e-3))
  assert 'train median' in ds.meta['label_rule']


def test_engagement_is_retweets_and_likes_above_their_train_medians(tweets):
  ds, arrays = tweets
  counts = {s: np.expm1(a['log_counts'].astype(np.float64)) for s, a in arrays.items()}
  medians = np.median(counts['train'], axis=0)
  for split, a in arrays.items():
    np.testing.assert_array_equal(a['engagement'], counts[split] > medians + 1e-3)
  np.testing.assert_array_equal(arrays['train']['engagement'][:, 0],
                                arrays['train']['retweeted'][:, 0])
  assert ds.class_names('engagement') == ['retweets', 'likes']
  assert 'favorite_count' in ds.meta['label_rule']


def test_rows_are_the_records_rows_in_order(tweets):
  """`rows` hands back the raw rows the builder encoded: re-encoding them gives the records."""
  from conftest import tiny_headline_config  # pylint: disable=g-import-not-at-top
  ds, arrays = tweets
  cfg = tiny_headline_config('unused').data
  rows = data.get('trump_tweets').rows(cfg)
  for split, a in arrays.items():
    inputs, _ = data.get('trump_tweets').encode(rows.split(split), ds.meta, 'test')
    np.testing.assert_array_equal(inputs['tokens'], a['tokens'])
    np.testing.assert_array_equal(inputs['extra'], a['extra'])
    assert rows.texts(split) == [str(t) for t in rows.split(split)['text']]


def test_preparing_again_gives_the_same_data(tweets, tmp_path):
  from conftest import tiny_headline_config  # pylint: disable=g-import-not-at-top
  _, arrays = tweets
  ds2 = data.load(tiny_headline_config(str(tmp_path)).data)
  again = pipeline.read_split(ds2.split('test'))
  for k, v in arrays['test'].items():
    np.testing.assert_array_equal(v, again[k])
