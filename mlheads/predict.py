"""Predictions of a trained run on new rows.

  ./launch.sh predict --workdir=RUN --input=FILE.csv --output=OUT.csv
      [--step=N] [--batch_size=B] [--keep=all|none|col,col]

Reads a checkpoint's extras (config, fitted heads, the data set's fields and
metadata, thresholds tuned on validation), rebuilds the model from them (no
training data needed), restores its parameters, encodes the input rows with
the data set's own `encode` (the run's tokenizer and scaling) and writes one
CSV row per input row: the kept input columns, then per output
`<output>:<class>` probabilities and `<output>:labels` (the classes whose
probability exceeds its tuned threshold, joined by '|'), or for a regression
output `<output>:<column>` values. docs/predict.md has the details.

Bad input is one line on stderr naming the file, the line, the column and the
value, exit code 2, and no output file (it is written to a temporary file and
renamed at the end).
"""

import csv
import dataclasses
import json
import os
import tempfile

from absl import flags
from absl import logging
import jax
import ml_collections
import numpy as np
import pandas as pd

from mlheads import checkpoints
from mlheads import errors
from mlheads import evaluation
from mlheads import heads as heads_lib
from mlheads import train
from mlheads.data import base
from mlheads.data import csv_data
import mlheads.data as data_lib

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defined only when run as a command, so library users and tests can import
  several CLI modules that share flag names (--workdir, --output, ...)."""
  flags.DEFINE_string('workdir', None, 'A run folder (finished or still running).')
  flags.DEFINE_string('input', None, 'Rows to predict: .csv, .tsv or .jsonl.')
  flags.DEFINE_string('output', None, 'CSV file to write.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the best, else the latest).')
  flags.DEFINE_integer('batch_size', None, 'Rows per batch (default: the run\'s '
                       'eval_batch_size).')
  flags.DEFINE_string('keep', 'all', "Input columns copied to the output: 'all', 'none' "
                      'or a comma-separated list.')


LABEL_SEPARATOR = '|'


@dataclasses.dataclass
class Checkpoint:
  """What predict reads from a run: one step's extras, rebuilt as objects."""
  step: int
  how: str  # why this step: 'best by <metric>', 'latest', '--step'
  config: ml_collections.ConfigDict
  dataset: base.Dataset  # no splits: fields and metadata only
  heads: dict[str, heads_lib.Head]
  thresholds: dict  # {output: {'per_class': [K], 'global': t}}, possibly empty


def _tuples(x):
  """JSON lists back to tuples (config and fields were tuples when saved)."""
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


def _field(d: dict) -> base.Field:
  d = _tuples(d)
  return base.Field(**{**d, 'shape': tuple(d['shape']), 'names': tuple(d.get('names', ()))})


def from_extras(extras: dict, step: int, how: str) -> Checkpoint:
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
  return Checkpoint(step=step, how=how, config=config, dataset=ds, heads=heads,
                    thresholds=extras.get('thresholds') or {})


def choose_checkpoint(workdir: str, step: int | None = None) -> Checkpoint:
  """`step`'s extras; by default the best step by the run's own best metric, else the latest."""
  if not os.path.isdir(workdir):
    raise errors.UsageError(f'--workdir={workdir}: no such directory')
  with checkpoints.Checkpointer(workdir) as ckpt:
    if ckpt.latest_step() is None:
      raise errors.UsageError(f'--workdir={workdir}: no committed checkpoint in '
                              f'{ckpt.directory} (a run commits one at the end of each epoch)')
    if step is not None:
      extras, step = ckpt.read_extras(step)
      return from_extras(extras, step, '--step')
    extras, latest = ckpt.read_extras()
  chosen = from_extras(extras, latest, 'latest')
  metric, mode = evaluation.best_metric(chosen.config, chosen.heads)
  with checkpoints.Checkpointer(workdir, best_metric=metric, best_mode=mode) as ckpt:
    best = ckpt.best_step()
    if best is None:
      return chosen
    if best == latest:
      chosen.how = f'best by validation {metric}'
      return chosen
    try:
      extras, best = ckpt.read_extras(best)
    except checkpoints.CheckpointError as e:
      logging.warning('best step %d is unreadable (%s); using the latest, %d', best, e, latest)
      return chosen
  return from_extras(extras, best, f'best by validation {metric}')


def read_table(path: str) -> pd.DataFrame:
  """The input file's cells as read (strings, or JSON values), indexed by line number."""
  return csv_data.frame(*csv_data.read_rows(path))


def encode(ckpt: Checkpoint, table: pd.DataFrame, source: str) -> tuple[dict, int]:
  """The rows as the run's model inputs, through the data set's own encoder."""
  name = ckpt.dataset.name
  if name not in data_lib.ENCODERS:
    raise errors.UsageError(f'data set {name}: predict cannot encode raw rows for it; it can '
                            f'for {sorted(data_lib.ENCODERS)}')
  inputs, truncated = data_lib.ENCODERS[name](table, dict(ckpt.dataset.meta), source)
  for key, f in ckpt.dataset.inputs.items():
    got = inputs.get(key)
    if got is None or got.shape[1:] != f.shape:  # the encoder and the saved fields disagree
      raise errors.UsageError(f'data set {name}: input {key!r} encodes to '
                              f'{None if got is None else got.shape[1:]}, the run was trained '
                              f'on {f.shape}; was the run prepared by an older mlheads?')
  return inputs, truncated


def scores(ckpt: Checkpoint, workdir: str, inputs: dict[str, np.ndarray],
           batch_size: int) -> dict[str, np.ndarray]:
  """Restores the step's parameters and returns each output's scores `[n, K]`.

  Runs the trainer's own evaluation step (`Trainer.predict`) on the rows, with
  zero targets (the step computes a loss that is thrown away).
  """
  config = ckpt.config
  devices = jax.device_count()
  config.eval_batch_size = -(-batch_size // devices) * devices  # whole batches per device
  trainer = train.Trainer(config, ckpt.dataset, fitted_heads=ckpt.heads)
  target = trainer.init_state(config.seed)
  with checkpoints.Checkpointer(workdir) as ck:
    state, _, _ = ck.restore(target, ckpt.step)
  n = len(next(iter(inputs.values())))
  arrays = dict(inputs)
  for key, f in ckpt.dataset.targets.items():
    arrays[key] = np.zeros((n,) + f.shape, np.float32)
    if f.has_mask:
      arrays[f'{key}_mask'] = np.ones((n,) + f.shape, np.float32)
  preds = trainer.predict(state.params, ckpt.dataset, arrays)
  return {name: p['scores'] for name, p in preds.items()}


def class_names(ckpt: Checkpoint, head: heads_lib.Head) -> list[str]:
  names = ckpt.dataset.targets[head.target].names
  return list(names) if names else [str(k) for k in range(head.num_classes)]


def thresholds_of(ckpt: Checkpoint, name: str, head: heads_lib.Head) -> tuple[np.ndarray, str]:
  """Per-class thresholds `[K]`: tuned on validation if the checkpoint has them, else the head's."""
  tuned = (ckpt.thresholds.get(name) or {}).get('per_class')
  if tuned is not None and len(tuned) == head.num_classes:
    return np.asarray(tuned, np.float32), 'tuned on validation'
  return np.full((head.num_classes,), head.threshold, np.float32), f'head default {head.threshold:g}'


def label_sets(scores: np.ndarray, thresholds: np.ndarray, names: list[str]) -> list[str]:
  """Each row's classes with score > threshold, joined by '|' ('' for none)."""
  hits = scores > thresholds[None, :]
  return [LABEL_SEPARATOR.join(n for n, h in zip(names, row) if h) for row in hits]


def _cell(v) -> str:
  if v is None or (isinstance(v, float) and np.isnan(v)):
    return ''
  return v if isinstance(v, str) else json.dumps(v)


def output_columns(ckpt: Checkpoint, out_scores: dict[str, np.ndarray]
                   ) -> tuple[dict[str, list], dict[str, str]]:
  """Output column -> values, and output -> where its thresholds came from."""
  cols, used = {}, {}
  for name, head in ckpt.heads.items():
    s, names = out_scores[name], class_names(ckpt, head)
    for k, cls in enumerate(names):
      cols[f'{name}:{cls}'] = [f'{float(x):.9g}' for x in s[:, k]]  # float32 round trip
    if head.target_kind == 'binary':
      t, used[name] = thresholds_of(ckpt, name, head)
      cols[f'{name}:labels'] = label_sets(s, t, names)
  return cols, used


def kept_columns(table: pd.DataFrame, keep: str, taken: set[str], source: str) -> list[str]:
  if keep == 'all':
    cols = list(table.columns)
  elif keep == 'none':
    cols = []
  else:
    cols = [c.strip() for c in keep.split(',') if c.strip()]
    base.require_columns(table, cols, source)
  clash = [c for c in cols if c in taken]
  if clash:
    logging.warning('input columns %s have the names of output columns; not copied', clash)
  return [c for c in cols if c not in taken]


def write_csv(path: str, header: list[str], rows) -> None:
  """Writes to a temporary file next to `path`, then renames it: never a partial file."""
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise errors.UsageError(f'--output={path}: no such directory {directory}')
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'w', newline='', encoding='utf-8') as f:
      w = csv.writer(f)
      w.writerow(header)
      w.writerows(rows)
    os.replace(tmp, path)
  except BaseException as e:
    try:
      os.remove(tmp)
    except OSError:
      pass
    if isinstance(e, OSError):
      raise errors.UsageError(f'--output={path}: cannot write: {e}') from None
    raise


def run(workdir: str, input_path: str, output: str, step: int | None = None,
        batch_size: int | None = None, keep: str = 'all') -> dict:
  """Predicts every row of `input_path` into `output`; returns a summary.

  Everything that can be wrong with the flags, the run or the input is raised
  (UsageError) before the model is built, and no output file is left behind.
  """
  if not workdir or not input_path or not output:
    raise errors.UsageError('--workdir, --input and --output are required')
  if os.path.abspath(input_path) == os.path.abspath(output):
    raise errors.UsageError(f'--output={output} would overwrite --input')
  if batch_size is not None and batch_size <= 0:
    raise errors.UsageError(f'--batch_size must be a positive integer, got {batch_size}')
  ckpt = choose_checkpoint(workdir, step)
  table = read_table(input_path)
  inputs, truncated = encode(ckpt, table, input_path)
  logging.info('%s: %d rows; %d texts longer than the run\'s max length were truncated.',
               input_path, len(table), truncated)
  logging.info('Checkpoint step %d of %s (%s).', ckpt.step, workdir, ckpt.how)
  out_scores = scores(ckpt, workdir, inputs, batch_size or ckpt.config.eval_batch_size)
  cols, used = output_columns(ckpt, out_scores)
  kept = kept_columns(table, keep, set(cols), input_path)
  header = kept + list(cols)
  kept_cells = table[kept].to_numpy(object)
  rows = ([_cell(v) for v in kept_cells[i]] + [c[i] for c in cols.values()]
          for i in range(len(table)))
  write_csv(output, header, rows)
  summary = {'rows': len(table), 'step': ckpt.step, 'chosen': ckpt.how, 'truncated': truncated,
             'thresholds': used, 'output': output, 'columns': header}
  logging.info('Thresholds: %s', used)
  return summary


class _LibraryChatter(logging.logging.Filter):
  """Drops orbax's and JAX's INFO lines (as main.py does for orbax); warnings still show,
  and a bad input's error stays the only line a user sees."""

  def filter(self, record):
    noisy = any(p in record.pathname for p in ('/orbax/', '/jax/'))
    return record.levelno >= logging.logging.WARNING or not noisy


def main(argv):
  logging.get_absl_handler().addFilter(_LibraryChatter())
  if len(argv) > 1:
    raise errors.UsageError(f'unexpected arguments {argv[1:]}')
  s = run(FLAGS.workdir, FLAGS.input, FLAGS.output, FLAGS.step, FLAGS.batch_size, FLAGS.keep)
  print(f'wrote {s["output"]}: {s["rows"]} rows, step {s["step"]} ({s["chosen"]}), '
        f'thresholds {s["thresholds"] or "none (regression only)"}, {s["truncated"]} texts '
        'truncated')


if __name__ == '__main__':
  define_flags()
  errors.run_main(main)
