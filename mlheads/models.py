"""A model is a trunk plus named heads: dict of inputs -> dict of logits."""

from collections.abc import Mapping

import flax.linen as nn
import jax

from mlheads import heads as heads_lib


class Model(nn.Module):
  """Runs the trunk once, then every head on its source tensor.

  Attributes:
    trunk: a module returning `(features [batch, D], intermediates)`.
    heads: output name -> head.
  """
  trunk: nn.Module
  heads: Mapping[str, heads_lib.Head]

  @nn.compact
  def __call__(self, inputs: Mapping[str, jax.Array], labels: Mapping[str, jax.Array] | None = None,
               train: bool = False, masks: Mapping[str, jax.Array] | None = None
               ) -> dict[str, jax.Array]:
    """inputs: key -> `[batch, ...]`; labels, masks: target key -> `[batch, K]` (for
    heads that read them in training). Returns output name -> logits `[batch, K']`."""
    # Heads that own whole networks (per_class) do not read the shared trunk: if no
    # head does, it is not run, so it has no (dead, never-updated) parameters.
    features, intermediates = None, {}
    if any(h.needs_features for h in self.heads.values()):
      features, intermediates = self.trunk(inputs, train=train)
    out = {}
    for name, head in self.heads.items():
      ctx = heads_lib.Context(inputs=inputs, intermediates=intermediates, trunk=self.trunk,
                              labels=None if labels is None else labels.get(head.target),
                              train=train,
                              mask=None if masks is None else masks.get(head.target))
      out[name] = head.output(features, ctx, name=name)
    return out


def parameter_overview(params) -> tuple[str, int]:
  """A table of parameter paths, shapes and sizes, and the total count."""
  rows, total = [], 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = '/'.join(str(getattr(p, 'key', p)) for p in path)
    size = int(leaf.size)
    total += size
    rows.append((name, str(tuple(leaf.shape)), f'{size:,}'))
  widths = [max(len(r[i]) for r in rows + [('parameter', 'shape', 'count')]) for i in range(3)]
  fmt = lambda r: f'{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}'
  lines = [fmt(('parameter', 'shape', 'count'))] + [fmt(r) for r in rows]
  lines.append(fmt(('total', '', f'{total:,}')))
  return '\n'.join(lines), total
