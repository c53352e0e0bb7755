import numpy as np

from mlheads.data import tokenizer


def test_vocab_is_ranked_by_train_frequency_with_reserved_ids():
  tok = tokenizer.Tokenizer.fit(['b a a', 'c a b'], vocab_size=4, max_len=5)
  assert tok.words == ['<pad>', '<oov>', 'a', 'b']
  ids, cut = tok.encode('a c zzz b')
  assert not cut
  np.testing.assert_array_equal(ids, [0, 2, 1, 1, 3])  # left-padded, unknown -> OOV


def test_ids_stay_in_vocabulary_and_truncation_is_counted():
  """B08, B09: ids stay in [0, vocab) (unknown words are OOV); longer texts are truncated and
  counted."""
  tok = tokenizer.Tokenizer.fit(['x y z'] * 3, vocab_size=3, max_len=2)
  ids, n_cut = tok.encode_all(['x y z w', 'x', ''])
  assert ids.shape == (3, 2) and ids.dtype == np.int32
  assert ids.min() >= 0 and ids.max() < tok.vocab_size
  assert n_cut == 1
  np.testing.assert_array_equal(ids[2], [0, 0])


def test_urls_and_entities_are_normalised_and_json_round_trips():
  assert tokenizer.split_words('Great!! https://t.co/abc &amp; more') == [
      'great', '!', '!', '<url>', '&', 'more']
  tok = tokenizer.Tokenizer.fit(['one two'], vocab_size=10, max_len=3)
  again = tokenizer.Tokenizer.from_json(tok.to_json())
  np.testing.assert_array_equal(again.encode('two one')[0], tok.encode('two one')[0])
