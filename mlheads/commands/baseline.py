"""`./launch.sh baseline EXPERIMENT [--config.KEY=VALUE ...] [--workdir=DIR]`: the classical
baselines on the experiment's own splits (`mlheads.baselines`: the label prior, and TF-IDF +
logistic regression with C chosen on validation), written like a run.

  ./launch.sh baseline movie_genres
  ./launch.sh baseline from_csv --config.data.path=films.csv --config.data.text=title \
      --config.data.features=year,rating --config.data.label_list=genres
  ./launch.sh baseline movie_genres --c_grid=1,4 --jobs=1 --workdir=runs/base

The `--config.KEY=VALUE` settings are the experiment's, parsed as `./launch.sh EXPERIMENT`
parses them; the data settings (and the outputs' targets) decide what is fitted, so a baseline
and a run with the same data settings see the same rows. Writes into the workdir (default
runs/baseline/<experiment>-<timestamp>):
  config.json   the config
  metrics.json  the same keys as a run's ('validation', 'test', 'test_tuned', 'thresholds',
                'default_thresholds') for the logistic regression; 'label_prior' with the same
                sections for the prior; 'baseline': the features, C per target, validation mAP
                and seconds per C
  report.md, plots/   per-output and per-class tables, precision-recall curves
  scores.npz    validation and test scores, `<model>/<split>/<output>` -> `[n, K]`
"""

import os
import sys
import time

from absl import flags
import numpy as np

from mlheads import baselines
from mlheads import console
from mlheads import errors
from mlheads.evaluation import report
from mlheads.state import writers

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defined only when run as a command (flag names are shared with other CLI modules)."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'Experiment config file (experiments/*.py).',
                                  lock_config=True)
  flags.DEFINE_string('experiment', None, 'Experiment name, for the default workdir.')
  flags.DEFINE_string('workdir', None, 'Output folder; default '
                      'runs/baseline/<experiment>-<timestamp>.')
  flags.DEFINE_string('c_grid', ','.join(f'{c:g}' for c in baselines.C_GRID),
                      'Comma-separated C values (inverse L2 strength) tried; the best by '
                      'validation macro mAP is kept.')
  flags.DEFINE_integer('jobs', 0, 'Threads fitting (C, class) pairs at once; 0: every core '
                       'this process may use.')
  flags.mark_flags_as_required(['config'])


def parse_c_grid(text: str) -> list[float]:
  try:
    grid = [float(v) for v in text.split(',') if v.strip()]
  except ValueError:
    raise errors.UsageError(f'--c_grid={text!r}: expected comma-separated numbers') from None
  if not grid or min(grid) <= 0 or len(set(grid)) != len(grid):
    raise errors.UsageError(f'--c_grid={text!r}: expected distinct numbers > 0')
  return grid


def _stderr(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


def run(config, workdir: str, *, c_grid=baselines.C_GRID, jobs: int | None = None,
        progress=_stderr) -> dict:
  """Fits the baselines on `config`'s data and writes the workdir; returns metrics.json.

  Everything is checked and fitted before the workdir is created: a bad setting or bad data
  leaves nothing behind. A training run's folder is refused (its metrics.json is the run's).
  """
  if os.path.exists(os.path.join(workdir, 'checkpoints')):
    raise errors.UsageError(f'{workdir} holds a training run (checkpoints/); give the baseline '
                            'a folder of its own with --workdir')
  fitted = baselines.fit(config, c_grid=c_grid, jobs=jobs or None, progress=progress)
  summary = writers.jsonable(fitted.summary)
  os.makedirs(workdir, exist_ok=True)
  writers.atomic_write(os.path.join(workdir, 'config.json'), config.to_json_best_effort(indent=2))
  with open(os.path.join(workdir, 'scores.npz.tmp'), 'wb') as f:
    np.savez(f, **{f'{m}/{s}/{o}': p['scores'] for m, by_split in fitted.predictions.items()
                   for s, by_out in by_split.items() for o, p in by_out.items()})
  os.replace(os.path.join(workdir, 'scores.npz.tmp'), os.path.join(workdir, 'scores.npz'))
  report.write(workdir, summary, fitted.predictions['logistic'], fitted.class_names)
  # metrics.json last: its presence says the baseline finished (compare_heads skips it then).
  writers.write_json(os.path.join(workdir, 'metrics.json'), summary)
  return summary


def table(summary: dict, workdir: str | None = None) -> str:
  """The end-of-run table of the logistic model, then one line per output for the prior."""
  lines = [console.summary_table(
      {k: v for k, v in summary.items() if k in ('validation', 'test', 'test_tuned',
                                                   'default_thresholds')})]
  for out, m in summary.get('label_prior', {}).get('test', {}).items():
    ap = m.get('average_precision_macro')
    lines.append(f'Label prior, {out}: test mAP ' + ('n/a' if ap is None else f'{ap:.4f}') + '.')
  chosen = ', '.join(f'{t} C={c:g}' for t, c in summary['baseline']['c'].items())
  lines.append(f'Logistic regression: {chosen} (chosen on validation macro mAP).')
  if workdir:
    lines.append(f'Wrote {workdir}/metrics.json, {workdir}/report.md (+ plots/), '
                 f'{workdir}/scores.npz.')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise errors.UsageError(f'unexpected arguments {argv[1:]}; settings go as --config.KEY=VALUE')
  console.quiet()
  c_grid = parse_c_grid(FLAGS.c_grid)
  if FLAGS.jobs < 0:
    raise errors.UsageError(f'--jobs must be >= 0, got {FLAGS.jobs}')
  name = FLAGS.experiment or 'run'
  config = FLAGS.config
  config.experiment = config.experiment or name
  workdir = FLAGS.workdir or os.path.join('runs', 'baseline',
                                          f'{name}-{time.strftime("%Y%m%d-%H%M%S")}')
  summary = run(config, workdir, c_grid=c_grid, jobs=FLAGS.jobs)
  print(table(summary, workdir), flush=True)


if __name__ == '__main__':
  define_flags()
  errors.run_main(main)
