"""Metrics of saved predictions.

  ./launch.sh score --labels=L.npy --scores=S.npy [--mask=M.npy]
      [--threshold=0.5] [--output=metrics.json]

Loads `.npy` arrays (never pickles), checks them, prints a table and writes
JSON (default: next to the scores, `S.metrics.json`). Bad input is one line
on stderr naming the file, the position and the value, and exit code 2.
"""

import json
import math
import os

from absl import flags
import numpy as np

from mlheads import errors
from mlheads.evaluation import metrics

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defined only when run as a command, so library users and tests can import
  several CLI modules that share flag names (--workdir, --output, ...)."""
  flags.DEFINE_string('labels', None, '0/1 labels [N, K] (.npy).')
  flags.DEFINE_string('scores', None, 'Scores in [0, 1] [N, K] (.npy).')
  flags.DEFINE_string('mask', None, 'Optional 0/1 mask [N, K] (.npy).')
  flags.DEFINE_float('threshold', 0.5,
                     'Predict a label where score > threshold.')
  flags.DEFINE_string(
      'output', None, 'JSON file to write (default: <scores>.metrics.json).')


def load(flag, path):
  """A numeric array from a `.npy` file, or a `UsageError` naming it."""
  try:
    array = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    raise errors.UsageError(f'--{flag}={path}: cannot read: {e}') from None
  if not isinstance(array, np.ndarray) or not (
      np.issubdtype(array.dtype, np.number) or array.dtype == bool):
    raise errors.UsageError(
        f'--{flag}={path}: expected a numeric .npy array, got '
        f'{getattr(array, "dtype", type(array))}')
  return array


def check(arrays, paths):
  """Shape and value checks; `UsageError` naming the file of a bad value.

  Args:
    arrays: {'labels': ..., 'scores': ..., 'mask': ... or None}.
    paths: the same keys, file names.

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
    return metrics.check_inputs(labels, arrays['scores'], FLAGS.threshold,
                                arrays['mask'])
  except ValueError as e:
    # check_inputs names the array first: 'scores[3, 1] = nan: ...'.
    name = next((n for n in paths if str(e).startswith(n)), 'labels')
    raise errors.UsageError(f'--{name}={paths[name]}: {e}') from None


def _json_number(x):
  return None if math.isnan(x) else x


def table(values, per_class):
  """Aligned text: the metrics, then one line per class."""
  width = max(map(len, values))
  lines = [f'{k:<{width}}  {v:.6f}' for k, v in values.items()]
  cols = ('support', 'count', 'precision', 'recall', 'f1',
          'average_precision', 'roc_auc')
  w = {c: max(len(c), 9) for c in cols}
  lines += ['', 'class  ' + '  '.join(f'{c:>{w[c]}}' for c in cols)]
  for i in range(len(per_class['support'])):
    cells = [f'{per_class[c][i]:>{w[c]}d}' if c in ('support', 'count') else
             f'{"undefined":>{w[c]}}' if np.isnan(per_class[c][i]) else
             f'{per_class[c][i]:>{w[c]}.6f}' for c in cols]
    lines.append(f'{i:>5}  ' + '  '.join(cells))
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise errors.UsageError(f'unexpected arguments {argv[1:]}')
  for name in ('labels', 'scores'):
    if not FLAGS[name].value:
      raise errors.UsageError(f'--{name} is required')
  if not math.isfinite(FLAGS.threshold):
    raise errors.UsageError(f'--threshold={FLAGS.threshold}: not finite')
  paths = {'labels': FLAGS.labels, 'scores': FLAGS.scores,
           'mask': FLAGS.mask}
  arrays = {k: None if p is None else load(k, p) for k, p in paths.items()}
  y, s, t, valid = check(arrays, paths)
  values = metrics.compute(y, s, t, valid)
  values = {k: values[k] for k in metrics.KEYS}  # Table order.
  per_class = metrics.per_class(y, s, t, valid)
  left_out = np.flatnonzero(np.isnan(per_class['roc_auc'])).tolist()
  print(table(values, per_class))
  output = FLAGS.output or os.path.splitext(paths['scores'])[0] + (
      '.metrics.json')
  result = {
      'inputs': {**paths, 'threshold': FLAGS.threshold,
                 'rows': int(y.shape[0]), 'classes': int(y.shape[1]),
                 'unmasked_entries': int(valid.sum())},
      'metrics': {k: _json_number(v) for k, v in values.items()},
      'per_class': {k: [_json_number(float(x)) if v.dtype.kind == 'f'
                        else int(x) for x in v]
                    for k, v in per_class.items()},
      # Classes without both a positive and a negative: undefined AP / AUC,
      # left out of the macro averages.
      'classes_left_out_of_macro_ap_auc': left_out,
  }
  try:
    with open(output, 'w') as f:
      json.dump(result, f, indent=1, allow_nan=False)
  except OSError as e:
    raise errors.UsageError(f'--output={output}: cannot write: {e}') from None
  print(f'\nwrote {output}')


if __name__ == '__main__':
  define_flags()
  errors.run_main(main)
