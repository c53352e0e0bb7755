"""Which data set inputs a trunk's input settings name: key patterns.

A setting is matched against the data set's inputs of the kinds the trunk reads: `'*'` is
every one of them (an MLP on any table), `''` the only one (the text trunk's token input), a
plain name that very input. So any trunk runs on any data set that has inputs of its kinds,
with no setting changed: `--config.trunk.kind=mlp` on a table of numbers.
"""

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any

from mlheads import errors


def match(trunk: str, setting: str, patterns: Sequence[str], inputs: Mapping[str, Any],
          kinds: Sequence[str]) -> tuple[str, ...]:
  """The input keys `patterns` name, in the data set's order.

  `'*'` (any glob) matches the inputs of `kinds` (it may match none); a plain name must be an
  input of the data set, whatever its kind (`reads` then checks the kind, naming both).
  """
  keys = []
  for p in patterns:
    if any(c in p for c in '*?['):
      keys += [k for k, f in inputs.items() if f.kind in kinds and fnmatch.fnmatchcase(k, p)]
    elif p not in inputs:
      raise errors.UsageError(f'trunk {trunk!r} reads input {p!r} (--config.trunk.{setting}), '
                              f'which the data set does not have; its inputs are '
                              f'{sorted(inputs)}')
    else:
      keys.append(p)
  return tuple(dict.fromkeys(keys))


def only(trunk: str, setting: str, key: str, inputs: Mapping[str, Any], kind: str) -> str:
  """`key`, or for '' the data set's only input of `kind` (an error naming the candidates)."""
  if key:
    return key
  found = [k for k, f in inputs.items() if f.kind == kind]
  if len(found) != 1:
    raise errors.UsageError(
        f'trunk {trunk!r} reads one {kind} input, and the data set has '
        f'{"none" if not found else found}; its inputs are {sorted(inputs)}'
        + ('' if not found else f' (choose one with --config.trunk.{setting}=KEY)'))
  return found[0]
