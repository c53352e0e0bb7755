"""Layers the trunks and heads share: Keras-default initializers, Dense (and an output Dense
that can score chosen classes only), a Keras-layout LSTM, and the heads' own layers.

The initializers are Keras' defaults, so that the headline model starts where
the seed's Keras model does: glorot-uniform kernels, zero biases, uniform
(-0.05, 0.05) embeddings, an orthogonal recurrent kernel, forget bias 1.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

glorot = nn.initializers.glorot_uniform()


def embed_init(key, shape, dtype=jnp.float32):
  return jax.random.uniform(key, shape, dtype, -0.05, 0.05)


def dense(features: int, name: str | None = None) -> nn.Dense:
  return nn.Dense(features, kernel_init=glorot, bias_init=nn.initializers.zeros, name=name)


class OutputDense(nn.Module):
  """`dense(features)`'s parameters (kernel `[D, K]`, bias `[K]`, same names and inits), and
  optionally only the logits of chosen classes.

  `__call__(x)`: logits `[batch, K]`; `__call__(x, index)`: the logits `[batch, S]` of
  classes `index [batch, S]` only, gathering S kernel columns per example: B x S x D
  multiply-adds instead of B x K x D (the gradient still scatters into the `[D, K]` kernel).
  """
  features: int
  bias_init: float = 0.0  # every logit's starting value

  @nn.compact
  def __call__(self, x: jax.Array, index: jax.Array | None = None) -> jax.Array:
    kernel = self.param('kernel', glorot, (x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.constant(self.bias_init), (self.features,))
    if index is None:
      return x @ kernel + bias
    rows = jnp.take(kernel.T, index, axis=0)  # [batch, S, D]
    return jnp.einsum('bd,bsd->bs', x, rows) + jnp.take(bias, index)


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


# Heads' own layers: per-class networks (heads.PerClassHead), a classifier chain (ChainHead).


class OneNetwork(nn.Module):
  """One class's whole network: a trunk and a Dense(1) output, `inputs -> [batch]`."""
  trunk: nn.Module
  train: bool = False

  @nn.compact
  def __call__(self, inputs):
    h, _ = self.trunk(inputs, train=self.train)
    return dense(1, name='out')(h)[..., 0]


def per_class_networks(trunk: nn.Module, num_classes: int, train: bool, name: str):
  """K copies of `OneNetwork` with stacked parameters (leading axis K), one program."""
  stacked = nn.vmap(OneNetwork, variable_axes={'params': 0},
                    split_rngs={'params': True, 'dropout': True},
                    in_axes=None, out_axes=-1, axis_size=num_classes)
  return stacked(trunk=trunk.clone(parent=None, name=None), train=train, name=name)


class ChainLayer(nn.Module):
  """Logit k = w_k . h + b_k + sum_{j<k} A[k, j] y_j (a linear classifier chain)."""
  num_classes: int

  @nn.compact
  def __call__(self, h, labels=None):
    k = self.num_classes
    base = dense(k, name='features')(h)  # [batch, K]
    a = self.param('label_kernel', nn.initializers.zeros, (k, k))
    a = a * jnp.tril(jnp.ones((k, k), a.dtype), -1)  # label k sees labels < k only
    if labels is not None:  # teacher forcing: all K logits at once
      return base + labels.astype(base.dtype) @ a.T

    def step(y, inp):  # sequential decoding: label k sees its own earlier predictions
      idx, base_k, a_k = inp
      logit = base_k + y @ a_k
      return y.at[:, idx].set((logit > 0).astype(y.dtype)), logit

    _, logits = jax.lax.scan(step, jnp.zeros_like(base),
                             (jnp.arange(k), base.T, a))
    return logits.T
