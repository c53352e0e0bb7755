"""Sampled negatives for the sigmoid head: an unbiased estimate of the full loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlheads import configs
from mlheads import errors
from mlheads import train
from mlheads.data import base
from mlheads.model import model as model_lib

B, K, D = 4, 12, 5


def _model(negatives, loss=''):
  c = configs.base_config()
  c.trunk = {'kind': 'mlp', 'inputs_keys': ('x',), 'hidden': (D,)}
  c.heads = {'y': {**configs.head('sigmoid', target='y', loss=loss), 'negatives': negatives}}
  ds = base.Dataset(name='toy', splits={}, meta={}, inputs={'x': base.Field((3,), 'float32',
                                                                           'features')},
                    targets={'y': base.Field((K,), 'float32', 'binary', sparse=3)})
  return c, model_lib.build_model(c, ds)


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(B, 3)).astype(np.float32)
  y = np.zeros((B, K), np.float32)
  for i in range(B):
    y[i, rng.choice(K, size=i % 3 + 1, replace=False)] = 1
  mask = np.ones((B, K), np.float32)
  mask[1, :4] = 0  # unknown labels: neither positive nor negative terms
  return {'x': x}, y, mask


def test_sampled_loss_is_unbiased_and_eval_scores_every_class():
  _, (model, heads) = _model(negatives=3)
  head = heads['y']
  assert head.max_positives == 3  # the target's sparse width
  inputs, y, mask = _batch()
  params = model.init(jax.random.PRNGKey(0), inputs)['params']
  full = model.apply({'params': params}, inputs)['y']  # eval: all K logits
  assert full.shape == (B, K)
  want = head.loss_fn(full, y, mask)  # the full masked-mean BCE

  def sampled(key):
    out = model.apply({'params': params}, inputs, labels={'y': y}, masks={'y': mask},
                      train=True, rngs={'dropout': key})['y']
    return head.loss_fn(out, y, mask)

  draws = jax.vmap(sampled)(jax.random.split(jax.random.PRNGKey(1), 20_000))
  assert draws.shape == (20_000, B)
  np.testing.assert_allclose(draws.mean(0), want, rtol=0.02)
  assert float(draws.std(0).min()) > 0  # really sampled
  # The gradient is unbiased too.
  grad = lambda f: jax.grad(lambda p: f(p).sum())(params)
  g_full = grad(lambda p: head.loss_fn(model.apply({'params': p}, inputs)['y'], y, mask))
  g_mean = jax.tree.map(lambda *g: jnp.mean(jnp.stack(g), 0), *[
      grad(lambda p, k=k: head.loss_fn(model.apply(
          {'params': p}, inputs, labels={'y': y}, masks={'y': mask}, train=True,
          rngs={'dropout': k})['y'], y, mask)) for k in jax.random.split(jax.random.PRNGKey(2),
                                                                          400)])
  for a, b in zip(jax.tree.leaves(g_mean), jax.tree.leaves(g_full)):
    np.testing.assert_allclose(a, b, atol=0.15 * float(np.abs(b).max()) + 1e-6)


def test_sampled_negatives_need_bce_and_a_count():
  for negatives, loss, match in ((-1, '', 'negatives must be'), (4, 'focal', 'need the bce')):
    c, _ = _model(0)
    c.heads.y.negatives, c.heads.y.loss = negatives, loss
    with pytest.raises(errors.UsageError, match=match):
      train.check_config(c)


def test_sampled_logits_take_the_added_columns_of_the_chosen_classes():
  """A head's `add` (the bag's wide path) `[B, K]`: the sampled logits of classes `index` are
  the full logits + added at those classes, so the sampled loss still estimates the full."""
  from mlheads.model import layers  # pylint: disable=g-import-not-at-top
  from mlheads.model import sampling  # pylint: disable=g-import-not-at-top
  _, y, mask = _batch()
  h = np.random.default_rng(3).normal(size=(B, D)).astype(np.float32)
  added = np.random.default_rng(4).normal(size=(B, K)).astype(np.float32)
  layer = layers.OutputDense(K)
  params = layer.init(jax.random.PRNGKey(0), h)
  full = layer.apply(params, h) + added

  def sampled(with_added):
    return layer.apply(params, h, y, mask, 5, 3, added if with_added else None,
                       method=lambda m, *a: sampling.sampled_logits(m, *a),
                       rngs={'dropout': jax.random.PRNGKey(1)})

  out, plain = sampled(True), sampled(False)
  index = np.asarray(out['index'])
  np.testing.assert_allclose(out['logits'], np.take_along_axis(full, index, -1), atol=1e-5)
  np.testing.assert_allclose(out['logits'] - plain['logits'],
                             np.take_along_axis(added, index, -1), atol=1e-5)
