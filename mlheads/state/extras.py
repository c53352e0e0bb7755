"""What a checkpoint carries besides arrays: enough to rebuild the run without its data.

`make(...)` is what training saves with every checkpoint (the config, the fitted
heads, the data set's fields and metadata (tokenizer, scaling), the thresholds
tuned on validation, the epoch); `read(...)` turns it back into objects for
predict. Plain JSON both ways (B25: nothing is unpickled).
"""

import dataclasses
import json

import ml_collections

from mlheads import errors
from mlheads.data import base
from mlheads.model import heads as heads_lib


@dataclasses.dataclass
class RunRecord:
  """One checkpoint step's extras, rebuilt as objects."""
  step: int
  how: str  # why this step: 'best by <metric>', 'latest', '--step'
  config: ml_collections.ConfigDict
  dataset: base.Dataset  # no splits: fields and metadata only
  heads: dict[str, heads_lib.Head]
  thresholds: dict  # {output: {'per_class': [K], 'global': t}}, possibly empty


def make(config, ds: base.Dataset, heads, thresholds: dict, epoch: int) -> dict:
  """The extras of a checkpoint (strict JSON)."""
  return {
      'config': json.loads(config.to_json_best_effort()),
      'heads': {name: heads_lib.to_json(h) for name, h in heads.items()},
      'data': {'name': ds.name, 'meta': dict(ds.meta),
               'inputs': {k: dataclasses.asdict(f) for k, f in ds.inputs.items()},
               'targets': {k: dataclasses.asdict(f) for k, f in ds.targets.items()}},
      'thresholds': thresholds,
      'epoch': epoch,
  }


def _tuples(x):
  """JSON lists back to tuples (config and fields were tuples when saved)."""
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


def _field(d: dict) -> base.Field:
  d = _tuples(d)
  return base.Field(**{**d, 'shape': tuple(d['shape']), 'names': tuple(d.get('names', ()))})


def read(extras: dict, step: int, how: str) -> RunRecord:
  """Rebuilds the run's config, data set fields and fitted heads from a checkpoint's extras."""
  try:
    data = extras['data']
    ds = base.Dataset(name=data['name'], splits={}, meta=data['meta'],
                      inputs={k: _field(f) for k, f in data['inputs'].items()},
                      targets={k: _field(f) for k, f in data['targets'].items()})
    heads = {name: heads_lib.from_json(h) for name, h in extras['heads'].items()}
    config = ml_collections.ConfigDict(_tuples(extras['config']))
  except (KeyError, TypeError) as e:
    raise errors.UsageError(f'checkpoint step {step}: its extras lack what predict needs '
                            f'({type(e).__name__}: {e}); was it written by an older '
                            'mlheads?') from None
  return RunRecord(step=step, how=how, config=config, dataset=ds, heads=heads,
                   thresholds=extras.get('thresholds') or {})
