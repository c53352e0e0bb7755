"""The trunk base class and what every trunk shares: setting ranges, input key patterns,
side inputs. The trunks themselves and their registry are in trunks.py."""

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import flax.linen as nn

from mlheads import errors
from mlheads.model import layers

WIDTH = errors.Range(1, 65_536, integer=True)
WIDTHS = errors.Range(1, 65_536, integer=True, each=True)
NUMBERS = ('features', 'categories')  # field kinds that are side inputs of a row.


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


class Trunk(nn.Module):
  """Base class: `__call__(inputs, train) -> (features [batch, D], intermediates)`."""
  # False: per_class runs its K networks one after another on the CPU (model/networks.py).
  vmaps_well: ClassVar[bool] = True

  # Settings the data set fills in (`fit_to`), never set in the config.
  fitted: ClassVar[tuple[str, ...]] = ()
  # Each numeric setting's range (B26).
  ranges: ClassVar[Mapping[str, errors.Range]] = {}

  def reads(self) -> Mapping[str, tuple[str, ...]]:
    """Input key -> the data set field kinds it may have ('tokens', 'features', 'image', ...)."""
    raise NotImplementedError

  def fit_to(self, inputs: Mapping[str, Any]) -> 'Trunk':
    """The trunk with what it takes from the data set's input fields (default: nothing)."""
    del inputs
    return self

  def row_tables(self) -> dict[str, tuple[str, ...]]:
    """Input key -> path (in the trunk's parameters) of a table the trunk reads only at that
    input's token ids, and which also accepts a `layers.Lookup` there (default: none)."""
    return {}

  def fit_heads(self, heads: Mapping[str, Any]) -> 'Trunk':
    """The trunk sized to the heads that read it (default: itself); `heads` are built."""
    del heads
    return self

  def intermediates(self) -> tuple[str, ...]:
    """The names of the intermediates `__call__` returns (what a head's `source` may be)."""
    return ()


def side_blocks(module: nn.Module, inputs, keys, sizes, dim: int, dtype=None) -> list:
  """The `[batch, n]` blocks of side inputs `keys`: numbers as they are, categorical ids
  (`sizes`: key -> vocabulary) through one embedding table per input, `[batch, C * dim]`.
  In `dtype` (the LSTM's, to concatenate with it), or floating blocks as they are (bfloat16
  under model.ComputeIn) and the others as float32."""
  cast = layers.as_float if dtype is None else (lambda x: x.astype(dtype))
  sizes = dict(sizes)
  out = []
  for k in keys:
    x = inputs[k]
    if k in sizes:
      table = nn.Embed(sizes[k], dim, embedding_init=layers.embed_init, name=f'embed_{k}',
                       parent=module)
      out.append(cast(table(x).reshape(x.shape[0], -1)))
    else:
      out.append(cast(x.reshape(x.shape[0], -1)))
  return out


def category_sizes(inputs, keys) -> tuple[tuple[str, int], ...]:
  return tuple((k, int(inputs[k].vocab_size)) for k in keys if inputs[k].kind == 'categories')
