"""Losses: masks, numerics at extreme logits, and agreement with their definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlheads import errors
from mlheads.model import losses

CLASSIFICATION = tuple(n for n, l in losses.LOSSES.items() if l.targets == 'binary')
B, K = 4, 3


def _data(seed=0):
  rng = np.random.default_rng(seed)
  logits = jnp.asarray(rng.normal(size=(B, K)) * 2, jnp.float32)
  labels = jnp.asarray(rng.random((B, K)) > 0.5, jnp.float32)
  labels = labels.at[0, 0].set(1.0)  # every row keeps a known positive below
  mask = jnp.asarray(rng.random((B, K)) > 0.3, jnp.float32).at[:, 0].set(1.0)
  return logits, labels, mask


def _value_and_grad(name, logits, labels, mask):
  f = lambda z: losses.get(name).fn(z, labels, mask).sum()
  return losses.get(name).fn(logits, labels, mask), jax.grad(f)(logits)


@pytest.mark.parametrize('name', CLASSIFICATION + ('mse', 'huber'))
def test_masked_labels_change_neither_loss_nor_gradient(name):
  logits, labels, mask = _data()
  assert (mask == 0).any()
  garbage = jnp.where(mask > 0, labels, jnp.asarray([[7.0, -3.0, jnp.nan]] * B))
  l1, g1 = _value_and_grad(name, logits, labels, mask)
  l2, g2 = _value_and_grad(name, logits, garbage, mask)
  np.testing.assert_array_equal(l1, l2)
  np.testing.assert_array_equal(g1, g2)
  # A masked entry gets no gradient at all.
  assert (g1[mask == 0] == 0).all()


@pytest.mark.parametrize('name', CLASSIFICATION + ('mse', 'huber'))
def test_all_ones_mask_equals_no_mask(name):
  logits, labels, _ = _data(1)
  with_mask = losses.get(name).fn(logits, labels, jnp.ones_like(labels))
  without = losses.get(name).fn(logits, labels)
  np.testing.assert_array_equal(with_mask, without)
  assert with_mask.shape == (B,)


@pytest.mark.parametrize('name', CLASSIFICATION)
def test_extreme_logits_give_finite_losses_and_gradients(name):
  logits = jnp.asarray([[1e9, -1e9, 0.0], [-1e9, 1e9, 1e9], [1e9, 1e9, -1e9]], jnp.float32)
  labels = jnp.asarray([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
  loss, grad = _value_and_grad(name, logits, labels, jnp.ones_like(labels))
  assert np.isfinite(loss).all() and np.isfinite(grad).all(), (loss, grad)
  assert (loss > 1e6).all()  # each row has a confidently wrong label


def test_bce_matches_its_definition_and_options():
  logits, labels, _ = _data(2)
  p = jax.nn.sigmoid(logits)
  want = -(labels * jnp.log(p) + (1 - labels) * jnp.log(1 - p)).mean(-1)
  np.testing.assert_allclose(losses.sigmoid_bce(logits, labels), want, rtol=1e-5)
  want_pw = -(3.0 * labels * jnp.log(p) + (1 - labels) * jnp.log(1 - p)).mean(-1)
  np.testing.assert_allclose(losses.sigmoid_bce(logits, labels, pos_weight=3.0), want_pw,
                             rtol=1e-5)
  t = labels * 0.8 + 0.1
  want_ls = -(t * jnp.log(p) + (1 - t) * jnp.log(1 - p)).mean(-1)
  np.testing.assert_allclose(losses.sigmoid_bce(logits, labels, label_smoothing=0.2), want_ls,
                             rtol=1e-5)


def test_focal_with_gamma_zero_is_bce_and_down_weights_easy_examples():
  logits, labels, _ = _data(3)
  np.testing.assert_allclose(losses.focal(logits, labels, gamma=0.0),
                             losses.sigmoid_bce(logits, labels), rtol=1e-5)
  easy = jnp.full((1, 1), 4.0)
  assert losses.focal(easy, jnp.ones((1, 1)))[0] < 0.01 * losses.sigmoid_bce(
      easy, jnp.ones((1, 1)))[0]


def test_asl_matches_the_paper():
  logits, labels, _ = _data(4)
  p = jax.nn.sigmoid(logits)
  pm = jnp.maximum(p - 0.05, 0.0)
  want = -(labels * (1 - p) ** 1 * jnp.log(p)
           + (1 - labels) * pm ** 4 * jnp.log(1 - pm)).sum(-1)
  np.testing.assert_allclose(losses.asymmetric(logits, labels), want, rtol=1e-4, atol=1e-7)
  # gamma 0, no clip: summed BCE.
  np.testing.assert_allclose(
      losses.asymmetric(logits, labels, gamma_neg=0.0, gamma_pos=0.0, clip=0.0),
      losses.sigmoid_bce(logits, labels) * K, rtol=1e-5)
  # A negative below the clip costs nothing.
  assert losses.asymmetric(jnp.full((1, 1), -4.0), jnp.zeros((1, 1)))[0] == 0.0


def test_zlpr_matches_its_definition():
  logits, labels, _ = _data(5)
  s, y = np.asarray(logits, np.float64), np.asarray(labels) > 0
  want = [np.log1p(np.exp(s[b][~y[b]]).sum()) + np.log1p(np.exp(-s[b][y[b]]).sum())
          for b in range(B)]
  np.testing.assert_allclose(losses.zlpr(logits, labels), want, rtol=1e-5)


def test_softmax_ce_spreads_the_target_over_true_labels():
  logits, labels, _ = _data(6)
  logp = jax.nn.log_softmax(logits)
  t = labels / labels.sum(-1, keepdims=True)
  want = jnp.where(labels.sum(-1) > 0, -(t * logp).sum(-1), 0.0)
  np.testing.assert_allclose(losses.softmax_ce(logits, labels), want, rtol=1e-5)
  # A row without a positive has no target: loss and gradient 0.
  z, y = jnp.ones((1, K)), jnp.zeros((1, K))
  assert losses.softmax_ce(z, y)[0] == 0
  assert (jax.grad(lambda z: losses.softmax_ce(z, y).sum())(z) == 0).all()


def test_unknown_loss_lists_the_known_ones():
  with pytest.raises(errors.UsageError, match='known:.*asl.*bce'):
    losses.get('hinge')


def test_options_are_introspectable():
  assert losses.get('asl').options == ('gamma_neg', 'gamma_pos', 'clip')
  assert losses.get('zlpr').options == ()
