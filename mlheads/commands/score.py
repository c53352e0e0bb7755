"""Metrics of saved predictions (alias: evaluate).

  ./launch.sh score --labels=L --scores=S [--mask=M] [--from_logits] [--threshold=0.5]
      [--output=metrics.json]

Each of L, S, M is a `.npy` array, a `.npz` archive (its only array, the one named like the
flag, `logits` for --scores, or `FILE.npz:KEY`), or a `.csv` / `.tsv` table (a header row
naming the classes, then one row per example, every cell a number). Nothing is unpickled.
`--from_logits`: S holds logits, turned into scores by the sigmoid. The arrays are checked,
the metrics printed as a table (classes named by a table's header) and, with `--output`, written
as JSON there (nothing is written without it). Bad input is one line on stderr naming the file,
the position and the value, and exit code 2.
"""

import json
import math
import os

from absl import flags
import numpy as np

from mlheads import console
from mlheads import errors
from mlheads.data import cells as cells_lib
from mlheads.data import files
from mlheads.evaluation import metrics
from mlheads.state import writers

FLAGS = flags.FLAGS
# Array names an .npz may use for each flag, in the order they are tried.
NPZ_KEYS = {'labels': ('labels',), 'scores': ('scores', 'logits'), 'mask': ('mask',)}


def define_flags() -> None:
  """Defined only when run as a command, so library users and tests can import
  several CLI modules that share flag names (--workdir, --output, ...)."""
  flags.DEFINE_string('labels', None, '0/1 labels [N, K]: .npy, .npz or .csv/.tsv.')
  flags.DEFINE_string('scores', None, 'Scores in [0, 1] [N, K] (logits with --from_logits): '
                      '.npy, .npz or .csv/.tsv.')
  flags.DEFINE_string('mask', None, 'Optional 0/1 mask [N, K]; 0 leaves an entry out.')
  flags.DEFINE_bool('from_logits', False, '--scores holds logits: scores = sigmoid(logits).')
  flags.DEFINE_float('threshold', 0.5,
                     'Predict a label where score > threshold.')
  flags.DEFINE_string('output', None, 'JSON file to write (nothing is written without it).')


def _npz(flag, file, key):
  try:
    with np.load(file, allow_pickle=False) as archive:
      names = list(archive.files)
      if not key:
        if len(names) == 1:
          key = names[0]
        else:
          key = next((k for k in NPZ_KEYS.get(flag, (flag,)) if k in names), None)
      if key not in names:
        raise errors.UsageError(
            f'--{flag}={file}: holds arrays {names}; name one, e.g. --{flag}={file}:'
            f'{names[0] if names else "KEY"}')
      return archive[key]
  except (OSError, ValueError, EOFError) as e:
    raise errors.UsageError(f'--{flag}={file}: cannot read: {e}') from None


def _table(flag, file):
  """A table's numbers `[N, K]` and its header (the class names)."""
  table = files.frame(*files.read_rows(file))
  columns = [str(c) for c in table.columns]
  values = [cells_lib.numbers(table, c, file, what=flag) for c in table.columns]
  return np.stack(values, axis=1), columns


def load(flag, path) -> tuple[np.ndarray, list[str] | None]:
  """A numeric array and, from a table, its column names; a `UsageError` naming the file."""
  file, key = path, ''
  if '.npz:' in path:
    file, key = path.rsplit(':', 1)
  ext = os.path.splitext(file)[1].lower()
  names = None
  if ext == '.npy':
    try:
      array = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
      raise errors.UsageError(f'--{flag}={path}: cannot read: {e}') from None
  elif ext == '.npz':
    array = _npz(flag, file, key)
  elif ext in ('.csv', '.tsv'):
    array, names = _table(flag, file)
  else:
    raise errors.UsageError(f'--{flag}={path}: expected a .npy, .npz, .csv or .tsv file')
  if not isinstance(array, np.ndarray) or not (
      np.issubdtype(array.dtype, np.number) or array.dtype == bool):
    raise errors.UsageError(
        f'--{flag}={path}: expected a numeric array, got '
        f'{getattr(array, "dtype", type(array))}')
  return array, names


def check(arrays, paths, threshold=0.5):
  """Shape and value checks; `UsageError` naming the file of a bad value.

  Args:
    arrays: {'labels': ..., 'scores': ..., 'mask': ... or None}.
    paths: the same keys, file names.
    threshold: the decision threshold.

  Returns:
    `metrics.check_inputs`'s converted arrays.
  """
  labels = arrays['labels']
  for name in ('scores', 'mask'):
    a = arrays[name]
    if a is not None and a.shape != labels.shape:
      raise errors.UsageError(
          f'--{name}={paths[name]}: shape {a.shape} differs from --labels='
          f'{paths["labels"]} shape {labels.shape}')
  if labels.ndim not in (1, 2) or labels.size == 0:
    raise errors.UsageError(f'--labels={paths["labels"]}: expected a '
                            f'non-empty [N, K] array, got {labels.shape}')
  try:
    return metrics.check_inputs(labels, arrays['scores'], threshold, arrays['mask'])
  except ValueError as e:
    # check_inputs names the array first: 'scores[3, 1] = nan: ...'.
    name = next((n for n in paths if str(e).startswith(n)), 'labels')
    raise errors.UsageError(f'--{name}={paths[name]}: {e}') from None


def _json_number(x):
  return None if math.isnan(x) else x


def table(values, per_class, classes=None):
  """Aligned text: the metrics, then one line per class."""
  width = max(map(len, values))
  lines = [f'{k:<{width}}  {v:.6f}' for k, v in values.items()]
  cols = ('support', 'count', 'precision', 'recall', 'f1',
          'average_precision', 'roc_auc')
  w = {c: max(len(c), 9) for c in cols}
  classes = [str(c) for c in classes or range(len(per_class['support']))]
  cw = max(5, *map(len, classes))
  lines += ['', f'{"class":<{cw}}  ' + '  '.join(f'{c:>{w[c]}}' for c in cols)]
  for i, name in enumerate(classes):
    cells = [f'{per_class[c][i]:>{w[c]}d}' if c in ('support', 'count') else
             f'{"undefined":>{w[c]}}' if np.isnan(per_class[c][i]) else
             f'{per_class[c][i]:>{w[c]}.6f}' for c in cols]
    lines.append(f'{name:<{cw}}  ' + '  '.join(cells))
  return '\n'.join(lines)


def score(paths: dict, threshold: float = 0.5, from_logits: bool = False) -> dict:
  """Reads and checks the files, computes every metric; returns what `--output` holds."""
  loaded = {k: (None, None) if p is None else load(k, p) for k, p in paths.items()}
  arrays = {k: a for k, (a, _) in loaded.items()}
  if from_logits:
    arrays['scores'] = metrics.sigmoid(arrays['scores'])
  y, s, t, valid = check(arrays, paths, threshold)
  names = loaded['labels'][1] or loaded['scores'][1]
  if names is not None and len(names) != y.shape[1]:
    names = None
  values = metrics.compute(y, s, t, valid)
  per_class = metrics.per_class(y, s, t, valid)
  return {
      'inputs': {**paths, 'from_logits': from_logits, 'threshold': threshold,
                 'rows': int(y.shape[0]), 'classes': int(y.shape[1]),
                 'unmasked_entries': int(valid.sum())},
      'classes': names or list(range(y.shape[1])),
      'metrics': {k: _json_number(v) for k, v in values.items()},
      'per_class': {k: [_json_number(float(x)) if v.dtype.kind == 'f'
                        else int(x) for x in v]
                    for k, v in per_class.items()},
      # Classes without both a positive and a negative: undefined AP / AUC,
      # left out of the macro averages.
      'classes_left_out_of_macro_ap_auc':
          np.flatnonzero(np.isnan(per_class['roc_auc'])).tolist(),
  }


def main(argv):
  console.quiet()
  if len(argv) > 1:
    raise errors.UsageError(f'unexpected arguments {argv[1:]}')
  for name in ('labels', 'scores'):
    if not FLAGS[name].value:
      raise errors.UsageError(f'--{name} is required')
  if not math.isfinite(FLAGS.threshold):
    raise errors.UsageError(f'--threshold={FLAGS.threshold}: not finite')
  output = FLAGS.output
  if output and not os.path.isdir(os.path.dirname(os.path.abspath(output))):
    raise errors.UsageError(f'--output={output}: no such directory')
  paths = {'labels': FLAGS.labels, 'scores': FLAGS.scores, 'mask': FLAGS.mask}
  result = score(paths, FLAGS.threshold, FLAGS.from_logits)
  per_class = {k: np.array([np.nan if x is None else x for x in v])
               if k not in ('support', 'count') else np.array(v)
               for k, v in result['per_class'].items()}
  values = {k: np.nan if v is None else v for k, v in result['metrics'].items()}
  print(table(values, per_class, result['classes']))
  if output:
    try:
      writers.atomic_write(output, json.dumps(result, indent=1, allow_nan=False))
    except OSError as e:
      raise errors.UsageError(f'--output={output}: cannot write: {e}') from None
    print(f'\nwrote {output}')


if __name__ == '__main__':
  define_flags()
  errors.run_main(main)
