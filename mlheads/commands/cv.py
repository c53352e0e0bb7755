"""k-fold cross-validation of one experiment: mean ± std of every test metric over the folds.

  ./launch.sh cv from_csv --folds=5 --config.data.path=films.csv ... [--workdir=DIR]

Fold i trains in `WORKDIR/fold<i>` with `--config.data.folds=k --config.data.fold=i`: the
rows are permuted by `data.split_seed` and cut into k folds; fold i is the test split, fold
i + 1 (mod k) validation (best checkpoint, tuned thresholds), the rest train. So every row is
tested exactly once, by a model that never saw it. Every fold's config is checked before the
first one trains. Rerunning the same command resumes an interrupted fold and re-evaluates
finished ones (nothing is trained twice).

Writes WORKDIR/cv.json ({section: {output: {metric: {mean, std, n, folds: [...]}}}} for the
test split at each head's threshold and at the tuned thresholds) and prints a table; std is
the sample standard deviation over folds (ddof 1).
"""

import math
import os
import sys
import time

from absl import flags
from absl import logging
import numpy as np

from mlheads import console
from mlheads import errors
from mlheads import train
from mlheads.state import writers

FLAGS = flags.FLAGS
SECTIONS = ('test', 'test_tuned')
FOLDABLE = ('from_csv',)  # data sets whose split `data.folds` / `data.fold` choose.


def define_flags() -> None:
  """Defined only when run as a command (tests import several CLI modules)."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'Experiment config file (experiments/*.py).',
                                  lock_config=True)
  flags.DEFINE_integer('folds', 5, 'Number of folds (at least 3).')
  flags.DEFINE_string('workdir', None, 'Output folder; default runs/cv/<experiment>-<time>.')
  flags.DEFINE_string('experiment', None, 'Experiment name (launch.sh passes it).')
  flags.mark_flags_as_required(['config'])


def fold_configs(config, folds: int) -> list:
  """One config per fold, each checked (train.check_config) before anything trains."""
  if config.data.name not in FOLDABLE or 'folds' not in config.data:
    raise errors.UsageError(f'cv: data set {config.data.name} has fixed splits; '
                            'cross-validation needs a data set with --config.data.folds '
                            '(from_csv)')
  if folds < 3:
    raise errors.UsageError(f'--folds={folds}: k-fold needs at least 3 folds (test, validation, '
                            'train)')
  for key in ('split_column', 'validation_path'):
    if config.data.get(key):
      raise errors.UsageError(f'cv makes its own folds; drop --config.data.{key}')
  out = []
  for i in range(folds):
    c = config.copy_and_resolve_references()
    c.data.folds, c.data.fold = folds, i
    try:
      train.check_config(c)
    except errors.UsageError as e:
      if i == 0:  # a setting wrong for every fold: said as a run would say it.
        raise
      raise errors.UsageError(f'fold {i}: {e}') from None
    out.append(c)
  return out


def _stats(values: list[float]) -> dict:
  finite = [v for v in values if v is not None and math.isfinite(v)]
  return {'mean': float(np.mean(finite)) if finite else float('nan'),
          'std': float(np.std(finite, ddof=1)) if len(finite) > 1 else float('nan'),
          'n': len(finite), 'folds': values}


def aggregate(summaries: list[dict]) -> dict:
  """{section: {output: {metric: stats over the folds}}} of the scalar test metrics."""
  out = {}
  for section in SECTIONS:
    outputs = summaries[0].get(section, {})
    out[section] = {
        name: {m: _stats([s[section][name].get(m) for s in summaries])
               for m, v in metrics.items() if isinstance(v, (int, float))}
        for name, metrics in outputs.items()}
  return out


def table(result: dict, folds: int) -> str:
  """The cross-validated test metrics as a Markdown table: mean ± std per output and metric."""
  lines = [f'| output | metric | test, mean ± std over {folds} folds | at tuned thresholds |',
           '|---|---|--:|--:|']
  test, tuned = result['test'], result['test_tuned']
  for name, metrics in test.items():
    for m, st in metrics.items():
      tuned_st = tuned.get(name, {}).get(m)
      cells = [f'{st["mean"]:.4f} ± {st["std"]:.4f}']
      cells.append(f'{tuned_st["mean"]:.4f} ± {tuned_st["std"]:.4f}' if tuned_st else '')
      lines.append(f'| {name} | {m} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def cross_validate(config, folds: int, workdir: str, out=sys.stdout) -> dict:
  """Trains and evaluates every fold; writes cv.json and cv.md into `workdir`."""
  configs = fold_configs(config, folds)
  summaries = []
  for i, c in enumerate(configs):
    fold_dir = os.path.join(workdir, f'fold{i}')
    print(f'[{i + 1}/{folds}] fold {i} in {fold_dir} ...', file=out, flush=True)
    t0 = time.perf_counter()
    summaries.append(train.train_and_evaluate(c, fold_dir))
    print(f'[{i + 1}/{folds}] fold {i} done ({time.perf_counter() - t0:.1f} s)', file=out,
          flush=True)
  result = {'experiment': config.experiment, 'folds': folds,
            'split_seed': config.data.split_seed, **aggregate(summaries)}
  writers.write_json(os.path.join(workdir, 'cv.json'), result)
  text = table(result, folds)
  writers.atomic_write(os.path.join(workdir, 'cv.md'), text + '\n')
  print(text, file=out)
  print(f'wrote {os.path.join(workdir, "cv.json")} and cv.md', file=out, flush=True)
  return result


def main(argv):
  console.quiet()
  if len(argv) > 1:
    raise errors.UsageError(f'unexpected arguments {argv[1:]}; settings go as --config.KEY=VALUE')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # one line per fold instead of each run's log.
  config = FLAGS.config
  name = FLAGS.experiment or 'run'
  config.experiment = config.experiment or name
  config.progress = False
  workdir = FLAGS.workdir or os.path.join('runs', 'cv', f'{name}-{time.strftime("%Y%m%d-%H%M%S")}')
  cross_validate(config, FLAGS.folds, workdir)


if __name__ == '__main__':
  define_flags()
  errors.run_main(main)
