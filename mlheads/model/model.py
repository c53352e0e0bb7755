"""A model is a trunk plus named heads: dict of inputs -> dict of logits.

Building one takes two steps, so that every name in the config is checked
before any data is read: `resolve(config)` looks up the trunk, each head's
kind, its loss and the loss' options in their registries (the one place each
name is checked, B14/B15); `ModelSpec.build(ds)` then sizes the trunk and the
heads from the data set's fields and fits the heads that learn from the train
labels (powerset).
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

from clu import parameter_overview as clu_overview
import flax.linen as nn
import jax
import numpy as np

from mlheads import errors
from mlheads.model import heads as heads_lib
from mlheads.model import losses
from mlheads.model import trunks


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


@dataclasses.dataclass(frozen=True)
class HeadSpec:
  """One output's head, its names resolved: the class and its checked settings."""
  name: str
  kind: str
  cls: type[heads_lib.Head]
  settings: Mapping[str, Any]  # dataclass fields of `cls` (target, weight, loss, ...)
  num_classes: int  # 0: the target's width
  loss_options: tuple[tuple[str, Any], ...]

  def build(self, target_field, train_labels=None, train_mask=None) -> heads_lib.Head:
    """The head sized to its target field (and fitted on the train labels if it learns them)."""
    width = int(target_field.shape[-1])
    if self.num_classes and self.num_classes != width:
      raise errors.UsageError(f'head {self.name!r}: num_classes is {self.num_classes} but target '
                              f'{self.settings["target"]!r} has {width} columns')
    if self.cls.target_kind != target_field.kind:
      raise errors.UsageError(f'head {self.name!r} ({self.kind}) needs {self.cls.target_kind} '
                              f'targets; {self.settings["target"]!r} is {target_field.kind}')
    sized = {'max_positives': target_field.sparse or width} if 'max_positives' in {
        f.name for f in dataclasses.fields(self.cls)} else {}
    head = self.cls(num_classes=width, loss_options=self.loss_options,
                    **{**self.settings, **sized})
    if self.cls.needs_train_labels:
      if train_labels is None:
        raise errors.UsageError(f'head {self.name!r} ({self.kind}) needs the train split\'s '
                                f'{head.target!r} labels to be built')
      head = head.fit(np.asarray(train_labels),
                      None if train_mask is None else np.asarray(train_mask))
    return head


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """The config's trunk and heads with every name looked up; `build` sizes them to data."""
  trunk_cls: type[trunks.Trunk]
  trunk_settings: Mapping[str, Any]
  heads: Mapping[str, HeadSpec]

  @property
  def target_kinds(self) -> dict[str, str]:
    """Output name -> 'binary' or 'real'."""
    return {name: h.cls.target_kind for name, h in self.heads.items()}

  def build(self, ds, train_arrays: Mapping[str, np.ndarray] | None = None,
            fitted_heads: Mapping[str, heads_lib.Head] | None = None
            ) -> tuple[Model, dict[str, heads_lib.Head]]:
    """The model for data set `ds`'s fields.

    train_arrays: the train split (`{key: [n, ...]}`), for heads fitted on its
      labels (powerset).
    fitted_heads: heads restored from a checkpoint (predict), used as they are.
    """
    heads, split = dict(fitted_heads or {}), train_arrays or {}
    for name, spec in self.heads.items():
      if name in heads:
        continue
      target = spec.settings['target']
      if target not in ds.targets:
        raise errors.UsageError(f'head {name!r}: target {target!r} is not in data set '
                                f'{ds.name}; its targets are {sorted(ds.targets)}')
      field = ds.targets[target]
      # A sparse target becomes [n, K] here only for the heads that learn from it (powerset).
      labels, mask = (field.densify(split, target) if spec.cls.needs_train_labels and target in split
                      else (None, None))
      heads[name] = spec.build(field, labels, mask)
    trunk = trunks.build(self.trunk_cls, self.trunk_settings, ds.inputs)
    return Model(trunk=trunk, heads=heads), heads


def resolve_head(name: str, head_config) -> HeadSpec:
  """Looks up `config.heads.<name>`: its kind, its loss and the loss' options (B14/B15)."""
  cfg = dict(head_config)
  kind = cfg.pop('kind')
  if kind not in heads_lib.HEADS:
    raise errors.UsageError(f'head {name!r}: unknown kind {kind!r}; known: '
                            f'{sorted(heads_lib.HEADS)}')
  cls = heads_lib.HEADS[kind]
  num_classes = cfg.pop('num_classes', 0) or 0
  options = dict(cfg.pop('loss_options', {}) or {})
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(cfg) - (set(fields) - {'max_positives'}))  # that one is the data's
  if unknown:
    raise errors.UsageError(f'head {name!r} ({kind}): unknown settings {unknown}; '
                            f'known: {sorted(set(fields) - {"num_classes", "loss_options"})}')
  cfg = {k: v for k, v in cfg.items() if v is not None and not (k == 'loss' and v == '')}
  loss_name = cfg.get('loss', fields['loss'].default)
  try:
    loss = losses.get(loss_name)
  except errors.UsageError as e:
    raise errors.UsageError(f'head {name!r} ({kind}): {e}') from None
  if loss.targets != cls.target_kind:
    allowed = [n for n, l in losses.LOSSES.items() if l.targets == cls.target_kind]
    raise errors.UsageError(f'head {name!r} ({kind}): loss {loss_name!r} does not fit '
                            f'{cls.target_kind} targets; use one of {allowed}')
  bad = sorted(set(options) - set(loss.options))
  if bad:
    raise errors.UsageError(f'head {name!r}: loss {loss_name!r} has no options {bad}; '
                            f'its options are {list(loss.options)}')
  cls.check_settings(name, cfg, loss_name)
  if kind == 'per_class' and cfg.get('source', 'features') != 'features':
    raise errors.UsageError(f'per_class head {name!r}: source {cfg["source"]!r} is '
                            'meaningless; each class has its own whole network')
  return HeadSpec(name=name, kind=kind, cls=cls, settings=cfg, num_classes=int(num_classes),
                  loss_options=tuple(sorted(options.items())))


def resolve(config) -> ModelSpec:
  """Looks up every name in `config.trunk` and `config.heads`; raises UsageError on the first
  unknown one, listing the known names, before any data is read."""
  settings = dict(config.trunk)
  trunk_cls = trunks.get(settings.pop('kind'))
  return ModelSpec(trunk_cls=trunk_cls, trunk_settings=settings,
                   heads={name: resolve_head(name, h) for name, h in config.heads.items()})


def build_model(config, ds, train_arrays=None, fitted_heads=None
                ) -> tuple[Model, dict[str, heads_lib.Head]]:
  """`resolve(config).build(ds, ...)`: the model and heads the config names, sized to `ds`."""
  return resolve(config).build(ds, train_arrays, fitted_heads)


def parameter_overview(params) -> tuple[str, int]:
  """clu's table of parameter paths, shapes, dtypes and sizes, and the total count."""
  return (clu_overview.get_parameter_overview(params, include_stats=False),
          clu_overview.count_parameters(params))
