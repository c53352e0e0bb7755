"""A small pre-norm Transformer encoder over token ids, pooled over the real tokens.

The `transformer` trunk (trunks.py) is this encoder plus side inputs and a Dense stack.
Padding (id 0) is invisible to it, on either side: attention never reads a padded key,
positions count real tokens only (the first real token is position 0, wherever the
tokenizer's left padding put it), and the pooled mean runs over real tokens. So the
output depends only on the sequence of real tokens, which tests/model/test_transformer.py
checks by adding padding.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlheads.model import layers


class Block(nn.Module):
  """Pre-norm residual block: `h + Attn(LN(h))`, then `h + MLP(LN(h))` (GELU).

  Attributes:
    num_heads: attention heads; the width `[.., d]` must divide by it.
    mlp_dim: hidden width of the position-wise MLP.
    dropout: rate on the attention weights and on each residual branch (training only).
  """
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, h: jax.Array, mask: jax.Array, train: bool = False) -> jax.Array:
    """h: `[batch, time, d]`; mask: `[batch, 1, time, time]` (True: the query may read the
    key). Returns `[batch, time, d]`."""
    d = h.shape[-1]
    y = nn.LayerNorm(name='norm_attention')(h)
    y = nn.MultiHeadDotProductAttention(
        self.num_heads, dropout_rate=self.dropout, deterministic=not train,
        kernel_init=layers.glorot, name='attention')(y, y, mask=mask)
    h = h + nn.Dropout(self.dropout, deterministic=not train)(y)
    y = nn.LayerNorm(name='norm_mlp')(h)
    y = layers.dense(d, name='mlp_out')(nn.gelu(layers.dense(self.mlp_dim, name='mlp_in')(y)))
    return h + nn.Dropout(self.dropout, deterministic=not train)(y)


class Encoder(nn.Module):
  """Token + learned position embeddings -> `num_layers` Blocks -> LayerNorm -> masked mean.

  Attributes:
    vocab_size: number of token ids (0 is padding).
    max_len: positions in the table; a row holds at most this many real tokens.
    dim: model width d.
    num_layers, num_heads, mlp_dim, dropout: as in `Block`.
  """
  vocab_size: int
  max_len: int
  dim: int = 64
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 128
  dropout: float = 0.0

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
    """tokens: `[batch, time]` ids, 0 = padding, `time <= max_len`. Returns `[batch, d]`;
    a row of padding only gives zeros."""
    valid = tokens != 0
    # Position of each real token among the real tokens: left padding shifts nothing.
    positions = jnp.maximum(jnp.cumsum(valid, axis=1) - 1, 0)
    h = nn.Embed(self.vocab_size, self.dim, embedding_init=layers.embed_init,
                 name='embedding')(tokens)
    h = h + nn.Embed(self.max_len, self.dim, embedding_init=nn.initializers.normal(0.02),
                     name='position')(positions)
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    mask = nn.make_attention_mask(valid, valid)  # [batch, 1, time, time]
    for i in range(self.num_layers):
      h = Block(self.num_heads, self.mlp_dim, self.dropout, name=f'block_{i}')(h, mask, train)
    h = nn.LayerNorm(name='norm')(h)
    weight = valid[..., None].astype(h.dtype)
    return (h * weight).sum(1) / jnp.maximum(weight.sum(1), 1.0)
