"""The conv trunk's layers against Flax's: `Conv3x3` is `nn.Conv(f, (3, 3))` and
`max_pool_2x2` is `nn.max_pool(x, (2, 2), strides=(2, 2))`, values and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlheads.model import layers


@pytest.mark.parametrize('shape', [(3, 6, 5, 2), (2, 4, 4, 1)])
def test_conv3x3_is_flax_conv_same_padding(shape):
  x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
  ours, flax_conv = layers.Conv3x3(4), nn.Conv(4, (3, 3), kernel_init=layers.glorot)
  params = ours.init(jax.random.key(1), x)
  # Same names, shapes and initial values: a checkpoint of either reads as the other.
  jax.tree.map(np.testing.assert_array_equal, params, flax_conv.init(jax.random.key(1), x))
  params = jax.tree.map(lambda a: a + 0.1, params)  # a non-zero bias too
  np.testing.assert_allclose(ours.apply(params, x), flax_conv.apply(params, x),
                             rtol=1e-5, atol=1e-5)
  loss = lambda m: lambda p, x: (jnp.sin(m.apply(p, x)) ** 2).sum()
  grads = jax.grad(loss(ours), (0, 1))(params, x)
  want = jax.grad(loss(flax_conv), (0, 1))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), grads, want)


@pytest.mark.parametrize('shape', [(2, 8, 8, 3), (2, 7, 5, 1)])  # odd edges are dropped
def test_max_pool_2x2_is_flax_max_pool(shape):
  # Distinct values, so no window holds two equal maxima (where the gradients may differ).
  x = jnp.asarray(np.random.default_rng(0).permutation(np.prod(shape)).reshape(shape),
                  jnp.float32)
  flax_pool = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(layers.max_pool_2x2(x), flax_pool(x))
  w = jnp.asarray(np.random.default_rng(1).normal(size=flax_pool(x).shape), jnp.float32)
  grad = lambda f: jax.grad(lambda x: (f(x) * w).sum())(x)
  np.testing.assert_array_equal(grad(layers.max_pool_2x2), grad(flax_pool))
