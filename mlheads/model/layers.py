"""Layers the trunks and heads share: Keras-default initializers, Dense (and an output Dense
that can score chosen classes only), a Keras-layout LSTM, and the heads' own layers.

The initializers are Keras' defaults, so that the headline model starts where
the seed's Keras model does: glorot-uniform kernels, zero biases, uniform
(-0.05, 0.05) embeddings, an orthogonal recurrent kernel, forget bias 1.
"""

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mlheads.model import recurrence

glorot = nn.initializers.glorot_uniform()


def embed_init(key, shape, dtype=jnp.float32):
  return jax.random.uniform(key, shape, dtype, -0.05, 0.05)


def as_float(x: jax.Array) -> jax.Array:
  """Floating inputs as they are (float32, or bfloat16 under model.ComputeIn), others as
  float32."""
  return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


class Conv3x3(nn.Module):
  """`nn.Conv(features, (3, 3))` with 'SAME' padding: the same parameters (kernel
  `[3, 3, C, features]`, bias `[features]`, glorot / zeros) and the same function,
  `[batch, H, W, C] -> [batch, H, W, features]`.

  On the CPU it runs as one GEMM over the 3x3 patches (`[batch * H * W, 9 C] @ [9 C,
  features]`): XLA:CPU's convolution gradient is slower than the GEMMs' (the digit_mosaics
  second layer at batch 64: 6.0 ms -> 2.6 ms forward and backward, notes/perf.md), and a
  convolution whose kernel is sliced out of stacked per-class networks is slower still. The
  GEMM is `project`'s, whose kernel gradient avoids XLA:CPU's slow `patches.T @ dy` (the
  first layer's, `[9, 16384] @ [16384, 32]`, took 1.1 ms of a 8.4 ms step: now 6.7 ms).
  Elsewhere it is `lax.conv_general_dilated` (cuDNN's or the TPU's convolution).
  """
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', glorot, (3, 3, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    if jax.default_backend() != 'cpu':
      y = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      return y + bias
    _, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    # [batch, H, W, 9 C], ordered (dy, dx, c) as the kernel's first three axes. Not
    # `lax.conv_general_dilated_patches`: it lowers to a convolution itself (the second layer's
    # gradient at batch 64: 107 ms against 4.5 ms for these slices).
    patches = jnp.concatenate([padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)],
                              axis=-1)
    b = x.shape[0]
    y = project(patches.reshape(b * h * w, -1), kernel.reshape(-1, self.features), bias)
    return y.reshape(b, h, w, self.features)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """`nn.max_pool(x, (2, 2), strides=(2, 2))` on `[batch, H, W, C]` (odd edges dropped, as
  VALID padding does) -> `[batch, H // 2, W // 2, C]`, as a reshape and a max.

  Why not `nn.max_pool`: its gradient lowers to select-and-scatter, which XLA:CPU runs
  slowly (the digit_mosaics network's gradient: 12.6 ms -> 7.8 ms at batch 64, notes/perf.md).
  The forward values are the same; the gradient differs only where a window holds two equal
  maxima (shared between them here, given to the first by select-and-scatter).
  """
  b, h, w, c = x.shape
  x = x[:, :h - h % 2, :w - w % 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


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


class Lookup(NamedTuple):
  """Token ids resolved against the rows of their table that a batch touches.

  The train step passes this in place of a `[batch, time]` token input whose table is
  updated row by row (`Model.row_tables`): the model reads `rows` instead of the whole
  table, so the gradient it yields is `[S, E]` for those rows only.
  """
  tokens: jax.Array  # [batch, time] the original ids (padding is 0)
  ids: jax.Array  # [batch, time] indices into `rows`
  rows: jax.Array  # [S, E] the table's rows the batch uses
  unique: jax.Array | None  # [S] their table rows (entries >= V pad); None: rows is the table


def lookup_rows(table: jax.Array, tokens: jax.Array,
                given: tuple[jax.Array, jax.Array] | None = None) -> Lookup:
  """The distinct table rows the tokens use, and ids into them.

  `given` is `host_rows(tokens, V)` (`unique [S]`, padded with V, and `ids`), computed on the
  host: the same values `jnp.unique` gives here at the most rows there can be
  (`min(tokens, V)`), at a size bounded by the batch's own distinct ids, and without the
  sort and prefix sums in the step (~1 ms of a 17 ms batch-32 step, notes/perf.md). With at
  least as many tokens as table rows, the rows are the table itself (no gather, no scatter:
  most rows are touched anyway).
  """
  vocab = table.shape[0]
  most = min(tokens.size, vocab)
  if most == vocab:
    return Lookup(tokens, tokens, table, None)
  if given is None:
    unique, ids = jnp.unique(tokens, size=most, fill_value=vocab, return_inverse=True)
  else:
    unique, ids = given
  # Padding entries (>= V) read a clipped row: no id points at them, and they get no update.
  rows = jnp.take(table, unique, axis=0, mode='clip')
  return Lookup(tokens, ids.reshape(tokens.shape).astype(jnp.int32), rows, unique)


def host_rows(tokens: np.ndarray, vocab: int, buckets: int = 16
              ) -> tuple[np.ndarray, np.ndarray] | None:
  """`lookup_rows`' `given` for the host array `tokens`: the distinct ids, sorted and padded
  with `vocab` up to a `buckets`-th of the most there can be (`min(tokens, V)`), and each
  token's index into them; None where the step reads the whole table.

  Every op on a batch's rows (the projection, its gradients, the row optimizer) costs in
  proportion to the padded row count, and the most is far from typical: a batch of 32
  tweets padded to 100 tokens uses ~350 distinct ids, not 3,200; 32 rows of random ids use
  ~2,740. Rounding keeps the step's compiled shapes to a few per run (at most `buckets`).
  """
  most = min(tokens.size, vocab)
  if most == vocab:  # `lookup_rows` reads the whole table: one size, one compiled step
    return None
  unique, ids = np.unique(tokens, return_inverse=True)
  quantum = -(-most // buckets)
  size = min(most, quantum * -(-len(unique) // quantum))
  padded = np.full(size, vocab, np.int32)
  padded[:len(unique)] = unique
  return padded, ids.reshape(tokens.shape).astype(np.int32)


@jax.custom_vjp
def project(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """`x @ kernel + bias` for `x [n, in]`, with the kernel's gradient as one plain GEMM.

  JAX's own backward computes `x.T @ dy` as a dot contracting both operands' leading axis,
  which XLA:CPU runs on a slower path (notes/perf.md); the broadcast form below is the same
  sum and lowers to the fast one.
  """
  return x @ kernel + bias


def _project_fwd(x, kernel, bias):
  return project(x, kernel, bias), (x, kernel)


def _project_bwd(res, dy):
  x, kernel = res
  return dy @ kernel.T, (x[:, :, None] * dy[:, None, :]).sum(0), dy.sum(0)


project.defvjp(_project_fwd, _project_bwd)


class LSTM(nn.Module):
  """A Keras-layout LSTM returning its last hidden state.

  Parameters match `keras.layers.LSTM(units)`: `kernel [in, 4u]`,
  `recurrent_kernel [u, 4u]`, `bias [4u]`, gates in order i, f, c, o, forget
  bias 1. The input projection of every time step is computed before the loop,
  which then carries only the `[batch, u] @ [u, 4u]` recurrence
  (`recurrence.lstm`, with a hand-written backward pass).

  Fed token ids and their embedding table (or a batch's rows of it), it picks the
  cheaper of two exact ways to project (notes/perf.md): gather `[time * batch]`
  rows and multiply by the kernel, or, when there are more tokens than table
  rows, multiply the rows by the kernel once and gather rows of `[rows, 4u]`. The
  second never materializes the `[batch, time, in]` embeddings or their gradient.

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
      table: `[rows, in]` embedding table (or the rows of it that `ids` index).
    """
    u = self.units
    width = x.shape[-1] if x is not None else table.shape[-1]
    kernel = self.param('kernel', glorot, (width, 4 * u))
    recurrent = self.param('recurrent_kernel', nn.initializers.orthogonal(), (u, 4 * u))
    bias = self.param('bias', lambda _, s: jnp.zeros(s).at[u:2 * u].set(1.0), (4 * u,))
    if x is not None:  # [batch, time, in] -> time-major rows: the matmul stays a plain GEMM
      time = x.shape[1]
      xw = project(jnp.swapaxes(x, 0, 1).reshape(-1, width), kernel, bias)
    elif ids.size >= table.shape[0]:
      time = ids.shape[1]
      xw = jnp.take(project(table, kernel, bias), ids.T, axis=0, mode='clip')
    else:
      time = ids.shape[1]
      xw = project(jnp.take(table, ids.T.reshape(-1), axis=0, mode='clip'), kernel, bias)
    xw = xw.reshape(time, -1, 4 * u)  # [time, batch, 4u]
    keep = None if valid is None else jnp.swapaxes(valid, 0, 1)[..., None].astype(xw.dtype)
    return recurrence.lstm(xw, recurrent, keep)


# A head's own layer: a classifier chain (heads.ChainHead).


class LabelChain(nn.Module):
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
