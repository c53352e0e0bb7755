"""Heads by name: each owns its output layer, its loss and its decoding.

A head is a frozen dataclass (hashable, so it can sit inside a Flax module).
`Model` calls `head.output(...)` inside its own compact scope, so a head can
create any parameters it needs: a Dense layer, K two-way softmaxes, or K whole
networks. The train step only sees `head.loss_fn(...)`; evaluation only
`head.scores(...)` (per-class scores `[batch, K]` in [0, 1]) and
`head.predict(...)` (a label set `[batch, K]` of 0/1).

HEADS maps `config.heads.<output>.kind` to a head class; docs/heads.md compares them. The
base class `Head` and the `Context` a head reads are in head_base.py.
"""

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from mlheads import errors
from mlheads.model import layers
from mlheads.model import losses
from mlheads.model import networks
from mlheads.model import sampling
from mlheads.model.head_base import Context, Head  # heads.Context, heads.Head for callers
from mlheads.model.head_base import ones_if_none as _ones_if_none


@dataclasses.dataclass(frozen=True)
class SigmoidHead(Head):
  """K independent sigmoid units with binary cross-entropy; `negatives = m > 0` trains on
  all positives and m sampled negatives per example (an unbiased estimate, sampling.py).
  `init_bias`: every class starts at probability sigmoid(init_bias) (the prior init of Lin et
  al. 2017; about -log K suits thousands of rare labels, where 0 starts the loss far off)."""
  negatives: int = 0
  init_bias: float = 0.0
  max_positives: int = 0  # P: the target's sparse width (or K), set when the head is built

  ranges: ClassVar[Mapping[str, errors.Range]] = {
      'negatives': errors.Range(0, 2**24, integer=True), 'init_bias': errors.Range(-100, 100)}
  fitted: ClassVar[tuple[str, ...]] = ('max_positives',)  # from the data, not a setting

  @classmethod
  def takes_add(cls) -> bool:
    return True

  @classmethod
  def check_settings(cls, name, settings, loss):
    sampling.check_settings(name, settings, loss)

  def output(self, features, ctx, name):
    layer = layers.OutputDense(self.num_classes, bias_init=self.init_bias, name=name)
    h = self.select(features, ctx)
    # `add` was checked against the trunk's intermediates up front (model.HeadSpec.check).
    added = ctx.intermediates[self.add] if self.add else None
    if self.negatives and ctx.train and ctx.labels is not None:
      return sampling.sampled_logits(layer, h, ctx.labels, ctx.mask, self.negatives,
                                     self.max_positives, added)
    return layer(h) if added is None else layer(h) + added

  def check(self, name, logits, labels):
    super().check(name, logits['logits'] if isinstance(logits, dict) else logits, labels)

  def loss_fn(self, logits, labels, mask=None):
    if isinstance(logits, dict):
      return sampling.sampled_loss(logits, **dict(self.loss_options))
    return super().loss_fn(logits, labels, mask)


@dataclasses.dataclass(frozen=True)
class SoftmaxHead(Head):
  """One softmax over the K classes; the target spreads evenly over the true labels.

  Scores are the softmax probabilities (they sum to 1 over the classes, so a
  row with m true labels ideally gives each 1/m). `predict` calls a label
  present when its probability is at least the uniform share 1/C (C softmax
  classes); rank metrics (mAP, AUC) and top-k read the probabilities directly.

  Rows with no positive label have no target: they are left out of the loss
  and its mean. Unless `none_class` adds an explicit "no label" class that
  such rows target. `none_class=None` (auto) adds it only for K == 1, where a
  softmax over one class would be the constant 1 and learn nothing: with it,
  K == 1 is a two-way softmax, the same family as a sigmoid.
  """
  loss: str = 'softmax_ce'
  none_class: bool | None = None

  fits_losses: ClassVar[tuple[str, ...]] = ('softmax', 'any')

  @property
  def _none(self) -> bool:
    return self.num_classes == 1 if self.none_class is None else bool(self.none_class)

  @property
  def threshold(self) -> float:
    return 1.0 / (self.num_classes + int(self._none))

  def output(self, features, ctx, name):
    width = self.num_classes + int(self._none)
    return layers.dense(width, name=name)(self.select(features, ctx))

  def _extend(self, labels, mask):
    """Appends the none class's target: 1 where every label is known and negative."""
    known = mask > 0
    none = (known.all(-1) & ~(jnp.where(known, labels, 0.0) > 0).any(-1)).astype(labels.dtype)
    return (jnp.concatenate([labels, none[:, None]], -1),
            jnp.concatenate([mask, jnp.ones_like(none)[:, None]], -1))

  def known_rows(self, labels, mask):
    if self._none:
      labels, mask = self._extend(labels, mask)
    return (jnp.where(mask > 0, labels, 0.0) > 0).any(-1)

  def loss_fn(self, logits, labels, mask=None):
    mask = _ones_if_none(mask, labels)
    if self._none:
      labels, mask = self._extend(labels, mask)
    return super().loss_fn(logits, labels, mask)

  def scores(self, logits):
    return jax.nn.softmax(logits, axis=-1)[:, :self.num_classes]


@dataclasses.dataclass(frozen=True)
class BinarySoftmaxHead(Head):
  """Per class its own two-way softmax on the penultimate features: logits `[B, K, 2]`.

  Softmax([a, b])[1] = sigmoid(b - a), so this is the sigmoid head's function
  family with two weight vectors per class; the loss (any per-label loss,
  bce by default, which equals the two-way softmax cross-entropy) reads the
  logit difference.
  """

  def output(self, features, ctx, name):
    h = layers.dense(2 * self.num_classes, name=name)(self.select(features, ctx))
    return h.reshape(h.shape[:-1] + (self.num_classes, 2))

  def loss_fn(self, logits, labels, mask=None):
    return super().loss_fn(logits[..., 1] - logits[..., 0], labels, mask)

  def scores(self, logits):
    return jax.nn.softmax(logits, axis=-1)[..., 1]


@dataclasses.dataclass(frozen=True)
class PerClassHead(Head):
  """One whole network (trunk + binary output) per class, all K trained in one step.

  The K networks have stacked parameters (model/networks.py): one jitted program, K
  independent initialisations, nothing shared. They are vmapped, or run one after another
  where the trunk vmaps badly (convolutions on the CPU); `layout` forces one ('vmap' /
  'scan'; None: by `networks.layout`), with the same parameters and outputs either way.
  Each reads the model inputs, not the shared trunk's features (so `source` must stay
  'features'); scores are sigmoids.
  """
  layout: str | None = None

  needs_features: ClassVar[bool] = False
  reads_inputs: ClassVar[bool] = True

  def output(self, features, ctx, name):
    del features
    return networks.stacked(ctx.trunk, self.num_classes, ctx.train, name, self.layout,
                            ctx.initializing)(ctx.inputs)


@dataclasses.dataclass(frozen=True)
class ChainHead(Head):
  """A classifier chain in label order 0..K-1: label k also sees labels < k.

  Training feeds the true earlier labels (teacher forcing; an unknown label
  is fed as 0.5); prediction decodes sequentially (a `lax.scan` over K), label
  k seeing the chain's own 0/1 decisions (score > 0.5) for labels < k. Scores
  are the sigmoids of those sequential logits.
  """

  def output(self, features, ctx, name):
    labels = None
    if ctx.labels is not None:
      labels = ctx.labels
      if ctx.mask is not None:
        labels = jnp.where(ctx.mask > 0, labels, 0.5)
      if labels.shape[-1] != self.num_classes:
        self.check(name, jnp.zeros(labels.shape[:1] + (self.num_classes,)), labels)
    return layers.LabelChain(self.num_classes, name=name)(self.select(features, ctx), labels)


@dataclasses.dataclass(frozen=True)
class PowersetHead(Head):
  """A softmax over the label sets seen in training; rare sets share an 'other' class.

  `fit` keeps the sets that occur at least `min_count` times among the train rows whose labels
  are all known (at most `max_sets`, most frequent first); the last class, 'other', stands for
  every other set. The loss is the configured row loss (softmax_ce) on the classes consistent
  with the row's known labels, spread evenly ('other' counts as consistent when some completion
  of the known labels is not a kept set). Scores are each label's marginal probability: sum over
  kept sets of p(set) * [label in set], plus p(other) times the label's rate among the folded-in
  train rows. `predict` returns the most probable kept set, or thresholded marginals when
  'other' wins.
  """
  loss: str = 'softmax_ce'
  min_count: int = 2
  max_sets: int = 256
  sets: tuple[tuple[int, ...], ...] = ()
  other_rates: tuple[float, ...] = ()

  needs_train_labels: ClassVar[bool] = True
  fits_losses: ClassVar[tuple[str, ...]] = ('softmax', 'any')
  ranges: ClassVar[Mapping[str, errors.Range]] = {
      'min_count': errors.Range(1, 2**31 - 1, integer=True),
      'max_sets': errors.Range(1, 2**20, integer=True)}
  fitted: ClassVar[tuple[str, ...]] = ('sets', 'other_rates')

  def fit(self, labels, mask=None):
    y = np.asarray(labels) > 0.5
    if mask is not None:
      y = y[(np.asarray(mask) > 0).all(-1)]
    if len(y) == 0:
      raise errors.UsageError(f'powerset head for {self.target!r}: no train row has all '
                              'labels known, so there are no label sets to learn')
    uniq, inverse, counts = np.unique(y, axis=0, return_inverse=True, return_counts=True)
    order = np.argsort(-counts, kind='stable')
    keep = [i for i in order if counts[i] >= self.min_count][:self.max_sets]
    folded = ~np.isin(inverse.reshape(-1), keep)
    rates = y[folded].mean(0) if folded.any() else y.mean(0)
    return dataclasses.replace(
        self, sets=tuple(tuple(int(v) for v in uniq[i]) for i in keep),
        other_rates=tuple(float(r) for r in rates))

  @property
  def num_sets(self) -> int:
    """Softmax width: the kept sets plus 'other'."""
    return len(self.sets) + 1

  def _table(self):
    return jnp.asarray(np.array(self.sets, np.float32).reshape(-1, self.num_classes))

  def output(self, features, ctx, name):
    if not self.other_rates:
      raise errors.UsageError(f'head {name!r} (powerset) was not fitted on the train labels')
    return layers.dense(self.num_sets, name=name)(self.select(features, ctx))

  def consistent(self, labels, mask) -> jax.Array:
    """`[batch, num_sets]` bool: the classes that agree with the row's known labels."""
    known = mask > 0
    y = jnp.where(known, labels, 0.0) > 0.5
    table = self._table() > 0.5  # [S, K]
    agree = (table[None] == y[:, None]) | ~known[:, None]  # [B, S, K]
    listed = agree.all(-1)
    completions = 2.0 ** (~known).sum(-1)  # label sets consistent with the known labels
    other = listed.sum(-1) < completions
    return jnp.concatenate([listed, other[:, None]], -1)

  def encode(self, labels) -> jax.Array:
    """Fully known label sets `[batch, K]` -> class index `[batch]` ('other' is last)."""
    return jnp.argmax(self.consistent(labels, jnp.ones_like(labels)), -1)

  def decode(self, index) -> jax.Array:
    """Class index `[batch]` -> label set `[batch, K]`; 'other' -> thresholded rates."""
    other = (jnp.asarray(self.other_rates) > 0.5).astype(jnp.float32)
    table = jnp.concatenate([self._table(), other[None]], 0)
    return table[index]

  def loss_fn(self, logits, labels, mask=None):
    mask = _ones_if_none(mask, labels)
    target = self.consistent(labels, mask).astype(logits.dtype)
    per_example = losses.LOSSES[self.loss].fn(logits, target, jnp.ones_like(logits),
                                              **dict(self.loss_options))
    return jnp.where((mask > 0).any(-1), per_example, 0.0)

  def scores(self, logits):
    p = jax.nn.softmax(logits, axis=-1)
    marg = p[:, :-1] @ self._table() + p[:, -1:] * jnp.asarray(self.other_rates)[None]
    return jnp.clip(marg, 0.0, 1.0)

  def predict(self, logits):
    best = jnp.argmax(logits, -1)
    by_set = self.decode(best)
    by_marginal = (self.scores(logits) > self.threshold).astype(jnp.float32)
    return jnp.where((best == self.num_sets - 1)[:, None], by_marginal, by_set)


@dataclasses.dataclass(frozen=True)
class RegressionHead(Head):
  """Real-valued outputs (counts on a log scale, ...); squared error by default."""
  loss: str = 'mse'
  target_kind: ClassVar[str] = 'real'
  fits_losses: ClassVar[tuple[str, ...]] = ('real',)

  def scores(self, logits):
    return logits

  def predict(self, logits):
    return logits


HEADS = {
    'softmax': SoftmaxHead,
    'sigmoid': SigmoidHead,
    'binary_softmax': BinarySoftmaxHead,
    'per_class': PerClassHead,
    'chain': ChainHead,
    'powerset': PowersetHead,
    'regression': RegressionHead,
}
