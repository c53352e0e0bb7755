"""A word-level tokenizer whose vocabulary is built on a training split.

Ids: 0 is padding, 1 is out-of-vocabulary, words get 2.. in order of decreasing
train-split frequency (ties broken alphabetically, so the vocabulary is a pure
function of the training texts). Sequences are truncated to `max_len` tokens
(keeping the first ones) and padded on the left, as Keras' `pad_sequences`
does, so an LSTM's last state sits right after the last real word.
"""

import collections
import html
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

PAD_ID = 0
OOV_ID = 1
_RESERVED = ('<pad>', '<oov>')
# URLs and numbers carry no word identity worth a vocabulary slot each.
_URL = re.compile(r'https?://\S+|www\.\S+')
_TOKEN = re.compile(r"[#@]?[a-z0-9']+|[^\sa-z0-9]")


def split_words(text: str) -> list[str]:
  """Lower-cases and splits text into word, hashtag, mention and symbol tokens."""
  # Tweets and scraped titles carry HTML entities (&amp;): read them as characters.
  text = _URL.sub(' <url> ', html.unescape(str(text)).lower())
  words = []
  for part in text.split():
    if part == '<url>':
      words.append(part)
    else:
      words.extend(w.strip("'") or w for w in _TOKEN.findall(part))
  return [w for w in words if w]


class Tokenizer:
  """Maps text to fixed-length id sequences with a train-built vocabulary."""

  def __init__(self, words: Sequence[str], max_len: int):
    if list(words[:len(_RESERVED)]) != list(_RESERVED):
      words = list(_RESERVED) + [w for w in words if w not in _RESERVED]
    self.words = list(words)
    self.max_len = max_len
    self._ids = {w: i for i, w in enumerate(self.words)}

  @classmethod
  def fit(cls, texts: Iterable[str], vocab_size: int, max_len: int,
          min_count: int = 1) -> 'Tokenizer':
    """Builds a vocabulary of at most `vocab_size` ids (2 reserved) from `texts`: the most
    frequent words seen at least `min_count` times (a word seen once teaches a model little
    about itself and costs a table row; its subwords still carry it, ngrams.py)."""
    counts = collections.Counter()
    for t in texts:
      counts.update(split_words(t))
    return cls.from_counts(counts, vocab_size, max_len, min_count)

  @classmethod
  def from_counts(cls, counts: Mapping[str, int], vocab_size: int, max_len: int,
                  min_count: int = 1) -> 'Tokenizer':
    """`fit` from word counts gathered elsewhere (a file read in chunks)."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    words = [w for w, c in ranked[:vocab_size - len(_RESERVED)] if c >= min_count]
    return cls(list(_RESERVED) + words, max_len)

  @property
  def vocab_size(self) -> int:
    return len(self.words)

  def encode(self, text: str) -> tuple[np.ndarray, bool]:
    """Returns (`[max_len]` int32 ids, whether the text was truncated)."""
    return self.encode_words(split_words(text))

  def encode_words(self, words: Sequence[str]) -> tuple[np.ndarray, bool]:
    """`encode` of a text already split by `split_words`."""
    ids = [self._ids.get(w, OOV_ID) for w in words]
    truncated = len(ids) > self.max_len
    ids = ids[:self.max_len]
    out = np.full((self.max_len,), PAD_ID, np.int32)
    if ids:
      out[-len(ids):] = ids
    return out, truncated

  def encode_all(self, texts: Iterable[str]) -> tuple[np.ndarray, int]:
    """Returns (`[n, max_len]` int32 ids, number of truncated texts)."""
    rows, n_truncated = [], 0
    for t in texts:
      ids, cut = self.encode(t)
      rows.append(ids)
      n_truncated += cut
    if not rows:
      return np.zeros((0, self.max_len), np.int32), 0
    return np.stack(rows), n_truncated

  def to_json(self) -> dict:
    return {'words': self.words, 'max_len': self.max_len}

  @classmethod
  def from_json(cls, d: dict) -> 'Tokenizer':
    return cls(d['words'], d['max_len'])
