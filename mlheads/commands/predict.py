"""Predictions of a trained run on new rows.

  ./launch.sh predict --workdir=RUN --input=FILE.csv --output=OUT.csv
      [--step=N] [--batch_size=B] [--keep=all|none|col,col] [--threshold=T] [--top_k=K]

Reads a checkpoint's extras (config, fitted heads, the data set's fields and
metadata, thresholds tuned and calibration fitted on validation), rebuilds the
model from them (no training data needed), restores its parameters, encodes the
input rows with the data set's own `encode` (the run's tokenizer and scaling)
and writes one CSV row per input row: the kept input columns, then per output
`<output>:<class>` probabilities (calibrated where the run fitted a calibration,
calibration.py) and `<output>:predicted` (the classes whose score exceeds its
tuned threshold, or `--threshold`, or the `--top_k` most probable, joined by
'|'), or for a regression output `<output>:<column>` values. Tuned thresholds
compare the uncalibrated scores they were tuned on; `--threshold` and `--top_k`
the probabilities written. docs/predict.md has the details. `predict_table` does the same for a
pandas DataFrame, in memory (the Python API's `Run.predict`).

Bad input is one line on stderr naming the file, the line, the column and the
value, exit code 2, and no output file (it is written to a temporary file and
renamed at the end).
"""

import csv
import dataclasses
import json
import math
import os
from collections.abc import Callable
from typing import Any, NamedTuple

from absl import flags
from absl import logging
import jax
import numpy as np
import pandas as pd

from mlheads import console
from mlheads import ensemble
from mlheads import errors
from mlheads import optimizers
from mlheads import sharding
from mlheads.data import cells as cells_lib
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
  flags.DEFINE_float('threshold', None, 'Predict the classes with probability > T (one '
                     'threshold for every class) instead of the thresholds tuned on validation.')
  flags.DEFINE_integer('top_k', None, 'Predict each row\'s K most probable classes (with '
                       '--threshold: those of them above it).')


LABEL_SEPARATOR = '|'


def choose_checkpoint(workdir: str, step: int | None = None) -> extras_lib.RunRecord:
  """`step`'s extras; by default the best step by the run's own best metric, else the latest.

  A run with an ensemble (`config.ensemble`) predicts with it at the step it was blended
  with: the record then carries it and its thresholds (tuned on the blend's validation)."""
  chosen = _checkpoint(workdir, step)
  if not chosen.config.get('ensemble'):
    return chosen
  ens = ensemble.load(workdir, ((read_metrics(workdir) or {}).get('ensemble') or {}).get('sha256'))
  if ens is None or ens.step != chosen.step:
    logging.warning('step %d: the network alone (the ensemble was blended with %s)',
                    chosen.step, f'step {ens.step}' if ens else 'no step: unfinished run')
    return chosen
  return dataclasses.replace(chosen, ensemble=ens, thresholds=ens.thresholds,
                             calibration=ens.calibration,
                             how=f'{chosen.how}, blended with the logistic model')


def read_metrics(workdir: str) -> dict | None:
  """metrics.json (the final evaluation), or None while the run has not finished."""
  path = os.path.join(workdir, 'metrics.json')
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _checkpoint(workdir: str, step: int | None) -> extras_lib.RunRecord:
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


class Restored(NamedTuple):
  """A checkpoint's model, ready to score rows: built, its parameters restored, its
  evaluation step jitted (once: scoring more rows reuses it)."""
  model: Any
  heads: dict
  params: Any
  eval_fn: Callable


def restore(ckpt: extras_lib.RunRecord, workdir: str) -> Restored:
  """Rebuilds the run's model from the checkpoint's extras and restores `ckpt.step`."""
  config, ds = ckpt.config, ckpt.dataset
  model, heads = model_lib.build_model(config, ds, fitted_heads=ckpt.heads)
  parallel = sharding.DataParallel.over_all_devices()
  # Runs saved before config.dtype existed computed in float32.
  dtype = config.get('dtype', 'float32')
  target = train_state.create(model, optimizers.make(config), config.seed,
                              pipeline.example_inputs(ds), parallel.replicated, dtype)
  with checkpoints.Checkpointer(workdir) as ck:
    state, _, _ = ck.restore(target, ckpt.step)
  return Restored(model, heads, state.params, runner.make_eval_fn(model, heads, parallel,
                                                                       dtype))


def scores(ckpt: extras_lib.RunRecord, workdir: str, table: pd.DataFrame,
           inputs: dict[str, np.ndarray], batch_size: int, restored: Restored | None = None
           ) -> dict[str, np.ndarray]:
  """Each output's scores `[n, K]` for the rows `table`, encoded as `inputs`.

  Runs the trainer's own evaluation step (`runner.eval_step`) on the rows, with
  zero targets (the step computes a loss that is thrown away); a run with an ensemble blends
  them with its logistic model's, which reads the raw rows. `restored`: a model already
  restored from this checkpoint (else it is restored here).
  """
  ds = ckpt.dataset
  devices = jax.device_count()
  batch_size = -(-batch_size // devices) * devices  # whole batches per device
  r = restored or restore(ckpt, workdir)
  n = len(next(iter(inputs.values())))
  arrays = dict(inputs)
  for key, f in ds.targets.items():
    arrays.update(f.empty(key, n))
  preds = runner.predict_split(r.eval_fn, r.params, ds, arrays, batch_size, r.heads)
  out = {name: p['scores'] for name, p in preds.items()}
  return out if ckpt.ensemble is None else ckpt.ensemble.blend(out, ds, table, inputs)


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


def label_sets(scores: np.ndarray, thresholds: np.ndarray | None, names: list[str],
               top_k: int | None = None, rank: np.ndarray | None = None) -> list[str]:
  """Each row's classes with score > threshold (all, if `thresholds` is None), of those only
  the `top_k` highest in `rank` (default: the scores; ties: the earlier class), joined by
  '|' ('' for none)."""
  hits = np.ones(scores.shape, bool) if thresholds is None else scores > thresholds[None, :]
  if top_k is not None:
    top = np.argsort(-(scores if rank is None else rank), axis=1, kind='stable')[:, :top_k]
    in_top = np.zeros(scores.shape, bool)
    np.put_along_axis(in_top, top, True, axis=1)
    hits &= in_top
  return [LABEL_SEPARATOR.join(n for n, h in zip(names, row) if h) for row in hits]


def _cell(v) -> str:
  if v is None or (isinstance(v, float) and np.isnan(v)):
    return ''
  return v if isinstance(v, str) else json.dumps(v)


def predicted_column(name: str, class_names: list[str]) -> str:
  """`<output>:predicted`, the label-set column; `<output>:predicted_set` for an output with a
  class named 'predicted', whose probability column takes the plain name."""
  return f'{name}:predicted' if 'predicted' not in class_names else f'{name}:predicted_set'


def output_columns(ckpt: extras_lib.RunRecord, out_scores: dict[str, np.ndarray],
                   threshold: float | None = None, top_k: int | None = None
                   ) -> tuple[dict[str, list], dict[str, str]]:
  """Output column -> values (float32 `[n]` arrays of probabilities or values; lists of
  label sets), and output -> how its label sets were chosen.

  Probabilities are calibrated where the checkpoint has a calibration. The tuned thresholds
  compare the uncalibrated scores they were tuned on; `threshold` and `top_k` the
  probabilities written.
  threshold: one threshold for every class, instead of the checkpoint's tuned ones.
  top_k: at most the k most probable classes per row; alone, exactly k (no threshold).
  """
  cols, used = {}, {}
  probabilities = calibrated(ckpt, out_scores)
  for name, head in ckpt.heads.items():
    s, names = out_scores[name], ckpt.dataset.class_names(head.target)
    for k, cls in enumerate(names):
      cols[f'{name}:{cls}'] = probabilities[name][:, k]
    if head.target_kind == 'binary':
      if threshold is not None:
        t, used[name] = np.full((head.num_classes,), threshold, np.float32), f'> {threshold:g}'
      elif top_k is not None:
        t, used[name] = None, 'no threshold'
      else:
        t, used[name] = thresholds_of(ckpt, name, head)
      if top_k is not None:
        used[name] = f'top {top_k}, {used[name]}'
      p = probabilities[name]
      if threshold is not None or t is None:
        cols[predicted_column(name, names)] = label_sets(p, t, names, top_k)
      else:
        cols[predicted_column(name, names)] = label_sets(s, t, names, top_k, rank=p)
  return cols, used


def kept_columns(table: pd.DataFrame, keep: str, taken: set[str], source: str) -> list[str]:
  if keep == 'all':
    cols = list(table.columns)
  elif keep == 'none':
    cols = []
  else:
    cols = [c.strip() for c in keep.split(',') if c.strip()]
    cells_lib.require_columns(table, cols, source)
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
    w = csv.writer(f, lineterminator='\n')  # csv's default is '\r\n'
    w.writerow(header)
    w.writerows(rows)

  try:
    writers.atomic_write(path, write, newline='')
  except OSError as e:
    raise errors.UsageError(f'--output={path}: cannot write: {e}') from None


def check_choice(threshold: float | None, top_k: int | None) -> None:
  """UsageError for a `--threshold` or `--top_k` that cannot choose labels."""
  if threshold is not None and not math.isfinite(threshold):
    raise errors.UsageError(f'--threshold={threshold}: not a finite number')
  if top_k is not None and top_k <= 0:
    raise errors.UsageError(f'--top_k={top_k}: must be a positive integer')


def predict_table(ckpt: extras_lib.RunRecord, workdir: str, table: pd.DataFrame, source: str,
                  batch_size: int | None = None, threshold: float | None = None,
                  top_k: int | None = None, restored: Restored | None = None
                  ) -> tuple[dict[str, list], dict[str, str], int]:
  """The output columns for `table`'s rows (see `output_columns`), how each output's labels
  were chosen, and how many texts were truncated. `source` names the rows in messages."""
  check_choice(threshold, top_k)
  inputs, truncated = encode(ckpt, table, source)
  out_scores = scores(ckpt, workdir, table, inputs, batch_size or ckpt.config.eval_batch_size,
                      restored)
  cols, used = output_columns(ckpt, out_scores, threshold, top_k)
  return cols, used, truncated


def run(workdir: str, input_path: str, output: str, step: int | None = None,
        batch_size: int | None = None, keep: str = 'all', threshold: float | None = None,
        top_k: int | None = None) -> dict:
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
  check_choice(threshold, top_k)
  ckpt = choose_checkpoint(workdir, step)
  table = read_table(input_path)
  logging.info('Checkpoint step %d of %s (%s).', ckpt.step, workdir, ckpt.how)
  cols, used, truncated = predict_table(ckpt, workdir, table, input_path, batch_size,
                                        threshold, top_k)
  logging.info('%s: %d rows; %d texts longer than the run\'s max length were truncated.',
               input_path, len(table), truncated)
  kept = kept_columns(table, keep, set(cols), input_path)
  header = kept + list(cols)
  kept_cells = table[kept].to_numpy(object)
  text = {k: [f'{float(x):.9g}' for x in v] if isinstance(v, np.ndarray) else v
          for k, v in cols.items()}  # 9 digits: a float32 round trip
  rows = ([_cell(v) for v in kept_cells[i]] + [c[i] for c in text.values()]
          for i in range(len(table)))
  write_csv(output, header, rows)
  return {'rows': len(table), 'step': ckpt.step, 'chosen': ckpt.how, 'truncated': truncated,
          'thresholds': used, 'output': output, 'columns': header}


def main(argv):
  console.quiet()
  if len(argv) > 1:
    raise errors.UsageError(f'unexpected arguments {argv[1:]}')
  s = run(FLAGS.workdir, FLAGS.input, FLAGS.output, FLAGS.step, FLAGS.batch_size, FLAGS.keep,
          FLAGS.threshold, FLAGS.top_k)
  chosen = ', '.join(f'{k}: {v}' for k, v in s['thresholds'].items()) or 'none (regression only)'
  print(f'wrote {s["output"]}: {s["rows"]} rows, step {s["step"]} ({s["chosen"]}); labels '
        f'predicted by {chosen}; {s["truncated"]} texts truncated')


if __name__ == '__main__':
  define_flags()
  errors.run_main(main)
