"""Trunks by name: a trunk maps the input dict to `(features, intermediates)`.

`features` is `[batch, width]`; `intermediates` names other tensors a head may
read instead (the headline model's auxiliary output sits on `'lstm'`).
TRUNKS maps `config.trunk.kind` to a Flax module class; the rest of
`config.trunk` becomes its attributes. A trunk declares what it reads from the
data set (`reads`: input key -> the field kinds it accepts) and what it takes
from it (`fit_to`: the vocabulary size of its token input), so a new trunk is
one class plus one line in TRUNKS, and the model builder passes it nothing it
did not ask for.
"""

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlheads import errors
from mlheads.model import layers


class Trunk(nn.Module):
  """Base class: `__call__(inputs, train) -> (features [batch, D], intermediates)`."""

  def reads(self) -> Mapping[str, tuple[str, ...]]:
    """Input key -> the data set field kinds it may have ('tokens', 'features', 'image')."""
    raise NotImplementedError

  def fit_to(self, inputs: Mapping[str, object]) -> 'Trunk':
    """The trunk with what it takes from the data set's input fields (default: nothing)."""
    del inputs
    return self

  def row_tables(self) -> dict[str, tuple[str, ...]]:
    """Input key -> path (in the trunk's parameters) of a table the trunk reads only at that
    input's token ids, and which also accepts a `layers.Lookup` there (default: none)."""
    return {}

  def fit_heads(self, heads: Mapping[str, object]) -> 'Trunk':
    """The trunk sized to the heads that read it (default: itself); `heads` are built."""
    del heads
    return self


def build(cls: type[Trunk], settings: Mapping[str, object], inputs: Mapping[str, object],
          heads: Mapping[str, object] | None = None) -> Trunk:
  """`cls(**settings)`, checked against and fitted to the data set's input fields and to the
  (built) heads."""
  settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
  kind = next((k for k, c in TRUNKS.items() if c is cls), cls.__name__)
  try:
    trunk = cls(**settings)
  except TypeError as e:
    raise errors.UsageError(f'trunk {kind!r}: {e}') from None
  for key, kinds in trunk.reads().items():
    field = inputs.get(key)
    if field is None:
      raise errors.UsageError(f'trunk {kind!r} reads input {key!r}, which the data set does '
                              f'not have; its inputs are {sorted(inputs)}')
    if field.kind not in kinds:
      raise errors.UsageError(f'trunk {kind!r} reads input {key!r} as {"/".join(kinds)}, but '
                              f'the data set\'s {key!r} is {field.kind}')
  return trunk.fit_to(inputs).fit_heads(heads or {})


class TextTrunk(Trunk):
  """Token ids -> Embedding -> LSTM, then optional side features -> Dense stack.

  With the defaults of `headline` this is the seed's two-branch body: the LSTM
  output (intermediate `'lstm'`) is concatenated with the 5 side numbers and
  passed through 3 x Dense(64, relu).

  Attributes:
    vocab_size: number of token ids (taken from the data set's token field).
    embed_dim: embedding width.
    lstm_units: LSTM hidden size.
    hidden: widths of the Dense(relu) layers after the concatenation.
    text_input: input key of the `[batch, time]` token ids.
    side_inputs: input keys of `[batch, n]` numbers concatenated to the LSTM output.
    mask_padding: if True, padding ids (0) do not update the LSTM state.
      The seed's Keras model does not mask; left padding makes this matter little.
  """
  vocab_size: int = 0
  embed_dim: int = 128
  lstm_units: int = 64
  hidden: Sequence[int] = ()
  text_input: str = 'tokens'
  side_inputs: Sequence[str] = ()
  mask_padding: bool = True

  def reads(self):
    return {self.text_input: ('tokens',), **{k: ('features',) for k in self.side_inputs}}

  def fit_to(self, inputs):
    return self.clone(vocab_size=inputs[self.text_input].vocab_size)

  def row_tables(self):
    return {self.text_input: ('embedding', 'embedding')}

  @nn.compact
  def __call__(self, inputs: Mapping[str, jax.Array], train: bool = False):
    del train
    tokens = inputs[self.text_input]
    embed = nn.Embed(self.vocab_size, self.embed_dim, embedding_init=layers.embed_init,
                     name='embedding')
    if isinstance(tokens, layers.Lookup):  # training: the batch's rows of the table
      table, ids, tokens = tokens.rows, tokens.ids, tokens.tokens
    else:
      table, ids = embed.embedding, tokens
    valid = (tokens != 0) if self.mask_padding else None
    # The LSTM reads the table itself: it can then skip materializing the embeddings.
    lstm = layers.LSTM(self.lstm_units, name='lstm')(valid=valid, ids=ids, table=table)
    h = jnp.concatenate([lstm] + [inputs[k].astype(lstm.dtype) for k in self.side_inputs], -1)
    for i, width in enumerate(self.hidden):
      h = nn.relu(layers.dense(width, name=f'dense_{i}')(h))
    return h, {'lstm': lstm}


class HeadlineTrunk(TextTrunk):
  """The seed's body: Embedding(512), LSTM(32), [lstm, extra] -> 3 x Dense(64), no masking."""
  embed_dim: int = 512
  lstm_units: int = 32
  hidden: Sequence[int] = (64, 64, 64)
  side_inputs: Sequence[str] = ('extra',)
  mask_padding: bool = False


class MLPTrunk(Trunk):
  """Numeric inputs concatenated -> Dense(relu) stack.

  Attributes:
    inputs_keys: input keys of `[batch, ...]` numbers (flattened).
    hidden: Dense widths.
  """
  inputs_keys: Sequence[str] = ('features',)
  hidden: Sequence[int] = (64, 64)

  def reads(self):
    return {k: ('features', 'image') for k in self.inputs_keys}

  @nn.compact
  def __call__(self, inputs: Mapping[str, jax.Array], train: bool = False):
    del train
    h = jnp.concatenate([inputs[k].reshape(inputs[k].shape[0], -1).astype(jnp.float32)
                         for k in self.inputs_keys], -1)
    inter = {}
    for i, width in enumerate(self.hidden):
      h = nn.relu(layers.dense(width, name=f'dense_{i}')(h))
      inter[f'dense_{i}'] = h
    return h, inter


class ConvTrunk(Trunk):
  """A small CNN for the digit mosaics: [Conv 3x3 (relu) -> max-pool 2] per width,
  then flatten -> Dense(relu) stack.

  Attributes:
    image_input: input key of the `[batch, height, width, channels]` images.
    channels: output channels of each conv block.
    hidden: Dense widths after flattening.
  """
  image_input: str = 'image'
  channels: Sequence[int] = (32, 64)
  hidden: Sequence[int] = (128,)

  def reads(self):
    return {self.image_input: ('image',)}

  @nn.compact
  def __call__(self, inputs: Mapping[str, jax.Array], train: bool = False):
    del train
    h = inputs[self.image_input].astype(jnp.float32)
    for i, c in enumerate(self.channels):
      h = nn.relu(nn.Conv(c, (3, 3), kernel_init=layers.glorot, name=f'conv_{i}')(h))
      h = nn.max_pool(h, (2, 2), strides=(2, 2))
    h = h.reshape(h.shape[0], -1)
    inter = {'conv': h}  # [batch, flattened conv features], for a head that skips the Dense.
    for i, width in enumerate(self.hidden):
      h = nn.relu(layers.dense(width, name=f'dense_{i}')(h))
    return h, inter


class BagTrunk(Trunk):
  """fastText-style bag of n-grams (Joulin et al. 2017), with an optional wide path.

  Three streams of ids, each with its own table: the words (`tokens`), the hashed word
  bigrams and the hashed character 3-5-grams (`bigrams`, `chargrams`; data/ngrams.py).
  Each stream's embeddings are averaged over its non-padding ids; the three means are
  concatenated -> dropout -> [., side numbers] -> Dense(hidden, relu) -> dropout: the
  features `[batch, hidden]` (`[batch, 3 embed_dim + F]` with hidden 0).

  The wide path (`wide=True`) is a linear model over the same ids beside that deep one, as
  in Wide & Deep (Cheng et al. 2016): per stream, a K-wide row per id (zero at the start),
  summed over the example's ids and divided by the square root of their count (an
  l2-normalized binary bag, like TF-IDF's), plus a linear term in the side numbers. Those
  are logits, not features, so the trunk returns them as the intermediate `'wide'`
  `[batch, K]` and the head that names it in `add` adds them to its own logits (the
  sigmoid head: `sigmoid(Dense(features) + wide)`); `fit_heads` takes K from that head.
  The wide rows are the last K columns of each stream's table (`[V, embed_dim + K]`), so
  one lookup per stream serves both paths and the tables stay row-updated
  (`row_tables`, the `adamw` row rule). docs/trunks.md has the measurements behind it.

  Attributes:
    vocab_sizes: ids per stream (taken from the data set's fields).
    embed_dim: embedding width d.
    hidden: width of the Dense(relu) layer after pooling (0: none).
    dropout: rate on the pooled text and after the hidden layer (training only).
    wide: add the wide path (logits `'wide'`); a head must name it in `add`.
    wide_classes: K, the width of that head (set by `fit_heads`).
    text_input: input key of the `[batch, L]` word ids.
    ngram_inputs: input keys of the `[batch, L']` hashed id arrays.
    side_inputs: input keys of `[batch, n]` numbers concatenated after pooling.
  """
  vocab_sizes: Sequence[int] = ()
  embed_dim: int = 64
  hidden: int = 256
  dropout: float = 0.5
  wide: bool = False
  wide_classes: int = 0
  text_input: str = 'tokens'
  ngram_inputs: Sequence[str] = ('bigrams', 'chargrams')
  side_inputs: Sequence[str] = ()

  @property
  def streams(self) -> tuple[str, ...]:
    return (self.text_input, *self.ngram_inputs)

  def reads(self):
    return {self.text_input: ('tokens',), **{k: ('hashed',) for k in self.ngram_inputs},
            **{k: ('features',) for k in self.side_inputs}}

  def fit_to(self, inputs):
    return self.clone(vocab_sizes=tuple(inputs[k].vocab_size for k in self.streams))

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
    h = nn.Dropout(self.dropout, deterministic=not train)(jnp.concatenate(pooled, -1))
    side = [inputs[key].astype(h.dtype) for key in self.side_inputs]
    h = jnp.concatenate([h] + side, -1)
    if self.hidden:
      h = nn.relu(layers.dense(self.hidden, name='dense_0')(h))
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
    inter = {}
    if k:
      # The wide path's linear term in the numbers, zero at the start (none without numbers:
      # a [0, K] kernel has nothing to learn, and orbax cannot save a zero-size array).
      if sum(x.shape[-1] for x in side):
        wide = wide + nn.Dense(k, use_bias=False, kernel_init=nn.initializers.zeros,
                               name='wide_side')(jnp.concatenate(side, -1))
      inter['wide'] = wide
    return h, inter


TRUNKS = {
    'headline': HeadlineTrunk,
    'text': TextTrunk,
    'bag': BagTrunk,
    'mlp': MLPTrunk,
    'conv': ConvTrunk,
}


def get(kind: str) -> type[Trunk]:
  """The trunk class `config.trunk.kind` names; the one place that name is checked (B14)."""
  if kind not in TRUNKS:
    raise errors.UsageError(f'unknown trunk {kind!r}; known: {sorted(TRUNKS)}')
  return TRUNKS[kind]
