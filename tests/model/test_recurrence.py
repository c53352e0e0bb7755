"""The LSTM loop with a hand-written backward pass equals JAX's own gradient of the plain loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlheads.model import recurrence


@pytest.mark.parametrize('masked', [False, True])
def test_lstm_value_and_gradient_equal_autodiff_of_the_plain_loop(masked):
  time, batch, units = 7, 3, 4
  rng = np.random.default_rng(0)
  xw = jnp.asarray(rng.normal(size=(time, batch, 4 * units)), jnp.float32)
  recurrent = jnp.asarray(rng.normal(size=(units, 4 * units)) * 0.5, jnp.float32)
  keep = None
  if masked:  # left padding on one row, a gap in another
    keep = np.ones((time, batch, 1), np.float32)
    keep[:3, 0] = 0
    keep[4, 2] = 0
    keep = jnp.asarray(keep)
  probe = jnp.asarray(rng.normal(size=(batch, units)), jnp.float32)

  def loss(fn):
    return lambda xw, r: (fn(xw, r, keep) * probe).sum()

  ours = jax.jit(jax.value_and_grad(loss(recurrence.lstm), argnums=(0, 1)))(xw, recurrent)
  ref = jax.jit(jax.value_and_grad(loss(recurrence.reference_lstm), argnums=(0, 1)))(
      xw, recurrent)
  np.testing.assert_allclose(ours[0], ref[0], rtol=1e-6)
  for a, b in zip(ours[1], ref[1]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  if masked:  # a masked step's input gets no gradient, the others do
    dxw = np.asarray(ours[1][0])
    assert np.all(dxw[:3, 0] == 0) and np.all(dxw[4, 2] == 0)
    assert np.abs(dxw[3:, 0]).max(-1).min() > 0
