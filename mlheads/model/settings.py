"""The settings a config carries for trunks, heads and losses, and their checks.

Every head's config holds every loss' options (`loss_config`) and every head kind's own
settings (`head_config`), and `config.trunk` every trunk's settings (`trunk_config`): so the
command line reaches each of them (`--config.heads.x.loss_options.gamma=1.0`,
`--config.heads.x.min_count=5`, `--config.trunk.kind=mlp --config.trunk.hidden=(32,)`)
whatever the experiment chose. The chosen trunk, head and loss take their own; the others'
are left out (logged, or a warning when set to something other than their default), and a
setting that nobody takes is an error with a suggestion (B26, B27).
"""

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from typing import Any

from absl import logging
from ml_collections import config_dict

from mlheads import errors
from mlheads.model import heads as heads_lib
from mlheads.model import losses
from mlheads.model import trunks

# ----------------------------------------------------------------------------- heads

# Every head has these settings (`configs.head`); the rest are a head kind's own.
COMMON = ('num_classes', 'target', 'weight', 'source', 'loss', 'loss_options')


def head_fields(cls) -> list[dataclasses.Field]:
  """A head class's own settings: its fields less the common ones and the fitted ones."""
  return [f for f in dataclasses.fields(cls) if f.name not in COMMON and f.name not in cls.fitted]


def head_defaults() -> dict[str, Any]:
  """Every head kind's own settings (`none_class`, `min_count`, ...) and their defaults."""
  return {f.name: f.default for cls in heads_lib.HEADS.values() for f in head_fields(cls)}


def head_config() -> dict[str, Any]:
  """`head_defaults()` as config values, so that `--config.heads.<output>.kind=powerset
  --config.heads.<output>.min_count=5` works whatever kind the experiment chose; a `None`
  default becomes a placeholder of the type the field allows. Fresh references every call."""
  out = {}
  for cls in heads_lib.HEADS.values():
    for f in head_fields(cls):
      if f.default is None:
        out[f.name] = config_dict.placeholder(
            next(t for t in typing.get_args(f.type) if t is not type(None)))
      else:
        out[f.name] = f.default
  return out


# ----------------------------------------------------------------------------- losses

def loss_defaults() -> dict[str, Any]:
  """Every option of every loss and its default; losses that share a name share its default."""
  out = {}
  for loss in losses.LOSSES.values():
    for name, default in loss.defaults.items():
      out.setdefault(name, default)
  return out


def loss_config() -> dict[str, Any]:
  """`loss_defaults()` as config values the flags can override: a `None` default becomes a
  float placeholder and `pos_weight` a reference of any type, so that
  `--config.heads.x.loss_options.alpha=0.25` and `...pos_weight=balanced` parse. Fresh
  references on every call: two heads must never share one."""
  ranges = {k: r for loss in losses.LOSSES.values() for k, r in loss.ranges.items()}
  out = {}
  for name, default in loss_defaults().items():
    if isinstance(ranges.get(name), losses.PosWeight):
      out[name] = config_dict.FieldReference(default, field_type=object)
    elif default is None:
      out[name] = config_dict.placeholder(float)
    else:
      out[name] = default
  return out


# ----------------------------------------------------------------------------- trunks

def trunk_fields(cls: type[trunks.Trunk]) -> dict[str, Any]:
  """A trunk class's settings and their defaults (Flax's own fields and fitted ones left out)."""
  return {f.name: f.default for f in dataclasses.fields(cls)
          if f.init and f.name not in ('parent', 'name') and f.name not in cls.fitted}


def trunk_config(kind: str, **settings) -> dict[str, Any]:
  """`config.trunk` for trunk `kind` ('' = chosen by the data set's inputs): every trunk's
  settings, this kind's defaults first, then `settings`; so `--config.trunk.kind=mlp
  --config.trunk.hidden=(32,)` works on any experiment. An unknown setting is an error (a
  typo in an experiment file)."""
  out = {}
  for cls in ([trunks.get(kind)] if kind else []) + list(trunks.TRUNKS.values()):
    for k, v in trunk_fields(cls).items():
      out.setdefault(k, v)
  unknown = sorted(set(settings) - set(out))
  if unknown:
    raise errors.UsageError(f'trunk {kind!r}: unknown setting {unknown[0]!r}; known: '
                            f'{sorted(out)}')
  return {'kind': kind, **out, **settings}


def check_trunk(settings: Mapping[str, Any]) -> None:
  """Every setting in `config.trunk` (less `kind`) is some trunk's, within its range (B26)."""
  every = {k for c in trunks.TRUNKS.values() for k in trunk_fields(c)}
  for key in settings:
    if key not in every:
      hint = difflib.get_close_matches(key, sorted(every), n=1)
      raise errors.UsageError(f'unknown trunk setting {key!r} (--config.trunk.{key})'
                              + (f'; did you mean {hint[0]!r}?' if hint else
                                 f'; known: {sorted(every)}'))
    value = settings[key]
    cls = next(c for c in trunks.TRUNKS.values() if key in trunk_fields(c))
    want = {f.name: f.type for f in dataclasses.fields(cls)}[key]
    item = typing.get_args(want)[0] if typing.get_args(want) else None
    if want is str and not isinstance(value, str) or item in (str, int) and not (
        isinstance(value, (tuple, list)) and all(isinstance(v, item) and not isinstance(v, bool)
                                                 for v in value)):
      what = 'a name' if want is str else f'a tuple of {"names" if item is str else "integers"}'
      raise errors.UsageError(f'--config.trunk.{key} must be {what}, got {value!r}')
    for c in trunks.TRUNKS.values():
      if key in c.ranges:
        c.ranges[key].check(f'--config.trunk.{key}', value)
        break


def trunk_settings_for(kind: str, settings: Mapping[str, Any], quiet: bool = False
                 ) -> dict[str, Any]:
  """The settings trunk `kind` takes; those of other trunks are left out (and logged)."""
  mine = trunk_fields(trunks.get(kind))
  unused = sorted(set(settings) - set(mine))
  if unused and not quiet:
    logging.info('trunk %s does not use %s (settings of other trunks)', kind, ', '.join(unused))
  return {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items() if k in mine}


# ----------------------------------------------------------------------------- checks

def check_unused(name: str, kind: str, what: str, given: Mapping[str, Any],
                 defaults: Mapping[str, Any], known: set[str],
                 takers: Mapping[str, list[str]] | None = None, choose: str = '') -> None:
  """Settings in `given` that the chosen head or loss does not take: an error if no head or
  loss takes them (a typo), a warning if they differ from their defaults (they do nothing),
  naming who does take them (`takers`: setting -> head kinds or losses) and the flag that
  chooses one (`choose`)."""
  unknown = sorted(set(given) - set(defaults) - known)
  if unknown:
    hint = difflib.get_close_matches(unknown[0], sorted(set(defaults) | known), n=1)
    raise errors.UsageError(
        f'head {name!r}: unknown {what} {unknown[0]!r}' + (f'; did you mean {hint[0]!r}?'
                                                           if hint else
                                                           f'; known: {sorted(known)}'))
  unused = [k for k in sorted(given) if k not in known and given[k] != defaults[k]]
  for k in unused:
    owners = (takers or {}).get(k)
    whose = (f' (it is an option of {", ".join(owners)}: {choose}=NAME)' if owners and choose
             else '')
    logging.warning('head %r (%s) does not use %s %s=%r%s; ignored', name, kind, what, k,
                    given[k], whose)
