"""movie_genres on a slice of the real table."""

import ml_collections
import numpy as np

from mlheads.data import base
from mlheads.data import movies
from mlheads.data import ngrams
from mlheads.data import tokenizer as tokenizer_lib
import mlheads.data as data_lib

ROWS = 300


def _config(tmp_path, max_len=3):
  return ml_collections.ConfigDict(dict(name='movie_genres', dir=str(tmp_path), vocab_size=200,
                                        max_len=max_len, max_rows=ROWS, max_ngrams=24,
                                        hash_buckets=64))


def _read(ds):
  return {s: {k: np.stack([src[i][k] for i in range(len(src))]) for k in src[0]}
          for s, src in ds.splits.items()}


def test_slice_matches_the_table(tmp_path):
  ds = data_lib.load(_config(tmp_path))
  table = movies.load_table().iloc[:ROWS]
  arrays = _read(ds)
  assert {s: len(a['genres']) for s, a in arrays.items()} == dict(
      zip(base.SPLITS, (240, 30, 30)))
  # every genre count survives the split (records are shuffled within a split)
  total = sum(a['genres'].sum(0) for a in arrays.values())
  np.testing.assert_array_equal(total, table[list(movies.GENRES)].to_numpy().sum(0))
  for a in arrays.values():
    assert set(np.unique(a['genres'])) <= {0.0, 1.0}
    assert ((a['tokens'] >= 0) & (a['tokens'] < 200)).all()
    assert np.isfinite(a['numeric']).all()
  # numbers standardized on train
  np.testing.assert_allclose(arrays['train']['numeric'].mean(0), 0, atol=1e-4)
  # titles longer than max_len words or max_ngrams character n-grams are truncated and counted
  words = [tokenizer_lib.split_words(t) for t in table['title']]
  n_long = sum(len(w) > 3 or sum(len(ngrams.char_ngrams(x)) for x in w) > 24 for w in words)
  assert sum(ds.meta['truncated'].values()) == n_long > sum(len(w) > 3 for w in words)
  for a in arrays.values():
    for key, length in (('bigrams', 3), ('chargrams', 24)):
      assert a[key].shape[1:] == (length,) and ((a[key] >= 0) & (a[key] <= 64)).all()


def test_numeric_features_mark_missing_budgets():
  table = movies.load_table().iloc[:ROWS]
  raw = movies.numeric_features(table)
  missing = table['budget'].isna().to_numpy()
  assert missing.any() and (~missing).any()
  np.testing.assert_array_equal(raw[:, 3], missing)
  np.testing.assert_array_equal(raw[missing, 2], 0.0)
  np.testing.assert_allclose(raw[~missing, 2], np.log1p(table['budget'][~missing]))
  np.testing.assert_allclose(raw[:, 5], np.log1p(table['votes']))


def test_stratified_rows_are_the_records_rows(tmp_path):
  """split=stratified: `rows` (what the baseline reads) cuts the table as the builder did, and
  every genre with positives in train has some in validation and in test."""
  cfg = _config(tmp_path)
  cfg.split = 'stratified'
  ds = data_lib.load(cfg)
  assert 'iterative stratification' in ds.meta['split_rule']
  arrays, rows = _read(ds), movies.rows(cfg)
  assert rows.rule == ds.meta['split_rule']
  for s, a in arrays.items():
    np.testing.assert_array_equal(a['genres'], rows.split(s)[list(movies.GENRES)].to_numpy())
  train = arrays['train']['genres'].sum(0) > 0
  for s in ('validation', 'test'):
    assert (arrays[s]['genres'].sum(0)[train] > 0).all(), s
