"""mlheads from Python: what a notebook needs, in a few calls on the library's own functions.

    from mlheads import api

    config = api.config('movie_genres', epochs=1, heads={'genres': {'kind': 'softmax'}})
    config = api.from_dataframe(df, text='title', features=['year'], label_list='genres')
    data = api.load_data(config)                # prepared once, read, checked (B01-B11)
    model, heads = api.build_model(config, data)  # a Flax module: inputs -> {output: logits}
    summary = api.train(config, 'runs/nb')      # train_and_evaluate: metrics.json's content
    print(api.summary_table(summary, 'runs/nb'))
    run = api.load_run('runs/nb')               # its best checkpoint, as predict chooses it
    table = run.predict(new_rows)               # a DataFrame in, a DataFrame out
    api.metrics(labels, scores)                 # on arrays; equal to scikit-learn's

Each call is one the command line makes: `experiments` loads configs, `data.load_checked` the
data, `model.build_model` the model, `train.train_and_evaluate` the run, `commands.predict` the
predictions, `evaluation.metrics` / `thresholds` the metrics. Bad settings and bad input raise
`mlheads.errors.UsageError` with the command line's one-line message. docs/api.md has more.

Importing this module filters the libraries' log chatter (`console.quiet`), as the command
line does.
"""

import dataclasses
import functools
import hashlib
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import ml_collections
import numpy as np
import pandas as pd

from mlheads import console
from mlheads import errors
from mlheads import train as train_lib
from mlheads.commands import experiments as experiments_lib
from mlheads.commands import predict as predict_lib
from mlheads.data import base
from mlheads.data import pipeline
from mlheads.evaluation import metrics as metrics_lib
from mlheads.evaluation import thresholds as thresholds_lib
from mlheads.model import model as model_lib
from mlheads.state import writers
import mlheads.data as data_lib

UsageError = errors.UsageError
summary_table = console.summary_table
experiments = experiments_lib.experiments

console.quiet()


# ----------------------------------------------------------------------------- configs


def config(experiment: str, overrides: Mapping[str, Any] | None = None,
           **settings) -> ml_collections.ConfigDict:
  """An experiment's locked config with some settings changed, checked as the CLI checks it.

  Args:
    experiment: a name in experiments/ ('movie_genres') or the path of an experiment file.
    overrides: `{'heads.genres.kind': 'softmax', 'data': {'max_rows': 500}}`: dotted keys,
      nested dicts, or both; what `--config.KEY=VALUE` sets on the command line.
    **settings: the same as keywords: `epochs=2, data={'max_rows': 500}`.

  Values are Python values (a tuple for `trunk.hidden`; a list of names for a comma-separated
  field such as `data.features`). A key the config lacks, a value of the wrong type or a bad
  value raises UsageError, before any data is read.
  """
  c = experiments_lib.get_config(experiment)
  c.lock()
  if 'experiment' in c and not c.experiment:
    c.experiment = os.path.splitext(os.path.basename(experiment))[0]
  for key, value in {**(overrides or {}), **settings}.items():
    _set(c, key, value)
  train_lib.check_config(c)
  return c


def _set(config, key: str, value) -> None:
  """`config.<key> = value` for a dotted `key`; a dict value for a non-empty section sets its
  keys one by one (so a misspelt one is caught), else it replaces the field."""
  parts, node = key.split('.'), config
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      where = '.'.join(parts[:i]) or 'the config'
      known = sorted(node) if isinstance(node, ml_collections.ConfigDict) else []
      raise UsageError(f'unknown config key {".".join(parts[:i + 1])!r}: {where} has '
                       f'{known or "no keys"}')
    if i < len(parts) - 1:
      node = node[part]
  last, current = parts[-1], node[parts[-1]]
  if isinstance(value, Mapping) and isinstance(current, ml_collections.ConfigDict) and current:
    for k, v in value.items():
      _set(config, f'{key}.{k}', v)
    return
  if isinstance(current, str) and isinstance(value, (list, tuple)):
    value = ','.join(map(str, value))  # data.features=['a', 'b'] is 'a,b'
  try:
    node[last] = value
  except (TypeError, ValueError) as e:
    raise UsageError(f'config key {key!r}: {" ".join(str(e).split())}') from None


def from_dataframe(frame: pd.DataFrame, *, data_dir: str = '',
                   overrides: Mapping[str, Any] | None = None,
                   **data) -> ml_collections.ConfigDict:
  """A `from_csv` config for the rows of a pandas DataFrame.

  The rows are written once as JSONL (content-addressed: the same rows, the same file) under
  `<data_dir>/from_csv/frames/`, and read back like any of the user's files: the same checks,
  the same cached preparation. A list in a `label_list` column is a list of class names; NaN
  or None is an empty cell.

  Args:
    frame: the table, one example a row.
    data_dir: the tfds data dir ('' = tfds' default, ~/tensorflow_datasets).
    overrides: other settings, as for `config` (`{'epochs': 2}`).
    **data: `config.data` of from_csv: text='title', features=['year'], label_list='genres'
      or labels=['a', 'b'], separator, classes, split_seed, max_len, vocab_size, ...
  """
  if not isinstance(frame, pd.DataFrame) or frame.empty:
    raise UsageError('from_dataframe needs a non-empty pandas DataFrame')
  text = frame.to_json(orient='records', lines=True, date_format='iso', force_ascii=False)
  digest = hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]
  root = os.path.expanduser(data_dir or os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets'))
  path = os.path.join(root, 'from_csv', 'frames', f'frame_{digest}.jsonl')
  if not os.path.exists(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    writers.atomic_write(path, text)
  return config('from_csv', {'data': {**data, 'path': path, 'dir': data_dir}, **(overrides or {})})


# ----------------------------------------------------------------------------- data and model


@dataclasses.dataclass(frozen=True)
class Data:
  """A prepared data set, `dataset` (its fields, class names, metadata, its splits as sources
  on the prepared files, checked when prepared), as training reads it."""
  dataset: base.Dataset

  @functools.cached_property
  def arrays(self) -> dict[str, dict[str, np.ndarray]]:
    """`{split: {key: [n, ...]}}`: every split read whole into memory (on first use; training
    itself streams, so a data set larger than memory is fine until this is asked for)."""
    return {s: pipeline.read_split(self.dataset.split(s)) for s in base.SPLITS}

  def example_inputs(self) -> dict[str, np.ndarray]:
    """One all-zero example of every input, `{key: [1, ...]}`: what `model.init` takes."""
    return pipeline.example_inputs(self.dataset)

  def batches(self, split: str, batch_size: int = 256) -> Iterator[dict]:
    """The split in order as `{'inputs', 'targets', 'masks', 'valid'}` batches (the last one
    padded, `valid` 0 on padding), streamed from the prepared files: what
    `model.apply(..., batch['inputs'])` takes."""
    return pipeline.eval_batches(self.dataset, self.dataset.split(split), batch_size)

  def class_names(self, target: str) -> list[str]:
    return self.dataset.class_names(target)

  def sizes(self) -> dict[str, int]:
    return {s: pipeline.num_rows(self.dataset.split(s)) for s in base.SPLITS}


def load_data(config) -> Data:
  """The config's data set: prepared if needed (cached, its records checked, B01-B12)."""
  return Data(data_lib.load_checked(config))


def build_model(config, data: Data):
  """`(model, heads)`: the config's trunk and heads sized to `data` (heads that learn from the
  train labels, powerset, fitted on them). `model.init(key, data.example_inputs())` gives the
  parameters; `model.apply({'params': p}, inputs)` the logits `{output: [batch, K]}`;
  `heads[name].scores(logits[name])` the probabilities."""
  return train_lib.build(model_lib.resolve(config), data.dataset)


def train(config, workdir: str | None = None) -> dict:
  """Trains and evaluates as `./launch.sh EXPERIMENT` does (resuming from `workdir`'s
  checkpoints); returns the summary written to metrics.json. Default workdir:
  runs/<experiment>/<timestamp>."""
  workdir = workdir or os.path.join('runs', config.experiment or 'run',
                                    time.strftime('%Y%m%d-%H%M%S'))
  return train_lib.train_and_evaluate(config, workdir)


# ----------------------------------------------------------------------------- finished runs


class Run:
  """A run folder: its config and metrics, and one checkpoint's model for new rows.

  The checkpoint is the one `./launch.sh predict` takes: `step`, else the best by the run's
  own best metric, else the latest; it is restored once, on first use.
  """

  def __init__(self, workdir: str, step: int | None = None):
    self.workdir = workdir
    self.checkpoint = predict_lib.choose_checkpoint(workdir, step)
    self._restored = None

  config = property(lambda self: self.checkpoint.config)
  step = property(lambda self: self.checkpoint.step)
  heads = property(lambda self: self.checkpoint.heads)
  thresholds = property(lambda self: self.checkpoint.thresholds)  # {output: {'per_class'}}

  @property
  def metrics(self) -> dict | None:
    """metrics.json (the final evaluation), or None while the run has not finished."""
    return predict_lib.read_metrics(self.workdir)

  def _model(self):
    if self._restored is None:
      self._restored = predict_lib.restore(self.checkpoint, self.workdir)
    return self._restored

  def scores(self, rows: pd.DataFrame, batch_size: int | None = None) -> dict[str, np.ndarray]:
    """Each output's probabilities `[len(rows), K]` (values for a regression output),
    calibrated where the run fitted a calibration: what predict writes."""
    inputs, _ = predict_lib.encode(self.checkpoint, rows, 'DataFrame')
    return predict_lib.calibrated(self.checkpoint, predict_lib.scores(
        self.checkpoint, self.workdir, rows, inputs, batch_size or self.config.eval_batch_size,
        self._model()))

  def predict(self, rows: pd.DataFrame, *, threshold: float | None = None,
              top_k: int | None = None, keep: str = 'all',
              batch_size: int | None = None) -> pd.DataFrame:
    """The predict command's columns for `rows` (same index): the kept input columns
    ('all', 'none' or 'a,b'), `<output>:<class>` probabilities and `<output>:predicted`
    label sets ('A|B'), chosen by the tuned thresholds, `threshold` or `top_k`."""
    cols, _, _ = predict_lib.predict_table(self.checkpoint, self.workdir, rows, 'DataFrame',
                                           batch_size, threshold, top_k, self._model())
    kept = predict_lib.kept_columns(rows, keep, set(cols), 'DataFrame')
    return pd.concat([rows[kept], pd.DataFrame(cols, index=rows.index)], axis=1)


def load_run(workdir: str, step: int | None = None) -> Run:
  """A run folder (finished or still training); see `Run`."""
  return Run(workdir, step)


# ----------------------------------------------------------------------------- metrics on arrays


def _scores(scores, from_logits: bool):
  return metrics_lib.sigmoid(scores) if from_logits else scores


def metrics(labels, scores, threshold=0.5, mask=None, *, from_logits: bool = False
            ) -> dict[str, float]:
  """Every metric (`evaluation.metrics.KEYS`) of 0/1 `labels` `[N, K]` and `scores` in [0, 1]
  (or logits, `from_logits=True`), predicted where score > `threshold` (scalar or `[K]`);
  `mask` 0 leaves an entry out. NaN where undefined."""
  return metrics_lib.compute(labels, _scores(scores, from_logits), threshold, mask)


def per_class_metrics(labels, scores, threshold=0.5, mask=None, *, from_logits: bool = False
                      ) -> dict[str, np.ndarray]:
  """Per-class `[K]` precision, recall, F1, AP, ROC AUC, support and count; NaN where
  undefined."""
  return metrics_lib.per_class(labels, _scores(scores, from_logits), threshold, mask)


def tune_thresholds(labels, scores, mask=None, *, from_logits: bool = False) -> np.ndarray:
  """Per-class thresholds `[K]` maximizing each class's F1 (what a run tunes on validation)."""
  return thresholds_lib.tune(labels, _scores(scores, from_logits), mask)[0]
