"""The LSTM recurrence over pre-projected inputs, with a hand-written backward pass.

`lstm(xw, recurrent, keep)` is Keras' LSTM loop (gates i, f, c, o; sigmoid, sigmoid, tanh,
sigmoid) after the input projection: `xw [time, batch, 4u]` already holds `x W + b`. It is
the same function as the plain `lax.scan` in `reference_lstm` and has the same gradient, to
float32 rounding (tests/model/test_recurrence.py checks both, with and without a mask).

Why not let JAX differentiate the scan: on XLA:CPU that backward pass is several times
slower than the arithmetic, for reasons notes/perf.md measures:
  * an elementwise fusion that reads its step's slice of a scanned array (xs, or the
    residuals the backward scan walks) is emitted as scalar code; a buffer carried from the
    previous iteration keeps it vectorized. `scan_carried` slices one step ahead into the
    carry, so every step's gate math reads plain buffers;
  * the autodiff backward carries `dU` through the loop and zero-fills a stacked gradient
    buffer; here one `[time, batch, 4u]` buffer serves three times: the forward reads
    `x_t` from it and writes step t's gates over it, the backward reads the gates (no
    sigmoid or tanh recomputed but tanh(c_t)) and writes `dz_t` over them, so nothing of
    that size is allocated or zero-filled; `h` and `c` are kept per step, and `dU` is one
    GEMM after the loop. (Recomputing the gates from `h_{t-1}` instead: 20% slower at
    batch 32 and 256, notes/perf.md.)
"""

import functools

import jax
import jax.numpy as jnp


def scan_carried(step, init, xs, reverse=False):
  """`lax.scan(step, init, xs, reverse)`, but `step` receives its `x_t` through the carry.

  Each iteration slices `x_{t+1}` (or `x_{t-1}` when reversed) for the next one, so the
  step's elementwise work reads a plain buffer instead of a slice of `xs` (see above).
  """
  n = jax.tree.leaves(xs)[0].shape[0]

  def take(t):
    return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, t, keepdims=False), xs)

  def body(carry, t):
    c, x = carry
    c, y = step(c, x)
    return (c, take(jnp.clip(t - 1 if reverse else t + 1, 0, n - 1))), y

  (c, _), ys = jax.lax.scan(body, (init, take(n - 1 if reverse else 0)), jnp.arange(n),
                            reverse=reverse)
  return c, ys


def _cell(z, c, units):
  """Keras' LSTM cell on pre-activations `z [batch, 4u]`: returns (h, c, gates)."""
  i = jax.nn.sigmoid(z[:, :units])
  f = jax.nn.sigmoid(z[:, units:2 * units])
  g = jnp.tanh(z[:, 2 * units:3 * units])
  o = jax.nn.sigmoid(z[:, 3 * units:])
  c = f * c + i * g
  return o * jnp.tanh(c), c, (i, f, g, o)


def _forward(xw, recurrent, keep, save):
  """Runs the loop; returns h_T and, if `save`, what the backward pass reads: the carried
  states `hs`, `cs` `[time, batch, u]` and the gates (i, f, g, o) of every step, written
  over `xw` as it is read (so no `[time, batch, 4u]` buffer is allocated and zero-filled)."""
  units, steps = recurrent.shape[0], xw.shape[0]

  def step(carry, inp):
    h, c = carry
    x, m = inp
    h_new, c_new, gates = _cell(x + h @ recurrent, c, units)
    if m is not None:  # a masked step leaves the state as it was
      h_new = m * h_new + (1 - m) * h
      c_new = m * c_new + (1 - m) * c
    return (h_new, c_new), gates

  zeros = jnp.zeros((xw.shape[1], units), xw.dtype)
  if not save:
    (h, _), _ = scan_carried(lambda c, x: (step(c, x)[0], None), (zeros, zeros), (xw, keep))
    return h, None

  def at(a, t):
    return None if a is None else jax.lax.dynamic_index_in_dim(a, t, keepdims=False)

  def body(carry, t):
    # x_t was read one step ahead into the carry (see `scan_carried`); its slot then
    # takes step t's gates.
    state, x, buf = carry
    state, gates = step(state, (x, at(keep, t)))
    buf = jax.lax.dynamic_update_index_in_dim(buf, jnp.concatenate(gates, -1), t, 0)
    return (state, at(buf, jnp.minimum(t + 1, steps - 1)), buf), state

  ((h, _), _, gates), (hs, cs) = jax.lax.scan(body, ((zeros, zeros), at(xw, 0), xw),
                                              jnp.arange(steps))
  return h, (hs, cs, gates)


@functools.partial(jax.custom_vjp)
def lstm(xw, recurrent, keep=None):
  """The last hidden state `[batch, u]` of Keras' LSTM loop.

  Args:
    xw: `[time, batch, 4u]` input projections `x W + b` (gates i, f, c, o).
    recurrent: `[u, 4u]` recurrent kernel.
    keep: optional `[time, batch, 1]` 0/1; a 0 step leaves `h` and `c` unchanged.
  """
  return _forward(xw, recurrent, keep, save=False)[0]


def _lstm_fwd(xw, recurrent, keep=None):
  h, (hs, cs, gates) = _forward(xw, recurrent, keep, save=True)
  return h, (recurrent, keep, hs, cs, gates)


def _lstm_bwd(res, dh):
  recurrent, keep, hs, cs, gates = res
  units, steps = recurrent.shape[0], gates.shape[0]
  r_t = recurrent.T
  zeros = jnp.zeros_like(dh)

  def at(a, t):
    return jax.lax.dynamic_index_in_dim(a, t, keepdims=False)

  def inputs(buf, t):
    """Step t's gates (from `buf`), the c it read and its mask."""
    return (at(buf, t), jnp.where(t == 0, zeros, at(cs, jnp.maximum(t - 1, 0))),
            None if keep is None else at(keep, t))

  def step(dh, dc, acts, cp, m):
    """Gradients wrt the state after step t -> wrt the state before it, and dz_t."""
    i, f, g, o = (acts[:, k * units:(k + 1) * units] for k in range(4))
    tc = jnp.tanh(f * cp + i * g)  # of the cell's c_t (before any mask)
    dh_cell, dc_in = (dh, dc) if m is None else (m * dh, m * dc)
    dc_cell = dc_in + dh_cell * o * (1 - tc * tc)
    dz = jnp.concatenate([dc_cell * g * i * (1 - i), dc_cell * cp * f * (1 - f),
                          dc_cell * i * (1 - g * g), dh_cell * tc * o * (1 - o)], -1)
    dh_prev, dc_prev = dz @ r_t, dc_cell * f
    if m is not None:
      dh_prev, dc_prev = dh_prev + (1 - m) * dh, dc_prev + (1 - m) * dc
    return dh_prev, dc_prev, dz

  def body(k, carry):
    # Walks t = T-1 .. 0. dz_t overwrites the gates of step t (read one step ahead), so the
    # backward pass allocates and zero-fills no [time, batch, 4u] array of its own.
    t = steps - 1 - k
    dh, dc, inp, buf = carry
    dh, dc, dz = step(dh, dc, *inp)
    buf = jax.lax.dynamic_update_index_in_dim(buf, dz, t, 0)
    return dh, dc, inputs(buf, jnp.maximum(t - 1, 0)), buf

  *_, dz = jax.lax.fori_loop(0, steps, body, (dh, zeros, inputs(gates, steps - 1), gates))
  # dU = sum_t h_{t-1}^T dz_t (h_{-1} = 0), one GEMM after the loop; written as a broadcast
  # product and sum, which XLA:CPU runs faster than the dot contracting both leading axes.
  h_prev = jnp.concatenate([jnp.zeros_like(hs[:1]), hs[:-1]], 0).reshape(-1, units)
  d_recurrent = (h_prev[:, :, None] * dz.reshape(-1, 4 * units)[:, None, :]).sum(0)
  d_keep = None if keep is None else jnp.zeros_like(keep)
  return dz, d_recurrent, d_keep


lstm.defvjp(_lstm_fwd, _lstm_bwd)


def reference_lstm(xw, recurrent, keep=None):
  """The same loop as `lstm`, differentiated by JAX (the tests' reference)."""
  units = recurrent.shape[0]

  def step(carry, inp):
    h, c = carry
    x, m = inp
    h_new, c_new, _ = _cell(x + h @ recurrent, c, units)
    if m is not None:
      h_new = m * h_new + (1 - m) * h
      c_new = m * c_new + (1 - m) * c
    return (h_new, c_new), None

  zeros = jnp.zeros((xw.shape[1], units), xw.dtype)
  (h, _), _ = jax.lax.scan(step, (zeros, zeros), (xw, keep))
  return h
