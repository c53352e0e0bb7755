"""K whole networks in one program: what the per_class head is made of.

Each network is a trunk and a Dense(1) output; their parameters are stacked
(leading axis K), so a state, a checkpoint and an optimizer see one tree. Two
layouts run the same function on the same parameters:

- 'vmap': `nn.vmap` over the K networks (one batched program);
- 'scan': the K networks one after another in a loop (`lax.map`) inside the jitted
  step, each network's forward recomputed in the backward loop (`jax.checkpoint`) but
  for what its trunk names `SAVED`, so that one network's activations are live at a time.

`layout(trunk)` chooses by measurement (notes/perf.md, `./launch.sh bench
--cases=per_class,per_class_conv`): vmapped dense layers are batched GEMMs, fast
everywhere; vmapped convolutions are batched patch GEMMs on the CPU (`layers.Conv3x3`),
which ran slower than the scan (133-197 ms a step against 109-131 for the conv trunk,
K 10), so a trunk that says `vmaps_well = False` is scanned on the CPU. Two layouts were
measured and dropped: K static slices of the stacked parameters unrolled in one program
(97-191 ms), and the scan without `jax.checkpoint` (159 ms: its stacked residuals cost
more than the recomputation).
"""

from collections.abc import Callable, Mapping
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlheads import errors
from mlheads.model import layers

LAYOUTS = ('vmap', 'scan')
# What the scan keeps of a network's forward for its backward (`jax.ad_checkpoint.checkpoint_name`
# in a trunk); the rest is recomputed. The conv trunk keeps its deep convolutions' outputs:
# recomputing their GEMMs cost more than keeping the outputs (76.8 vs 84.2 ms a step, K 10,
# notes/perf.md). Outside the scan the name changes nothing.
SAVED = 'per_class_scan_saved'


class OneNetwork(nn.Module):
  """One class's whole network: a trunk and a Dense(1) output, `inputs -> [batch]`."""
  trunk: nn.Module
  train: bool = False

  @nn.compact
  def __call__(self, inputs):
    h, _ = self.trunk(inputs, train=self.train)
    return layers.dense(1, name='out')(h)[..., 0]


class _Scanned(nn.Module):
  """The K networks one after another in a loop (`lax.map`) over the stacked parameters;
  each network's forward is recomputed in the backward pass (`jax.checkpoint`), so the
  backward loop runs one network's forward and backward at a time."""
  trunk: nn.Module
  num_classes: int
  train: bool = False

  @nn.compact
  def __call__(self, inputs):
    params = self.variables['params']  # {'trunk': ..., 'out': ...}, each `[K, ...]`
    one = OneNetwork(trunk=self.trunk, train=self.train, parent=None)
    rng = (self.make_rng('dropout') if self.train and self.has_rng('dropout') else None)

    @functools.partial(jax.checkpoint, policy=jax.checkpoint_policies.save_only_these_names(SAVED))
    def network(args):
      p_k, k = args
      rngs = {} if rng is None else {'dropout': jax.random.fold_in(rng, k)}
      return one.apply({'params': p_k}, inputs, rngs=rngs)

    return jax.lax.map(network, (params, jnp.arange(self.num_classes))).T


def layout(trunk: nn.Module, backend: str | None = None) -> str:
  """'scan' for a trunk that vmaps badly (`vmaps_well = False`) on the CPU, else 'vmap'."""
  backend = backend or jax.default_backend()
  return 'scan' if backend == 'cpu' and not getattr(trunk, 'vmaps_well', True) else 'vmap'


def stacked(trunk: nn.Module, num_classes: int, train: bool, name: str,
            how: str | None = None, initializing: bool = False
            ) -> Callable[[Mapping[str, jax.Array]], jax.Array]:
  """K copies of `OneNetwork` named `name`: `inputs -> logits [batch, K]`.

  Call inside a compact scope. `how` is 'vmap', 'scan' or None (`layout(trunk)`); the
  parameter tree, the outputs and the gradients are the same for both. Parameters are
  always created by the vmapped layout (`initializing`: the module is in `Module.init`),
  so a seed gives the same K networks whichever layout trains them (dropout masks, where a
  trunk has dropout, are drawn from other keys, with the same distribution).
  """
  how = how or layout(trunk)
  if how not in LAYOUTS:
    raise errors.UsageError(f'per_class layout {how!r}: known {list(LAYOUTS)}')
  if initializing:
    how = 'vmap'
  trunk = trunk.clone(parent=None, name=None)
  if how == 'scan':
    return _Scanned(trunk=trunk, num_classes=num_classes, train=train, name=name)
  return nn.vmap(OneNetwork, variable_axes={'params': 0},
                 split_rngs={'params': True, 'dropout': True},
                 in_axes=None, out_axes=-1, axis_size=num_classes)(
                     trunk=trunk, train=train, name=name)
