"""Hashed n-grams: fastText's subwords, crc32 buckets, padding, truncation, lengths from data."""

import zlib

import numpy as np

from mlheads.data import ngrams
from mlheads.data import tokenizer as tokenizer_lib


def test_char_ngrams_are_fasttexts_subwords_of_the_bracketed_word():
  assert ngrams.char_ngrams('ab', (3,)) == ['<ab', 'ab>']
  assert ngrams.char_ngrams('cat') == ['<ca', 'cat', 'at>', '<cat', 'cat>', '<cat>']
  assert ngrams.word_bigrams(['a', 'b', 'c']) == ['a b', 'b c']


def test_ids_are_crc32_buckets_padded_on_the_right_and_cut_texts_counted():
  tok = tokenizer_lib.Tokenizer.fit(['the cat', 'the dog'], vocab_size=10, max_len=3)
  hasher = ngrams.Hasher(buckets=50, max_bigrams=2, max_chargrams=7)
  out, cut = ngrams.encode_texts(['The cat', 'a b c d', ''], tok, hasher)
  h = lambda s: 1 + zlib.crc32(s.encode()) % 50
  np.testing.assert_array_equal(out['bigrams'][0], [h('the cat'), 0])
  np.testing.assert_array_equal(out['chargrams'][0],
                                [h(g) for g in ngrams.char_ngrams('the')] + [h('<ca')])
  np.testing.assert_array_equal(out['tokens'][0], tok.encode('the cat')[0])
  np.testing.assert_array_equal(out['bigrams'][2], [0, 0])  # an empty text is all padding
  assert out['bigrams'].dtype == out['chargrams'].dtype == np.int32
  assert all((a >= 0).all() and (a <= 50).all() for a in out.values())
  # 'the cat' has 9 subwords > 7; 'a b c d' has 4 words > 3 and 3 bigrams > 2; '' fits.
  assert cut == 2


def test_same_text_same_ids_and_json_round_trip():
  hasher = ngrams.Hasher(64, 4, 16)
  again = ngrams.Hasher.from_json(hasher.to_json())
  words = tokenizer_lib.split_words('Unseen wordzzz here')
  assert again.ids(words) == hasher.ids(words)
  assert again.vocab_size == 65


def test_lengths_from_the_train_texts_are_the_995th_percentile_within_caps():
  texts = ['a b'] * 199 + [' '.join(['w'] * 400)]
  max_len, max_ngrams = ngrams.lengths(texts, 0, 0, 64)
  assert max_len == int(np.ceil(np.percentile([2] * 199 + [400], 99.5)))
  assert max_len <= ngrams.AUTO_CAPS[0] and max_ngrams <= ngrams.AUTO_CAPS[1]
  assert ngrams.lengths(texts, 5, 9, 64) == (5, 9)  # given lengths are kept
  assert ngrams.lengths([], 0, 0, 64) == (1, 1)
