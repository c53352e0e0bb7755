"""Hashed n-grams of a text: its word bigrams and its words' character n-grams (fastText).

Beside a text's word ids (tokenizer.py), every text data set records two arrays of hashed ids,
which the `bag` trunk embeds (model/trunks.py) and a linear model can weigh:
  bigrams    `[max_len]` int32: each pair of adjacent words `'w1 w2'`;
  chargrams  `[max_ngrams]` int32: for each word, the 3-, 4- and 5-grams of `'<' + word + '>'`
             (the subwords of fastText, Bojanowski et al. 2017), word after word.
An n-gram's id is `1 + crc32(n-gram) % buckets`, in [1, buckets]; 0 is padding (on the right:
the bag ignores order). The words are tokenizer.split_words', before any vocabulary, so a word
never seen in training still has its subwords. Hashing needs no vocabulary: nothing is fitted,
and predict hashes new rows the same way from the settings saved in the metadata.
"""

import functools
import zlib
from collections.abc import Iterable, Sequence

import numpy as np

from mlheads.data import base
from mlheads.data import tokenizer as tokenizer_lib

BUCKETS = 2**18  # fastText uses 2M buckets; 2^18 keeps the table 16.8M floats at width 64.
CHAR_NS = (3, 4, 5)
KEYS = ('bigrams', 'chargrams')


def bucket(text: str, buckets: int) -> int:
  """An n-gram's id in [1, buckets]."""
  return 1 + zlib.crc32(text.encode('utf-8')) % buckets


def word_bigrams(words: Sequence[str]) -> list[str]:
  return [f'{a} {b}' for a, b in zip(words, words[1:])]


def char_ngrams(word: str, ns: Iterable[int] = CHAR_NS) -> list[str]:
  """The n-grams of `'<' + word + '>'` for n in `ns`: `char_ngrams('ab', (3,))` is
  `['<ab', 'ab>']`."""
  w = f'<{word}>'
  return [w[i:i + n] for n in ns for i in range(len(w) - n + 1)]


def _pad(rows: list[list[int]], length: int) -> np.ndarray:
  """`[n, length]` int32, each row's first ids from the left, 0 after."""
  out = np.zeros((len(rows), length), np.int32)
  for i, r in enumerate(rows):
    r = r[:length]
    out[i, :len(r)] = r
  return out


class Hasher:
  """Text -> hashed bigram and character n-gram ids of fixed lengths.

  Attributes:
    buckets: ids lie in [1, buckets] (the `hashed` fields' vocab_size is buckets + 1).
    max_bigrams, max_chargrams: array lengths; longer texts keep their first n-grams.
  """

  def __init__(self, buckets: int, max_bigrams: int, max_chargrams: int):
    self.buckets = int(buckets)
    self.max_bigrams = int(max_bigrams)
    self.max_chargrams = int(max_chargrams)
    # A word's subword ids are the same wherever it occurs: hashed once per distinct word.
    self._word_ids = functools.lru_cache(maxsize=1 << 20)(
        lambda w: [bucket(g, self.buckets) for g in char_ngrams(w)])

  @property
  def vocab_size(self) -> int:
    return self.buckets + 1

  def ids(self, words: Sequence[str]) -> tuple[list[int], list[int]]:
    """The bigram ids and character n-gram ids of a text's words, untruncated."""
    bigrams = [bucket(b, self.buckets) for b in word_bigrams(words)]
    chars = [i for w in words for i in self._word_ids(w)]
    return bigrams, chars

  def to_json(self) -> dict:
    return {'buckets': self.buckets, 'max_bigrams': self.max_bigrams,
            'max_chargrams': self.max_chargrams, 'char_ns': list(CHAR_NS), 'hash': 'crc32'}

  @classmethod
  def from_json(cls, d: dict) -> 'Hasher':
    return cls(d['buckets'], d['max_bigrams'], d['max_chargrams'])


def fields(buckets: int, max_bigrams: int, max_chargrams: int) -> dict[str, base.Field]:
  """The record fields of the two arrays: kind 'hashed', ids in [0, buckets]."""
  return {
      'bigrams': base.Field((max_bigrams,), 'int32', 'hashed', vocab_size=buckets + 1),
      'chargrams': base.Field((max_chargrams,), 'int32', 'hashed', vocab_size=buckets + 1),
  }


def encode_texts(texts: Iterable[str], tok: tokenizer_lib.Tokenizer, hasher: Hasher
                 ) -> tuple[dict[str, np.ndarray], int]:
  """Texts -> `({'tokens': [n, max_len], 'bigrams': [n, max_bigrams], 'chargrams':
  [n, max_chargrams]}, number of texts truncated)`, int32; a text counts as truncated when its
  words or its n-grams did not all fit (B09)."""
  tokens, bigrams, chars, cut = [], [], [], 0
  for t in texts:
    words = tokenizer_lib.split_words(t)
    ids, cut_words = tok.encode_words(words)
    b, c = hasher.ids(words)
    tokens.append(ids)
    bigrams.append(b)
    chars.append(c)
    cut += cut_words or len(b) > hasher.max_bigrams or len(c) > hasher.max_chargrams
  return {'tokens': (np.stack(tokens) if tokens else np.zeros((0, tok.max_len), np.int32)),
          'bigrams': _pad(bigrams, hasher.max_bigrams),
          'chargrams': _pad(chars, hasher.max_chargrams)}, cut


def encode_with(meta, texts: Iterable[str], dataset: str) -> tuple[dict[str, np.ndarray], int]:
  """`encode_texts` with the tokenizer and hasher saved in a data set's metadata."""
  tok = tokenizer_lib.Tokenizer.from_json(base.meta_entry(meta, 'tokenizer', dataset))
  hasher = Hasher.from_json(base.meta_entry(meta, 'ngrams', dataset))
  return encode_texts(texts, tok, hasher)


AUTO_CAPS = (128, 1024)  # the most words / character n-grams a length from the data may be


def chargram_count(words: Sequence[str]) -> int:
  """How many character n-grams `Hasher.ids` gives for these words (`len(ids(words)[1])`),
  without hashing them."""
  return sum(max(0, len(w) + 3 - n) for w in words for n in CHAR_NS)


def lengths(train_texts: Sequence[str], max_len: int, max_ngrams: int, buckets: int
            ) -> tuple[int, int]:
  """`(max_len, max_ngrams)`, each 0 replaced by the 99.5th percentile of the train texts'
  words / character n-grams per text (at least 1, at most AUTO_CAPS), so that the arrays fit
  nearly every text without carrying mostly padding."""
  del buckets  # the counts do not depend on it
  if max_len and max_ngrams:
    return max_len, max_ngrams
  words = [tokenizer_lib.split_words(t) for t in train_texts]
  return lengths_of([len(w) for w in words], [chargram_count(w) for w in words], max_len,
                    max_ngrams)


def lengths_of(word_counts: Sequence[int], chargram_counts: Sequence[int], max_len: int,
               max_ngrams: int) -> tuple[int, int]:
  """`lengths` from each train text's number of words and of character n-grams (a file read
  in chunks counts them as it goes)."""

  def pct(counts, cap):
    return int(min(cap, max(1, np.ceil(np.percentile(counts, 99.5))))) if len(counts) else 1

  return (max_len or pct(word_counts, AUTO_CAPS[0]),
          max_ngrams or pct(chargram_counts, AUTO_CAPS[1]))
