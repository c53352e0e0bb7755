"""Trunks by name: a trunk maps the input dict to `(features, intermediates)`.

`features` is `[batch, width]`; `intermediates` names other tensors a head may
read instead (the headline model's auxiliary output sits on `'lstm'`).
TRUNKS maps `config.trunk.kind` to a Flax module class; the rest of
`config.trunk` becomes its attributes.
"""

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlheads import errors

# Keras' defaults, so the headline model starts where the seed's does.
glorot = nn.initializers.glorot_uniform()


def embed_init(key, shape, dtype=jnp.float32):
  return jax.random.uniform(key, shape, dtype, -0.05, 0.05)


def dense(features: int, name: str | None = None) -> nn.Dense:
  return nn.Dense(features, kernel_init=glorot, bias_init=nn.initializers.zeros, name=name)


class LSTM(nn.Module):
  """A Keras-layout LSTM returning its last hidden state.

  Parameters match `keras.layers.LSTM(units)`: `kernel [in, 4u]`,
  `recurrent_kernel [u, 4u]`, `bias [4u]`, gates in order i, f, c, o, forget
  bias 1. The input projection of every time step is computed before the scan,
  which then carries only the `[batch, u] @ [u, 4u]` recurrence.

  Fed token ids and their embedding table, it picks the cheaper of two exact
  ways to project (notes/perf.md): gather `[time * batch]` rows and multiply by
  the kernel, or, when there are more tokens than vocabulary rows, multiply the
  table by the kernel once and gather rows of `[vocab, 4u]`. The second never
  materializes the `[batch, time, in]` embeddings or their gradient.

  Attributes:
    units: hidden size u.
  """
  units: int

  @nn.compact
  def __call__(self, x: jax.Array | None = None, valid: jax.Array | None = None, *,
               ids: jax.Array | None = None, table: jax.Array | None = None) -> jax.Array:
    """Runs over time; returns `[batch, units]`.

    Args:
      x: `[batch, time, in]` inputs, or None when `ids` and `table` are given.
      valid: optional `[batch, time]` 0/1; steps with 0 leave the state unchanged.
      ids: `[batch, time]` token ids into `table`.
      table: `[vocab, in]` embedding table.
    """
    u = self.units
    width = x.shape[-1] if x is not None else table.shape[-1]
    kernel = self.param('kernel', glorot, (width, 4 * u))
    recurrent = self.param('recurrent_kernel', nn.initializers.orthogonal(), (u, 4 * u))
    bias = self.param('bias', lambda _, s: jnp.zeros(s).at[u:2 * u].set(1.0), (4 * u,))
    if x is not None:
      # A 'btg' output keeps the matmul a plain GEMM; transposing the small result is cheap.
      xw = jnp.swapaxes(jnp.einsum('bti,ig->btg', x, kernel), 0, 1)
    elif ids.size >= table.shape[0]:
      xw = jnp.take(table @ kernel, ids.T, axis=0)
    else:
      xw = jnp.take(table, ids.T, axis=0) @ kernel
    xw = xw + bias  # [time, batch, 4u]
    steps = (xw,) if valid is None else (xw, jnp.swapaxes(valid, 0, 1)[..., None])

    def step(carry, inp):
      h, c = carry
      z = inp[0] + h @ recurrent
      i, f, g, o = jnp.split(z, 4, axis=-1)
      c_new = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
      h_new = nn.sigmoid(o) * jnp.tanh(c_new)
      if valid is not None:
        keep = inp[1].astype(h.dtype)
        h_new = keep * h_new + (1 - keep) * h
        c_new = keep * c_new + (1 - keep) * c
      return (h_new, c_new), None

    zeros = jnp.zeros((xw.shape[1], u), xw.dtype)
    (h, _), _ = jax.lax.scan(step, (zeros, zeros), steps)
    return h


class TextTrunk(nn.Module):
  """Token ids -> Embedding -> LSTM, then optional side features -> Dense stack.

  With the defaults of `headline` this is the seed's two-branch body: the LSTM
  output (intermediate `'lstm'`) is concatenated with the 5 side numbers and
  passed through 3 x Dense(64, relu).

  Attributes:
    vocab_size: number of token ids (filled in from the data set).
    embed_dim: embedding width.
    lstm_units: LSTM hidden size.
    hidden: widths of the Dense(relu) layers after the concatenation.
    text_input: input key of the `[batch, time]` token ids.
    side_inputs: input keys of `[batch, n]` numbers concatenated to the LSTM output.
    mask_padding: if True, padding ids (0) do not update the LSTM state.
      The seed's Keras model does not mask; left padding makes this matter little.
  """
  vocab_size: int
  embed_dim: int = 128
  lstm_units: int = 64
  hidden: Sequence[int] = ()
  text_input: str = 'tokens'
  side_inputs: Sequence[str] = ()
  mask_padding: bool = True

  @nn.compact
  def __call__(self, inputs: Mapping[str, jax.Array], train: bool = False):
    del train
    tokens = inputs[self.text_input]
    embed = nn.Embed(self.vocab_size, self.embed_dim, embedding_init=embed_init,
                     name='embedding')
    valid = (tokens != 0) if self.mask_padding else None
    # The LSTM reads the table itself: it can then skip materializing the embeddings.
    lstm = LSTM(self.lstm_units, name='lstm')(valid=valid, ids=tokens, table=embed.embedding)
    h = jnp.concatenate([lstm] + [inputs[k].astype(lstm.dtype) for k in self.side_inputs], -1)
    for i, width in enumerate(self.hidden):
      h = nn.relu(dense(width, name=f'dense_{i}')(h))
    return h, {'lstm': lstm}


class MLPTrunk(nn.Module):
  """Numeric inputs concatenated -> Dense(relu) stack.

  Attributes:
    inputs_keys: input keys of `[batch, n]` numbers.
    hidden: Dense widths.
  """
  inputs_keys: Sequence[str] = ('features',)
  hidden: Sequence[int] = (64, 64)
  vocab_size: int | None = None  # unused; every trunk accepts it.

  @nn.compact
  def __call__(self, inputs: Mapping[str, jax.Array], train: bool = False):
    del train
    h = jnp.concatenate([inputs[k].reshape(inputs[k].shape[0], -1).astype(jnp.float32)
                         for k in self.inputs_keys], -1)
    inter = {}
    for i, width in enumerate(self.hidden):
      h = nn.relu(dense(width, name=f'dense_{i}')(h))
      inter[f'dense_{i}'] = h
    return h, inter


def headline(**kw) -> TextTrunk:
  """The seed's body: Embedding(512), LSTM(32), [lstm, extra] -> 3 x Dense(64)."""
  defaults = dict(embed_dim=512, lstm_units=32, hidden=(64, 64, 64), text_input='tokens',
                  side_inputs=('extra',), mask_padding=False)
  return TextTrunk(**{**defaults, **kw})


TRUNKS = {
    'headline': headline,
    'text': TextTrunk,
    'mlp': MLPTrunk,
}


def make(trunk_config, **fills) -> nn.Module:
  """Builds `TRUNKS[config.kind]` from the config's other keys plus data-derived `fills`."""
  kw = dict(trunk_config)
  kind = kw.pop('kind')
  if kind not in TRUNKS:
    raise errors.UsageError(f'unknown trunk {kind!r}; known: {sorted(TRUNKS)}')
  kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}
  try:
    return TRUNKS[kind](**{**fills, **kw})
  except TypeError as e:
    raise errors.UsageError(f'trunk {kind!r}: {e}') from None


class ConvTrunk(nn.Module):
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
  vocab_size: int | None = None  # unused; every trunk accepts it.

  @nn.compact
  def __call__(self, inputs: Mapping[str, jax.Array], train: bool = False):
    del train
    h = inputs[self.image_input].astype(jnp.float32)
    for i, c in enumerate(self.channels):
      h = nn.relu(nn.Conv(c, (3, 3), kernel_init=glorot, name=f'conv_{i}')(h))
      h = nn.max_pool(h, (2, 2), strides=(2, 2))
    h = h.reshape(h.shape[0], -1)
    inter = {'conv': h}  # [batch, flattened conv features], for a head that skips the Dense.
    for i, width in enumerate(self.hidden):
      h = nn.relu(dense(width, name=f'dense_{i}')(h))
    return h, inter


TRUNKS['conv'] = ConvTrunk
