"""Predictions of a trained run on new rows.

  ./launch.sh predict --workdir=RUN --input=FILE.csv --output=OUT.csv
      [--step=N] [--batch_size=B] [--keep=all|none|col,col]

Reads a checkpoint's extras (config, fitted heads, the data set's fields and
metadata, thresholds tuned and calibration fitted on validation), rebuilds the
model from them (no training data needed), restores its parameters, encodes the
input rows with the data set's own `encode` (the run's tokenizer and scaling)
and writes one CSV row per input row: the kept input columns, then per output
`<output>:<class>` probabilities (calibrated, calibration.py) and
`<output>:labels` (the classes whose score exceeds its tuned threshold, joined
by '|'), or for a regression output `<output>:<column>` values. docs/predict.md has the details.

Bad input is one line on stderr naming the file, the line, the column and the
value, exit code 2, and no output file (it is written to a temporary file and
renamed at the end).
"""

import csv
import json
import os

from absl import flags
from absl import logging
import jax
import numpy as np
import pandas as pd

from mlheads import errors
from mlheads import optimizers
from mlheads import sharding
from mlheads.data import base
from mlheads.data import files
from mlheads.data import pipeline
from mlheads.evaluation import calibration
from mlheads.evaluation import runner
from mlheads.model import heads as heads_lib
from mlheads.model import model as model_lib
from mlheads.state import checkpoints
from mlheads.state import extras as extras_lib
from mlheads.state import train_state
from mlheads.state import writers
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


def choose_checkpoint(workdir: str, step: int | None = None) -> extras_lib.RunRecord:
  """`step`'s extras; by default the best step by the run's own best metric, else the latest."""
  if not os.path.isdir(workdir):
    raise errors.UsageError(f'--workdir={workdir}: no such directory')
  with checkpoints.Checkpointer(workdir) as ckpt:
    if ckpt.latest_step() is None:
      raise errors.UsageError(f'--workdir={workdir}: no committed checkpoint in '
                              f'{ckpt.directory} (a run commits one at the end of each epoch)')
    if step is not None:
      extras, step = ckpt.read_extras(step)
      return extras_lib.read(extras, step, '--step')
    extras, latest = ckpt.read_extras()
  chosen = extras_lib.read(extras, latest, 'latest')
  metric, mode = runner.best_metric(chosen.config,
                                    {n: h.target_kind for n, h in chosen.heads.items()})
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
  return extras_lib.read(extras, best, f'best by validation {metric}')


def read_table(path: str) -> pd.DataFrame:
  """The input file's cells as read (strings, or JSON values), indexed by line number."""
  return files.frame(*files.read_rows(path))


def encode(ckpt: extras_lib.RunRecord, table: pd.DataFrame, source: str) -> tuple[dict, int]:
  """The rows as the run's model inputs, through the data set's own encoder."""
  name = ckpt.dataset.name
  inputs, truncated = data_lib.get(name).encode(table, dict(ckpt.dataset.meta), source)
  for key, f in ckpt.dataset.inputs.items():
    got = inputs.get(key)
    if got is None or got.shape[1:] != f.shape:  # the encoder and the saved fields disagree
      raise errors.UsageError(f'data set {name}: input {key!r} encodes to '
                              f'{None if got is None else got.shape[1:]}, the run was trained '
                              f'on {f.shape}; was the run prepared by an older mlheads?')
  return inputs, truncated


def scores(ckpt: extras_lib.RunRecord, workdir: str, inputs: dict[str, np.ndarray],
           batch_size: int) -> dict[str, np.ndarray]:
  """Restores the step's parameters and returns each output's scores `[n, K]`.

  Runs the trainer's own evaluation step (`runner.eval_step`) on the rows, with
  zero targets (the step computes a loss that is thrown away).
  """
  config, ds = ckpt.config, ckpt.dataset
  devices = jax.device_count()
  batch_size = -(-batch_size // devices) * devices  # whole batches per device
  model, heads = model_lib.build_model(config, ds, fitted_heads=ckpt.heads)
  parallel = sharding.DataParallel.over_all_devices()
  target = train_state.create(model, optimizers.make(config), config.seed,
                              pipeline.example_inputs(ds), parallel.replicated)
  with checkpoints.Checkpointer(workdir) as ck:
    state, _, _ = ck.restore(target, ckpt.step)
  n = len(next(iter(inputs.values())))
  arrays = dict(inputs)
  for key, f in ds.targets.items():
    arrays.update(f.empty(key, n))
  preds = runner.predict_split(runner.make_eval_fn(model, heads, parallel), state.params, ds,
                               arrays, batch_size, heads)
  return {name: p['scores'] for name, p in preds.items()}


def calibrated(ckpt: extras_lib.RunRecord, out_scores: dict[str, np.ndarray]
               ) -> dict[str, np.ndarray]:
  """Each output's probabilities through the calibration fitted on validation, if the
  checkpoint has one (an increasing map per class: the label sets do not change)."""
  out = dict(out_scores)
  for name, cal in ckpt.calibration.items():
    if name in out and len(cal['a']) == out[name].shape[-1]:
      out[name] = calibration.apply_numpy(out[name], cal['a'], cal['b'])
  return out


def thresholds_of(ckpt: extras_lib.RunRecord, name: str, head: heads_lib.Head) -> tuple[np.ndarray, str]:
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


def output_columns(ckpt: extras_lib.RunRecord, out_scores: dict[str, np.ndarray]
                   ) -> tuple[dict[str, list], dict[str, str]]:
  """Output column -> values, and output -> where its thresholds came from.

  Probabilities are calibrated where the checkpoint has a calibration; label sets compare
  the scores the thresholds were tuned on."""
  cols, used = {}, {}
  probabilities = calibrated(ckpt, out_scores)
  for name, head in ckpt.heads.items():
    s, names = out_scores[name], ckpt.dataset.class_names(head.target)
    for k, cls in enumerate(names):
      cols[f'{name}:{cls}'] = [f'{float(x):.9g}' for x in probabilities[name][:, k]]
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
  """Writes the whole file or nothing (a temporary file renamed at the end)."""
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise errors.UsageError(f'--output={path}: no such directory {directory}')

  def write(f):
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)

  try:
    writers.atomic_write(path, write, newline='')
  except OSError as e:
    raise errors.UsageError(f'--output={path}: cannot write: {e}') from None


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
