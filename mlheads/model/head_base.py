"""The head base class and the context a head reads: what every head in heads.py shares.

A head is a frozen dataclass (hashable, so it can sit inside a Flax module). The base head is
one Dense layer on its source tensor (plus `add`), scored by sigmoid; heads.py's heads
override what they do differently.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mlheads import errors
from mlheads.model import layers
from mlheads.model import losses


@dataclasses.dataclass(frozen=True)
class Context:
  """What a head may read besides its source tensor."""
  inputs: Mapping[str, jax.Array]
  intermediates: Mapping[str, jax.Array]
  trunk: nn.Module  # the trunk, for heads that own whole networks (clone it)
  labels: jax.Array | None  # this head's targets during training (teacher forcing)
  train: bool
  mask: jax.Array | None = None  # 1 where `labels` is known
  initializing: bool = False  # the model is creating its parameters (Module.init)


def ones_if_none(mask, labels):
  return jnp.ones(labels.shape, jnp.float32) if mask is None else mask


@dataclasses.dataclass(frozen=True)
class Head:
  """Base head: a Dense layer on a source tensor, scores by sigmoid.

  Attributes:
    num_classes: K, the width of the head's target.
    target: the data set key the head predicts.
    weight: the loss weight in the total.
    source: 'features' or the name of a trunk intermediate.
    loss: a name in losses.LOSSES (checked when the head's config is resolved).
    loss_options: keyword options for the loss (e.g. pos_weight).
    add: '' or the name of a trunk intermediate `[batch, K]` added to the logits: the `bag`
      trunk's wide (linear) path, `'wide'` (heads that `takes_add()`).
  """
  num_classes: int
  target: str
  weight: float = 1.0
  source: str = 'features'
  loss: str = 'bce'
  loss_options: tuple[tuple[str, Any], ...] = ()
  add: str = ''

  target_kind: ClassVar[str] = 'binary'
  needs_features: ClassVar[bool] = True  # False: the model may skip the shared trunk.
  # True: reads the model inputs (ctx.inputs) itself, through copies of `ctx.trunk` (so it
  # reads the trunk's inputs and no other: `Model.reads`).
  reads_inputs: ClassVar[bool] = False
  needs_train_labels: ClassVar[bool] = False  # True: `fit` must see the train split.
  # The losses (`Loss.reads`) that fit its logits: a softmax's are no labels' log-odds.
  fits_losses: ClassVar[tuple[str, ...]] = ('per_label', 'any')
  ranges: ClassVar[Mapping[str, errors.Range]] = {}  # its own settings' ranges (B26)
  fitted: ClassVar[tuple[str, ...]] = ()  # fields `fit` sets from the train labels

  @classmethod
  def takes_add(cls) -> bool:
    """Whether `output` adds `add` to its logits: this class's does (one Dense)."""
    return cls.output is Head.output

  @classmethod
  def check_settings(cls, name: str, settings: Mapping[str, Any], loss: str) -> None:
    """Rejects valid types that are bad values (B26), before any data is read."""

  @property
  def threshold(self) -> float:
    """The score above which `predict` calls a label present."""
    return 0.5

  def fit(self, labels: np.ndarray, mask: np.ndarray | None = None) -> 'Head':
    """Returns the head adapted to the train split's targets `[n, K]` (default: itself)."""
    del labels, mask
    return self

  def select(self, features, ctx: Context):
    if self.source == 'features':
      return features
    if self.source not in ctx.intermediates:
      raise errors.UsageError(f'head source {self.source!r} is not a trunk output; the trunk '
                              f"gives 'features' and {sorted(ctx.intermediates)}")
    return ctx.intermediates[self.source]

  def output(self, features, ctx: Context, name: str) -> jax.Array:
    """Logits `[batch, K]` (called inside the model's compact scope)."""
    logits = layers.dense(self.num_classes, name=name)(self.select(features, ctx))
    # `add` was checked against the trunk's intermediates up front (model.HeadSpec.check).
    return logits + ctx.intermediates[self.add] if self.add else logits

  def label_shape(self, batch: int) -> tuple[int, ...]:
    return (batch, self.num_classes)

  def check(self, name: str, logits: jax.Array, labels: jax.Array) -> None:
    """Exact shape check at trace time: no silent `[B, 1]` vs `[B, K]` broadcast."""
    want = self.label_shape(logits.shape[0])
    if tuple(labels.shape) != want:
      raise errors.UsageError(
          f'head {name!r} ({type(self).__name__}): targets {self.target!r} have shape '
          f'{tuple(labels.shape)}, the head expects {want} (its logits are '
          f'{tuple(logits.shape)})')

  def known_rows(self, labels, mask) -> jax.Array:
    """`[batch]` bool: rows that carry a training signal (the loss mean's denominator)."""
    del labels
    return mask.sum(-1) > 0

  def loss_fn(self, logits, labels, mask=None) -> jax.Array:
    """Per-example loss `[batch]`; mask `[batch, K]` (None: every label known)."""
    return losses.LOSSES[self.loss].fn(logits, labels, ones_if_none(mask, labels),
                                       **dict(self.loss_options))

  def scores(self, logits) -> jax.Array:
    """Per-class scores `[batch, K]` in [0, 1]."""
    return nn.sigmoid(logits)

  def predict(self, logits) -> jax.Array:
    """The predicted label set `[batch, K]` as 0/1."""
    return (self.scores(logits) > self.threshold).astype(jnp.float32)
