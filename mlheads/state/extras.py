"""What a checkpoint carries besides arrays: enough to rebuild the run without its data.

`make(...)` is what training saves with every checkpoint (the config, the fitted
heads, the data set's fields and metadata (tokenizer, scaling), the thresholds
tuned and the calibration fitted on validation, the epoch); `read(...)` turns it back into objects for
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
  thresholds: dict  # {output: {'per_class': [K]}}, possibly empty
  calibration: dict = dataclasses.field(default_factory=dict)  # {output: {'method', 'a', 'b'}}
  ensemble: object = None  # mlheads.ensemble.Ensemble blended with this step, if any


def head_to_json(head: heads_lib.Head) -> dict:
  """A fitted head as JSON, so predict rebuilds it exactly (powerset's sets included)."""
  kind = next(k for k, cls in heads_lib.HEADS.items() if cls is type(head))
  return {'kind': kind, **json.loads(json.dumps(dataclasses.asdict(head)))}


def head_from_json(d: dict) -> heads_lib.Head:
  d = dict(d)
  cls = heads_lib.HEADS[d.pop('kind')]
  return cls(**_tuples(d))


def make(config, ds: base.Dataset, heads, thresholds: dict, epoch: int,
         calibration: dict | None = None, best_metric_curve=()) -> dict:
  """The extras of a checkpoint (strict JSON). `calibration`: {output: {'method', 'a': [K],
  'b': [K]}} fitted on validation (calibration.py), applied by predict. `best_metric_curve`:
  `[[epoch, value], ...]` of the best metric on validation so far, from which early stopping
  resumes exactly."""
  return {
      'config': json.loads(config.to_json_best_effort()),
      'heads': {name: head_to_json(h) for name, h in heads.items()},
      'data': {'name': ds.name, 'meta': dict(ds.meta), 'fingerprint': dict(ds.fingerprint),
               'inputs': {k: dataclasses.asdict(f) for k, f in ds.inputs.items()},
               'targets': {k: dataclasses.asdict(f) for k, f in ds.targets.items()}},
      'thresholds': thresholds,
      'calibration': calibration or {},
      'epoch': epoch,
      'best_metric_curve': [[int(e), v] for e, v in best_metric_curve],
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
    heads = {name: head_from_json(h) for name, h in extras['heads'].items()}
    config = ml_collections.ConfigDict(_tuples(extras['config']))
  except (KeyError, TypeError) as e:
    raise errors.UsageError(f'checkpoint step {step}: its extras lack what predict needs '
                            f'({type(e).__name__}: {e}); was it written by an older '
                            'mlheads?') from None
  return RunRecord(step=step, how=how, config=config, dataset=ds, heads=heads,
                   thresholds=extras.get('thresholds') or {},
                   calibration=extras.get('calibration') or {})
