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

from absl import logging
from clu import parameter_overview as clu_overview
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlheads import errors
from mlheads.model import heads as heads_lib
from mlheads.model import losses
from mlheads.model import networks
from mlheads.model import settings as settings_lib
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
                              train=train, initializing=self.is_initializing(),
                              mask=None if masks is None else masks.get(head.target))
      out[name] = head.output(features, ctx, name=name)
    return out

  def reads(self) -> tuple[frozenset[str], frozenset[str]]:
    """(input keys, target keys) a training step reads: the trunk's inputs (a head that reads
    the inputs runs copies of the trunk on them: per_class) and the heads' targets. A batch
    needs no other field (`Dataset.only`)."""
    return frozenset(self.trunk.reads()), frozenset(h.target for h in self.heads.values())

  def row_tables(self) -> dict[str, tuple[str, ...]]:
    """Input key -> parameter path of each table the model reads only at that input's ids
    (the trunk's, unless some head reads the raw inputs itself); see `layers.Lookup`."""
    if any(h.reads_inputs for h in self.heads.values()) or not any(
        h.needs_features for h in self.heads.values()):
      return {}
    return {k: ('trunk', *p) for k, p in self.trunk.row_tables().items()}


@dataclasses.dataclass(frozen=True)
class HeadSpec:
  """One output's head, its names resolved: the class and its checked settings."""
  name: str
  kind: str
  cls: type[heads_lib.Head]
  settings: Mapping[str, Any]  # dataclass fields of `cls` (target, weight, loss, ...)
  num_classes: int  # 0: the target's width
  loss_options: tuple[tuple[str, Any], ...]

  def check(self, targets: Mapping[str, Any], trunk: trunks.Trunk | None,
            trunk_from_data: bool = False) -> None:
    """Its target against the data set's target fields (a width of 0 is not known yet) and
    its source and `add` against the trunk's intermediates: before any data is read (B26).
    An `add` that a trunk chosen by the data (`trunk_from_data`) does not give is left out
    (`adds`): the bag's wide path on a table without text, whose trunk is an MLP."""
    target = self.settings['target']
    if target not in targets:
      raise errors.UsageError(f'head {self.name!r}: target {target!r} is not in the data set; '
                              f'its targets are {sorted(targets)} '
                              f'(--config.heads.{self.name}.target)')
    field = targets[target]
    width = int(field.shape[-1])
    if self.num_classes and width and self.num_classes != width:
      raise errors.UsageError(f'head {self.name!r}: num_classes is {self.num_classes} but target '
                              f'{target!r} has {width} columns')
    if self.cls.target_kind != field.kind:
      raise errors.UsageError(f'head {self.name!r} ({self.kind}) needs {self.cls.target_kind} '
                              f'targets; {target!r} is {field.kind}')
    source = self.settings.get('source', 'features')
    if trunk is not None and source != 'features' and source not in trunk.intermediates():
      raise errors.UsageError(
          f'head {self.name!r}: source {source!r} is not an output of trunk '
          f'{type(trunk).__name__}; it gives \'features\' and {list(trunk.intermediates())} '
          f'(--config.heads.{self.name}.source)')
    # A trunk chosen by the data that adds nothing to any head (an MLP) leaves `add` out.
    lenient = trunk_from_data and type(trunk).fit_heads is trunks.Trunk.fit_heads
    if trunk is not None and not lenient and self.adds(trunk) != self.settings.get('add', ''):
      raise errors.UsageError(
          f'head {self.name!r}: add {self.settings["add"]!r} is not an output of trunk '
          f'{type(trunk).__name__}; it gives {list(trunk.intermediates())} '
          f'(--config.heads.{self.name}.add)')

  def adds(self, trunk: trunks.Trunk) -> str:
    """The trunk intermediate this head adds to its logits: its `add` if the trunk gives it."""
    add = self.settings.get('add', '')
    return add if add in trunk.intermediates() else ''

  def build(self, target_field, train_labels=None, train_mask=None) -> heads_lib.Head:
    """The head sized to its target field, fitted on the train labels where it learns from
    them (powerset) or weighs by them (`pos_weight='balanced'`)."""
    self.check({self.settings['target']: target_field}, None)
    width = int(target_field.shape[-1])
    options = dict(self.loss_options)
    if options.get('pos_weight') == 'balanced':
      if train_labels is None:
        raise errors.UsageError(f"head {self.name!r}: pos_weight='balanced' needs the train "
                                f"split's {self.settings['target']!r} labels")
      options['pos_weight'] = losses.balanced_pos_weight(train_labels, train_mask)
      logging.info('head %s: balanced pos_weight per class %s', self.name,
                   [round(w, 3) for w in options['pos_weight']])
    elif isinstance(options.get('pos_weight'), tuple) and len(options['pos_weight']) != width:
      raise errors.UsageError(f'head {self.name!r}: pos_weight has '
                              f'{len(options["pos_weight"])} values for {width} classes')
    # A sparse target's width P sizes the sampled sigmoid head's positives (sampling.py).
    sized = {'max_positives': target_field.sparse or width} if 'max_positives' in {
        f.name for f in dataclasses.fields(self.cls)} else {}
    head = self.cls(num_classes=width, loss_options=tuple(sorted(options.items())),
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
  trunk_kind: str  # '' = chosen by the data set's inputs (trunks.default_kind)
  trunk_settings: Mapping[str, Any]
  heads: Mapping[str, HeadSpec]

  @property
  def target_kinds(self) -> dict[str, str]:
    """Output name -> 'binary' or 'real'."""
    return {name: h.cls.target_kind for name, h in self.heads.items()}

  def train_keys(self, ds) -> list[str]:
    """The train split's record keys that `build` needs (the labels and masks of heads
    fitted on them, e.g. powerset, or weighing by them, `pos_weight='balanced'`); [] for
    most models, which then read no data to build."""
    keys = []
    for h in self.heads.values():
      target = h.settings['target']
      balanced = dict(h.loss_options).get('pos_weight') == 'balanced'
      if (h.cls.needs_train_labels or balanced) and target in ds.targets:
        keys += [target] + ([f'{target}_mask'] if ds.targets[target].has_mask else [])
    return sorted(set(keys))

  def trunk(self, inputs: Mapping[str, Any], quiet: bool = False) -> trunks.Trunk:
    """The trunk fitted to the data set's input fields (its kind chosen by them if unset)."""
    kind = self.trunk_kind or trunks.default_kind(inputs)
    own = settings_lib.trunk_settings_for(kind, self.trunk_settings, quiet)
    return trunks.build(trunks.get(kind), own, inputs, quiet)

  def check(self, ds, quiet: bool = True) -> trunks.Trunk:
    """Every input, target and source name against data set `ds`'s fields, without data: the
    data set's schema is enough (`mlheads.data.schema`). Returns the fitted trunk."""
    trunk = self.trunk(ds.inputs, quiet)
    for spec in self.heads.values():
      spec.check(ds.targets, trunk, trunk_from_data=not self.trunk_kind)
    return trunk

  def build(self, ds, train_arrays: Mapping[str, np.ndarray] | None = None,
            fitted_heads: Mapping[str, heads_lib.Head] | None = None
            ) -> tuple[Model, dict[str, heads_lib.Head]]:
    """The model for data set `ds`'s fields.

    train_arrays: the train split (`{key: [n, ...]}`), for heads fitted on its
      labels (powerset, balanced pos_weight).
    fitted_heads: heads restored from a checkpoint (predict), used as they are.
    """
    trunk = self.check(ds, quiet=False)
    heads, split = dict(fitted_heads or {}), train_arrays or {}
    for name, spec in self.heads.items():
      if name not in heads:
        target = spec.settings['target']
        field = ds.targets[target]
        # A sparse target becomes [n, K] here only for the heads that learn from it (powerset)
        # or weigh by it (balanced pos_weight).
        needs = (spec.cls.needs_train_labels
                 or dict(spec.loss_options).get('pos_weight') == 'balanced')
        labels, mask = (field.densify(split, target) if needs and target in split
                        else (None, None))
        heads[name] = spec.build(field, labels, mask)
        if heads[name].add != spec.adds(trunk):
          logging.info('head %s: trunk %s gives no %r to add; left out', name,
                       type(trunk).__name__, heads[name].add)
          heads[name] = dataclasses.replace(heads[name], add='')
    trunk = trunk.fit_heads(heads)
    return Model(trunk=trunk, heads=heads), heads


@dataclasses.dataclass(frozen=True)
class ComputeIn:
  """`model.apply` computing in `dtype` with float32 parameters (mixed precision, as jmp does).

  Floating parameters, inputs and label/mask arguments are cast to `dtype` on the way in,
  so every layer computes in it without each declaring a dtype; the logits come back as
  float32, so the losses (and the metrics) are float32. Gradients flow through the casts
  back to the float32 parameters, so the optimizer state stays float32. float32 is `apply`
  itself. Frozen and hashable: it sits in the TrainState as a static field.
  """
  apply_fn: Any
  dtype: str = 'float32'

  def __call__(self, variables, *args, **kwargs):
    if self.dtype == 'float32':
      return self.apply_fn(variables, *args, **kwargs)
    dtype = jnp.dtype(self.dtype)
    cast = lambda x: (x.astype(dtype) if hasattr(x, 'dtype') and jnp.issubdtype(x.dtype,
                                                                               jnp.floating)
                      else x)
    out = self.apply_fn(jax.tree.map(cast, variables), *jax.tree.map(cast, args),
                        **{k: jax.tree.map(cast, v) for k, v in kwargs.items()})
    return jax.tree.map(lambda x: x.astype(jnp.float32), out)


def resolve_head(name: str, head_config) -> HeadSpec:
  """Looks up `config.heads.<name>`: its kind, its loss and the loss' options, and checks their
  values (B14/B15/B26): the loss must fit the head (docs/heads.md), each setting its range."""
  # A ConfigDict resolves the references configs.head puts in (a plain dict would not).
  cfg = ml_collections.ConfigDict(dict(head_config)).to_dict()
  kind = cfg.pop('kind')
  if kind not in heads_lib.HEADS:
    raise errors.UsageError(f'head {name!r}: unknown kind {kind!r}; known: '
                            f'{sorted(heads_lib.HEADS)}')
  cls = heads_lib.HEADS[kind]
  num_classes = cfg.pop('num_classes', 0) or 0
  options = dict(cfg.pop('loss_options', {}) or {})
  fields = {f.name: f for f in dataclasses.fields(cls)}
  own = {f.name for f in settings_lib.head_fields(cls)}
  for key, value in cfg.items():  # every head kind's ranges: a bad value is bad for any kind.
    for other in heads_lib.HEADS.values():
      if key in other.ranges and value is not None:
        other.ranges[key].check(f'--config.heads.{name}.{key}', value)
        break
  settings_lib.check_unused(
      name, kind, 'setting', {k: v for k, v in cfg.items() if k not in settings_lib.COMMON},
      settings_lib.head_defaults(), own,
      {k: [n for n, c in heads_lib.HEADS.items()
           if k in {f.name for f in settings_lib.head_fields(c)}] for k in cfg},
      f'--config.heads.{name}.kind')
  cfg = {k: v for k, v in cfg.items()
         if (k in settings_lib.COMMON or k in own) and v is not None
         and not (k == 'loss' and v == '')}
  loss_name = cfg.get('loss', fields['loss'].default)
  try:
    loss = losses.get(loss_name)
  except errors.UsageError as e:
    raise errors.UsageError(f'head {name!r} ({kind}): {e}') from None
  if loss.reads not in cls.fits_losses:
    allowed = [n for n, l in losses.LOSSES.items() if l.reads in cls.fits_losses]
    what = {'per_label': "a per-label loss (it reads each logit as that label's log-odds)",
            'softmax': 'a softmax loss (it reads a row of logits as one softmax)',
            'real': 'a regression loss', 'any': 'a ranking loss'}[loss.reads]
    raise errors.UsageError(f'head {name!r} ({kind}): loss {loss_name!r} is {what} and does '
                            f'not fit a {kind} head; use one of {allowed}')
  for key, value in options.items():
    for other in losses.LOSSES.values():
      if key in other.ranges and value is not None:
        other.ranges[key].check(f'--config.heads.{name}.loss_options.{key}', value)
        break
  settings_lib.check_unused(
      name, f'{kind}, loss {loss_name}', 'loss option', options, settings_lib.loss_defaults(),
      set(loss.options), {k: [n for n, l in losses.LOSSES.items() if k in l.options]
                          for k in options}, f'--config.heads.{name}.loss')
  chosen = {k: (tuple(v) if isinstance(v, list) else v) for k, v in options.items()
            if k in loss.options and v is not None}
  cls.check_settings(name, {**cfg, 'loss_options': chosen}, loss_name)
  if cfg.get('add') and not cls.takes_add():
    raise errors.UsageError(f'head {name!r} ({kind}): add={cfg["add"]!r} adds a trunk output '
                            'to the logits of a one-Dense head (e.g. sigmoid); this head has its '
                            'own output layer')
  if kind == 'per_class' and cfg.get('source', 'features') != 'features':
    raise errors.UsageError(f'per_class head {name!r}: source {cfg["source"]!r} is '
                            'meaningless; each class has its own whole network')
  if kind == 'per_class' and cfg.get('layout') not in (None,) + networks.LAYOUTS:
    raise errors.UsageError(f'per_class head {name!r}: layout {cfg["layout"]!r}; known: '
                            f'{list(networks.LAYOUTS)} (or unset: chosen by the trunk)')
  return HeadSpec(name=name, kind=kind, cls=cls, settings=cfg, num_classes=int(num_classes),
                  loss_options=tuple(sorted(chosen.items())))


def resolve(config) -> ModelSpec:
  """Looks up every name in `config.trunk` and `config.heads` and checks every value; raises
  UsageError on the first bad one, listing the known names, before any data is read."""
  trunk_settings = dict(config.trunk)
  kind = trunk_settings.pop('kind')
  if kind:
    trunks.get(kind)
  settings_lib.check_trunk(trunk_settings)
  return ModelSpec(trunk_kind=kind, trunk_settings=trunk_settings,
                   heads={name: resolve_head(name, h) for name, h in config.heads.items()})


def build_model(config, ds, train_arrays=None, fitted_heads=None
                ) -> tuple[Model, dict[str, heads_lib.Head]]:
  """`resolve(config).build(ds, ...)`: the model and heads the config names, sized to `ds`."""
  return resolve(config).build(ds, train_arrays, fitted_heads)


def parameter_overview(params) -> tuple[str, int]:
  """clu's table of parameter paths, shapes, dtypes and sizes, and the total count."""
  return (clu_overview.get_parameter_overview(params, include_stats=False),
          clu_overview.count_parameters(params))
