"""Trunks by name: a trunk maps the input dict to `(features, intermediates)`.

`features` is `[batch, width]`; `intermediates` names other tensors a head may
read instead (the headline model's auxiliary output sits on `'lstm'`).
TRUNKS maps `config.trunk.kind` to a Flax module class; the rest of
`config.trunk` becomes its attributes. A trunk declares what it reads from the
data set (`reads`: input key -> the field kinds it accepts), what it takes
from it (`fit_to`: the vocabulary sizes, and which inputs its key patterns
match), the intermediates it gives and the ranges of its settings, so a new
trunk is one class plus one line in TRUNKS, and the model builder passes it
nothing it did not ask for.

Input settings are key patterns matched against the data set's inputs of the
kinds the trunk reads: `'*'` is every one of them (an MLP on any table), `''`
the only one (the text trunk's token input), a plain name that very input.
So any trunk runs on any data set that has inputs of its kinds, with no
setting changed: `--config.trunk.kind=mlp` on a table of numbers.

`config.trunk` carries every trunk's settings (`settings.trunk_config`), so the
command line reaches them all; the chosen trunk takes its own and leaves the
others' (logged). The base class and the helpers every trunk shares are in trunk_base.py.
"""

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from mlheads import errors
from mlheads.model import layers
from mlheads.model import bag
from mlheads.model import networks
from mlheads.model import transformer
from mlheads.model.trunk_base import NUMBERS, WIDTH, WIDTHS, Trunk, match, only
from mlheads.model.trunk_base import category_sizes as _category_sizes
from mlheads.model.trunk_base import side_blocks as _side


def kind_of(cls) -> str:
  """The TRUNKS name of a trunk class."""
  return next((k for k, c in TRUNKS.items() if c is cls), cls.__name__)


def resolved_settings(trunk: Trunk) -> dict[str, Any]:
  """A built trunk's settings as it runs: its input patterns resolved to keys, sizes fitted."""
  return {f.name: getattr(trunk, f.name) for f in dataclasses.fields(trunk)
          if f.init and f.name not in ('parent', 'name')}


def build(cls: type[Trunk], settings: Mapping[str, Any], inputs: Mapping[str, Any],
          quiet: bool = False) -> Trunk:
  """`cls(**settings)` fitted to the data set's input fields, and checked against them; logs
  the inputs it leaves unused unless `quiet`."""
  kind = kind_of(cls)
  try:
    trunk = cls(**settings)
  except TypeError as e:
    raise errors.UsageError(f'trunk {kind!r}: {e}') from None
  trunk = trunk.fit_to(inputs)
  read = trunk.reads()
  for key, kinds in read.items():
    field = inputs[key]
    if field.kind not in kinds:
      raise errors.UsageError(f'trunk {kind!r} reads input {key!r} as {"/".join(kinds)}, but '
                              f'the data set\'s {key!r} is {field.kind}')
  unused = [k for k in inputs if k not in read]
  if unused and not quiet:
    logging.warning('trunk %s reads %s; the data set\'s %s go unused', kind, sorted(read),
                    unused)
  return trunk


def default_kind(inputs: Mapping[str, Any]) -> str:
  """The trunk for `config.trunk.kind=''`: the bag if the data set has tokens and hashed
  n-grams (the text trunk measured best on real tables, docs/trunks.md), text if tokens
  alone, conv for images, else an MLP over its numbers."""
  kinds = {f.kind for f in inputs.values()}
  if 'tokens' in kinds:
    return 'bag' if 'hashed' in kinds else 'text'
  return 'conv' if 'image' in kinds else 'mlp'


class TextTrunk(Trunk):
  """Token ids -> Embedding -> LSTM, then optional side inputs -> Dense stack.

  With the defaults of `headline` this is the seed's two-branch body: the LSTM
  output (intermediate `'lstm'`) is concatenated with the 5 side numbers and
  passed through 3 x Dense(64, relu).

  Attributes:
    embed_dim: embedding width.
    lstm_units: LSTM hidden size.
    hidden: widths of the Dense(relu) layers after the concatenation.
    text_input: input key of the `[batch, time]` token ids ('' = the data set's only one).
    side_inputs: key patterns of `[batch, n]` numbers or categorical ids concatenated to the
      LSTM output (`'*'`: every one the data set has).
    mask_padding: if True, padding ids (0) do not update the LSTM state.
      The seed's Keras model does not mask; left padding makes this matter little.
    category_dim: embedding width of each categorical side column.
    vocab_size, category_sizes: taken from the data set's fields (`fit_to`).
  """
  embed_dim: int = 128
  lstm_units: int = 64
  hidden: Sequence[int] = ()
  text_input: str = ''
  side_inputs: Sequence[str] = ()
  mask_padding: bool = True
  category_dim: int = 8
  vocab_size: int = 0
  category_sizes: Sequence[tuple[str, int]] = ()

  fitted: ClassVar[tuple[str, ...]] = ('vocab_size', 'category_sizes')
  ranges: ClassVar[Mapping[str, errors.Range]] = {
      'embed_dim': WIDTH, 'lstm_units': WIDTH, 'hidden': WIDTHS, 'category_dim': WIDTH}

  def reads(self):
    return {self.text_input: ('tokens',), **{k: NUMBERS for k in self.side_inputs}}

  def fit_to(self, inputs):
    kind = kind_of(type(self))
    text = only(kind, 'text_input', self.text_input, inputs, 'tokens')
    if text not in inputs:
      match(kind, 'text_input', (text,), inputs, ('tokens',))  # raises, naming the inputs
    side = match(kind, 'side_inputs', self.side_inputs, inputs, NUMBERS)
    side = tuple(k for k in side if k != text)
    return self.clone(text_input=text, side_inputs=side,
                      vocab_size=int(inputs[text].vocab_size or 0),
                      category_sizes=_category_sizes(inputs, side))

  def intermediates(self):
    return ('lstm',)

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
    h = jnp.concatenate([lstm] + _side(self, inputs, self.side_inputs, self.category_sizes,
                                       self.category_dim, lstm.dtype), -1)
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
  """Numeric inputs (and embedded categorical ones) concatenated -> Dense(relu) stack.

  Attributes:
    inputs_keys: key patterns of `[batch, ...]` numbers, images (flattened) or categorical
      ids (`'*'`: every one the data set has).
    hidden: Dense widths (`()`: the inputs themselves, a linear model on them).
    category_dim: embedding width of each categorical column.
    category_sizes: taken from the data set's fields (`fit_to`).
  """
  inputs_keys: Sequence[str] = ('*',)
  hidden: Sequence[int] = (64, 64)
  category_dim: int = 8
  category_sizes: Sequence[tuple[str, int]] = ()

  fitted: ClassVar[tuple[str, ...]] = ('category_sizes',)
  ranges: ClassVar[Mapping[str, errors.Range]] = {'hidden': WIDTHS, 'category_dim': WIDTH}

  def reads(self):
    return {k: NUMBERS + ('image',) for k in self.inputs_keys}

  def fit_to(self, inputs):
    keys = match('mlp', 'inputs_keys', self.inputs_keys, inputs, NUMBERS + ('image',))
    if not keys:
      raise errors.UsageError(f'trunk \'mlp\' reads numbers or images, and the data set has '
                              f'none; its inputs are {sorted(inputs)}')
    return self.clone(inputs_keys=keys, category_sizes=_category_sizes(inputs, keys))

  def intermediates(self):
    return tuple(f'dense_{i}' for i in range(len(self.hidden)))

  @nn.compact
  def __call__(self, inputs: Mapping[str, jax.Array], train: bool = False):
    del train
    h = jnp.concatenate(_side(self, inputs, self.inputs_keys, self.category_sizes,
                              self.category_dim), -1)
    inter = {}
    for i, width in enumerate(self.hidden):
      h = nn.relu(layers.dense(width, name=f'dense_{i}')(h))
      inter[f'dense_{i}'] = h
    return h, inter


class ConvTrunk(Trunk):
  """A small CNN for the digit mosaics: [Conv 3x3 (relu) -> max-pool 2] per width,
  then flatten -> Dense(relu) stack.

  Attributes:
    image_input: input key of the `[batch, height, width, channels]` images ('' = the data
      set's only one).
    channels: output channels of each conv block.
    hidden: Dense widths after flattening.
  """
  image_input: str = ''
  channels: Sequence[int] = (32, 64)
  vmaps_well: ClassVar[bool] = False  # vmapped: batched patch GEMMs, slower than a loop on CPU
  hidden: Sequence[int] = (128,)

  ranges: ClassVar[Mapping[str, errors.Range]] = {'channels': WIDTHS, 'hidden': WIDTHS}

  def reads(self):
    return {self.image_input: ('image',)}

  def fit_to(self, inputs):
    key = only('conv', 'image_input', self.image_input, inputs, 'image')
    match('conv', 'image_input', (key,), inputs, ('image',))
    return self.clone(image_input=key)

  def intermediates(self):
    return ('conv',)

  @nn.compact
  def __call__(self, inputs: Mapping[str, jax.Array], train: bool = False):
    del train
    h = layers.as_float(inputs[self.image_input])
    for i, c in enumerate(self.channels):
      h = layers.Conv3x3(c, name=f'conv_{i}')(h)
      if i:  # kept by per_class's scan: a deep GEMM to redo; the first is 9 deep (networks.SAVED)
        h = checkpoint_name(h, networks.SAVED)
      h = layers.max_pool_2x2(nn.relu(h))
    h = h.reshape(h.shape[0], -1)
    inter = {'conv': h}  # [batch, flattened conv features], for a head that skips the Dense.
    for i, width in enumerate(self.hidden):
      h = nn.relu(layers.dense(width, name=f'dense_{i}')(h))
    return h, inter


class TransformerTrunk(Trunk):
  """Token ids -> a small pre-norm Transformer encoder, mean-pooled over the real tokens
  (model/transformer.py: padding changes nothing), then side inputs -> Dense(relu) stack.
  Dropout (training only): embeddings, attention, residual branches, pooled text, Dense.

  Attributes:
    embed_dim, num_layers, mlp_dim: model width d, encoder blocks, each block's MLP width.
    num_heads: attention heads; `embed_dim` must be a multiple of it.
    dropout: dropout rate.
    hidden: widths of the Dense(relu) layers after the concatenation.
    text_input: input key of the `[batch, time]` token ids ('' = the data set's only one).
    side_inputs: key patterns of `[batch, n]` numbers or categorical ids concatenated to the
      pooled text (`'*'`: every one the data set has).
    category_dim: embedding width of each categorical side column.
    vocab_size, max_len, category_sizes: taken from the data set's fields (`fit_to`).
  """
  embed_dim: int = 64
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 128
  dropout: float = 0.1
  hidden: Sequence[int] = (256,)
  text_input: str = ''
  side_inputs: Sequence[str] = ()
  category_dim: int = 8
  vocab_size: int = 0
  max_len: int = 0
  category_sizes: Sequence[tuple[str, int]] = ()

  fitted: ClassVar[tuple[str, ...]] = ('vocab_size', 'max_len', 'category_sizes')
  ranges: ClassVar[Mapping[str, errors.Range]] = {
      'embed_dim': WIDTH, 'num_layers': errors.Range(1, 64, integer=True), 'num_heads': WIDTH,
      'mlp_dim': WIDTH, 'dropout': errors.Range(0, 0.99), 'hidden': WIDTHS, 'category_dim': WIDTH}

  def __post_init__(self):
    if self.num_heads >= 1 and self.embed_dim % self.num_heads:
      raise errors.UsageError(f'--config.trunk.embed_dim={self.embed_dim} must be a multiple of '
                              f'--config.trunk.num_heads={self.num_heads}')
    super().__post_init__()

  def reads(self):
    return {self.text_input: ('tokens',), **{k: NUMBERS for k in self.side_inputs}}

  def fit_to(self, inputs):
    text = only('transformer', 'text_input', self.text_input, inputs, 'tokens')
    match('transformer', 'text_input', (text,), inputs, ('tokens',))
    side = tuple(k for k in match('transformer', 'side_inputs', self.side_inputs, inputs, NUMBERS)
                 if k != text)
    return self.clone(text_input=text, side_inputs=side, max_len=int(inputs[text].shape[-1]),
                      vocab_size=int(inputs[text].vocab_size or 0),
                      category_sizes=_category_sizes(inputs, side))

  def intermediates(self):
    return ('encoder',)

  @nn.compact
  def __call__(self, inputs: Mapping[str, jax.Array], train: bool = False):
    text = transformer.Encoder(self.vocab_size, self.max_len, self.embed_dim, self.num_layers,
                               self.num_heads, self.mlp_dim, self.dropout,
                               name='encoder')(inputs[self.text_input], train)
    drop = nn.Dropout(self.dropout, deterministic=not train)
    h = jnp.concatenate([drop(text)] + _side(self, inputs, self.side_inputs, self.category_sizes,
                                             self.category_dim, text.dtype), -1)
    for i, width in enumerate(self.hidden):
      h = drop(nn.relu(layers.dense(width, name=f'dense_{i}')(h)))
    return h, {'encoder': text}


TRUNKS = {
    'headline': HeadlineTrunk,
    'text': TextTrunk,
    'bag': bag.BagTrunk,
    'transformer': TransformerTrunk,
    'mlp': MLPTrunk,
    'conv': ConvTrunk,
}


def get(kind: str) -> type[Trunk]:
  """The trunk class `config.trunk.kind` names; the one place that name is checked (B14)."""
  if kind not in TRUNKS:
    raise errors.UsageError(f'unknown trunk {kind!r}; known: {sorted(TRUNKS)}')
  return TRUNKS[kind]
