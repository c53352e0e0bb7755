"""The parameters' fingerprint (metrics.json's params_sha256): a pure function of the
leaves' paths, dtypes, shapes and bytes."""

import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from mlheads.state import manifest


def _params():
  return {'dense': {'kernel': np.arange(6, dtype=np.float32).reshape(2, 3),
                    'bias': np.zeros((3,), np.float32)},
          'embed': jnp.ones((2, 2), jnp.float32)}


def test_the_fingerprint_follows_its_documented_recipe():
  h = hashlib.sha256()
  for path, leaf in (("['dense']['bias']", np.zeros((3,), np.float32)),
                     ("['dense']['kernel']", np.arange(6, dtype=np.float32).reshape(2, 3)),
                     ("['embed']", np.ones((2, 2), np.float32))):
    h.update(f'{path} {leaf.dtype.str} {list(leaf.shape)}\n'.encode())
    h.update(leaf.tobytes())
  assert manifest.tree_sha256(_params()) == h.hexdigest()


def test_any_byte_dtype_shape_or_path_changes_the_fingerprint_and_order_does_not():
  base = manifest.tree_sha256(_params())
  reordered = {'embed': _params()['embed'], 'dense': dict(reversed(_params()['dense'].items()))}
  assert manifest.tree_sha256(reordered) == base
  changes = []
  p = _params()
  p['dense']['kernel'] = p['dense']['kernel'].copy()
  p['dense']['kernel'][1, 2] = np.nextafter(np.float32(5), np.float32(6))  # one ulp
  changes.append(p)
  p = _params()
  p['embed'] = p['embed'].astype(jnp.bfloat16)
  changes.append(p)
  p = _params()
  p['dense']['kernel'] = p['dense']['kernel'].reshape(3, 2)
  changes.append(p)
  p = _params()
  p['embedding'] = p.pop('embed')
  changes.append(p)
  digests = {manifest.tree_sha256(c) for c in changes}
  assert len(digests) == len(changes) and base not in digests
  assert manifest.tree_sha256(jax.device_put(_params())) == base  # on device or host alike
