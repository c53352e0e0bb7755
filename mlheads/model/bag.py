"""The `bag` trunk: a fastText-style bag of n-grams with an optional wide (linear) path.

In TRUNKS (trunks.py) as `'bag'`; docs/trunks.md has the measurements behind its settings.
"""

from collections.abc import Mapping, Sequence
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlheads import errors
from mlheads.model import layers
from mlheads.model import trunk_base


class BagTrunk(trunk_base.Trunk):
  """fastText-style bag of n-grams (Joulin et al. 2017), with an optional wide path.

  Three streams of ids, each with its own table: the words (`tokens`), the hashed word
  bigrams and the hashed character 3-5-grams (`bigrams`, `chargrams`; data/ngrams.py).
  Each stream's embeddings are averaged over its non-padding ids; the three means are
  concatenated -> dropout -> [., side inputs] -> Dense(relu) stack, each layer followed by
  dropout: the features `[batch, hidden[-1]]` (`[batch, 3 embed_dim + F]` with hidden ()).

  The wide path (`wide=True`) is a linear model over the same ids beside that deep one, as
  in Wide & Deep (Cheng et al. 2016): per stream, a K-wide row per id (zero at the start),
  summed over the example's ids and divided by the square root of their count (an
  l2-normalized binary bag, like TF-IDF's), plus a linear term in the side inputs. Those
  are logits, not features, so the trunk returns them as the intermediate `'wide'`
  `[batch, K]` and the head that names it in `add` adds them to its own logits (the
  sigmoid head: `sigmoid(Dense(features) + wide)`); `fit_heads` takes K from that head.
  The wide rows are the last K columns of each stream's table (`[V, embed_dim + K]`), so
  one lookup per stream serves both paths and the tables stay row-updated
  (`row_tables`, the `adamw` row rule).

  Attributes:
    embed_dim: embedding width d.
    hidden: widths of the Dense(relu) layers after pooling (`()`: none).
    dropout: rate on the pooled text and after each hidden layer (training only).
    wide: add the wide path (logits `'wide'`); a head must name it in `add`.
    text_input: input key of the `[batch, L]` word ids ('' = the data set's only one).
    ngram_inputs: key patterns of the `[batch, L']` hashed id arrays.
    side_inputs: key patterns of `[batch, n]` numbers or categorical ids concatenated after
      pooling (`'*'`: every one the data set has).
    category_dim: embedding width of each categorical side column.
    vocab_sizes, category_sizes: taken from the data set's fields (`fit_to`).
    wide_classes: K, the width of the head that adds the wide logits (`fit_heads`).
  """
  embed_dim: int = 64
  hidden: Sequence[int] = (256,)
  dropout: float = 0.5
  wide: bool = False
  text_input: str = ''
  ngram_inputs: Sequence[str] = ('bigrams', 'chargrams')
  side_inputs: Sequence[str] = ()
  category_dim: int = 8
  vocab_sizes: Sequence[int] = ()
  category_sizes: Sequence[tuple[str, int]] = ()
  wide_classes: int = 0

  fitted: ClassVar[tuple[str, ...]] = ('vocab_sizes', 'category_sizes', 'wide_classes')
  ranges: ClassVar[Mapping[str, errors.Range]] = {
      'embed_dim': trunk_base.WIDTH, 'hidden': trunk_base.WIDTHS,
      'dropout': errors.Range(0, 0.99), 'category_dim': trunk_base.WIDTH}

  @property
  def streams(self) -> tuple[str, ...]:
    return (self.text_input, *self.ngram_inputs)

  def reads(self):
    return {self.text_input: ('tokens',), **{k: ('hashed',) for k in self.ngram_inputs},
            **{k: trunk_base.NUMBERS for k in self.side_inputs}}

  def fit_to(self, inputs):
    text = trunk_base.only('bag', 'text_input', self.text_input, inputs, 'tokens')
    trunk_base.match('bag', 'text_input', (text,), inputs, ('tokens',))
    ngrams = trunk_base.match('bag', 'ngram_inputs', self.ngram_inputs, inputs, ('hashed',))
    side = tuple(k for k in trunk_base.match('bag', 'side_inputs', self.side_inputs, inputs,
                                             trunk_base.NUMBERS) if k != text)
    streams = (text, *ngrams)
    return self.clone(text_input=text, ngram_inputs=ngrams, side_inputs=side,
                      vocab_sizes=tuple(int(inputs[k].vocab_size or 0) for k in streams),
                      category_sizes=trunk_base.category_sizes(inputs, side))

  def intermediates(self):
    return ('wide',) if self.wide else ()

  def row_tables(self):
    return {k: (f'table_{k}',) for k in self.streams}

  def fit_heads(self, heads):
    adders = {n: h.num_classes for n, h in heads.items() if getattr(h, 'add', '') == 'wide'}
    if not self.wide:
      if adders:
        raise errors.UsageError(f'heads {sorted(adders)} add the bag trunk\'s wide logits, '
                                'but --config.trunk.wide is False')
      return self
    if len(adders) != 1:
      raise errors.UsageError(f'trunk \'bag\' with wide=True needs exactly one head with '
                              f"add='wide' (--config.heads.<name>.add=wide); got {sorted(adders)}")
    return self.clone(wide_classes=next(iter(adders.values())))

  def _init(self, key, shape, dtype=jnp.float32):
    """Embedding columns uniform(-0.05, 0.05) (Keras'), wide columns 0."""
    deep = layers.embed_init(key, (shape[0], self.embed_dim), dtype)
    return jnp.concatenate([deep, jnp.zeros((shape[0], shape[1] - self.embed_dim), dtype)], 1)

  @nn.compact
  def __call__(self, inputs: Mapping[str, jax.Array], train: bool = False):
    d, k = self.embed_dim, self.wide_classes if self.wide else 0
    pooled, wide = [], 0.0
    for key, vocab in zip(self.streams, self.vocab_sizes):
      table = self.param(f'table_{key}', self._init, (vocab, d + k))
      ids = inputs[key]
      if isinstance(ids, layers.Lookup):  # training: the batch's rows of the table
        table, ids, tokens = ids.rows, ids.ids, ids.tokens
      else:
        tokens = ids
      valid = (tokens != 0).astype(table.dtype)  # [batch, L]
      total = jnp.einsum('ble,bl->be', jnp.take(table, ids, axis=0, mode='clip'), valid)
      count = jnp.maximum(valid.sum(1, keepdims=True), 1.0)
      pooled.append(total[:, :d] / count)
      if k:
        wide = wide + total[:, d:] * jax.lax.rsqrt(count)
    drop = nn.Dropout(self.dropout, deterministic=not train)
    h = drop(jnp.concatenate(pooled, -1))
    side = trunk_base.side_blocks(self, inputs, self.side_inputs, self.category_sizes,
                                  self.category_dim, h.dtype)
    h = jnp.concatenate([h] + side, -1)
    for i, width in enumerate(self.hidden):
      h = drop(nn.relu(layers.dense(width, name=f'dense_{i}')(h)))
    inter = {}
    if k:
      # The wide path's linear term in the side inputs, zero at the start (none without them:
      # a [0, K] kernel has nothing to learn, and orbax cannot save a zero-size array).
      if sum(x.shape[-1] for x in side):
        wide = wide + nn.Dense(k, use_bias=False, kernel_init=nn.initializers.zeros,
                               name='wide_side')(jnp.concatenate(side, -1))
      inter['wide'] = wide
    return h, inter
