"""Heads by name: each owns its output layer, its loss and its decoding.

A head is a frozen dataclass (hashable, so it can sit inside a Flax module).
`Model` calls `head.output(...)` inside its own compact scope, so a head can
create any parameters it needs: a Dense layer, K two-way softmaxes, or K whole
networks. The train step only sees `head.loss(...)`; evaluation only
`head.scores(...)`.

HEADS maps `config.heads.<output>.kind` to a head class.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlheads import errors
from mlheads import losses
from mlheads import trunks


@dataclasses.dataclass(frozen=True)
class Context:
  """What a head may read besides its source tensor."""
  inputs: Mapping[str, jax.Array]
  intermediates: Mapping[str, jax.Array]
  trunk: nn.Module  # the (unbound) trunk, for heads that own whole networks
  labels: jax.Array | None  # this head's targets during training (teacher forcing)
  train: bool


@dataclasses.dataclass(frozen=True)
class Head:
  """Base head: a Dense layer on a source tensor.

  Attributes:
    num_classes: K, the width of the head's target.
    target: the data set key the head predicts.
    weight: the loss weight in the total.
    source: 'features' or the name of a trunk intermediate.
    loss: a name in losses.LOSSES.
    loss_options: keyword options for the loss (e.g. pos_weight).
  """
  num_classes: int
  target: str
  weight: float = 1.0
  source: str = 'features'
  loss: str = 'bce'
  loss_options: tuple[tuple[str, Any], ...] = ()

  target_kind: ClassVar[str] = 'binary'

  def select(self, features, ctx: Context):
    if self.source == 'features':
      return features
    if self.source not in ctx.intermediates:
      raise errors.UsageError(f'head source {self.source!r} is not a trunk output; the trunk '
                              f"gives 'features' and {sorted(ctx.intermediates)}")
    return ctx.intermediates[self.source]

  def output(self, features, ctx: Context, name: str) -> jax.Array:
    """Logits `[batch, K]` (called inside the model's compact scope)."""
    return trunks.dense(self.num_classes, name=name)(self.select(features, ctx))

  def label_shape(self, batch: int) -> tuple[int, ...]:
    return (batch, self.num_classes)

  def check(self, name: str, logits: jax.Array, labels: jax.Array) -> None:
    """Exact shape check at trace time: no silent `[B, 1]` vs `[B, K]` broadcast."""
    want = self.label_shape(logits.shape[0])
    if tuple(labels.shape) != want:
      raise errors.UsageError(f'head {name!r}: targets {self.target!r} have shape '
                              f'{tuple(labels.shape)}, the head expects {want}')

  def loss_fn(self, logits, labels, mask) -> jax.Array:
    """Per-example loss `[batch]`."""
    return losses.get(self.loss)(logits, labels, mask, **dict(self.loss_options))

  def scores(self, logits) -> jax.Array:
    """Per-class scores `[batch, K]` in [0, 1]."""
    return nn.sigmoid(logits)


@dataclasses.dataclass(frozen=True)
class SigmoidHead(Head):
  """K independent sigmoid units with binary cross-entropy."""


@dataclasses.dataclass(frozen=True)
class RegressionHead(Head):
  """Real-valued outputs (counts on a log scale, ...); squared error by default."""
  loss: str = 'mse'
  target_kind: ClassVar[str] = 'real'

  def scores(self, logits):
    return logits


HEADS = {
    'sigmoid': SigmoidHead,
    'regression': RegressionHead,
}


def make(name: str, head_config, target_field) -> Head:
  """Builds the head `name` from its config and the data set's target field."""
  cfg = dict(head_config)
  kind = cfg.pop('kind')
  if kind not in HEADS:
    raise errors.UsageError(f'head {name!r}: unknown kind {kind!r}; known: {sorted(HEADS)}')
  cls = HEADS[kind]
  width = int(target_field.shape[-1])
  num_classes = cfg.pop('num_classes', 0) or width
  if num_classes != width:
    raise errors.UsageError(f'head {name!r}: num_classes is {num_classes} but target '
                            f'{cfg.get("target")!r} has {width} columns')
  if cls.target_kind != target_field.kind:
    raise errors.UsageError(f'head {name!r} ({kind}) needs {cls.target_kind} targets; '
                            f'{cfg.get("target")!r} is {target_field.kind}')
  options = cfg.pop('loss_options', {}) or {}
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(cfg) - fields)
  if unknown:
    raise errors.UsageError(f'head {name!r} ({kind}): unknown settings {unknown}; '
                            f'known: {sorted(fields - {"num_classes"})}')
  cfg = {k: v for k, v in cfg.items() if v is not None}
  return cls(num_classes=num_classes, loss_options=tuple(sorted(dict(options).items())), **cfg)
