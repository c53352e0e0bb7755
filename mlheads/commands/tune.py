"""Picks one experiment's settings from a small grid, on validation only, and reports test.

  ./launch.sh tune EXPERIMENT --grid='trunk.kind=bag,text;learning_rate=0.003,0.01'
      [--seeds=0] [--config.KEY=VALUE ...] [--workdir=runs/tune/NAME]

`--grid` is the axes of a product, `;` between axes (`KEY=V1,V2`, as compare's --grid); without
it the experiment file's module-level `TUNE_GRID` string is used. Each `--config.KEY=VALUE` holds
for every candidate. Every candidate (grid point) trains over the seeds with compare's machinery
(`compare.plan`, `compare.run_all`): configs all checked before the first run trains, finished
runs skipped, interrupted ones resumed. A candidate's score is the mean over its seeds of the
experiment's best metric (`config.best_metric`) on VALIDATION, at each run's best checkpoint;
the best score wins (ties: the earlier candidate), and test is never read to choose. The chosen
runs' best checkpoints are already evaluated on test (their metrics.json), so nothing is
retrained: their test metrics are reported as they are, mean ± std over the seeds.

Writes WORKDIR/tune.json (every candidate's validation score and the choice, with its test
metrics) and prints, last, which candidate was chosen and why. docs/tune.md has the details.
"""

import os
import sys

from absl import flags
import numpy as np

from mlheads import errors
from mlheads import train
from mlheads.commands import compare
from mlheads.commands import compare_report
from mlheads.commands import experiments as experiments_lib
from mlheads.state import writers

FLAGS = flags.FLAGS
GRID_ATTRIBUTE = 'TUNE_GRID'  # an experiment file's default grid


def define_flags() -> None:
  flags.DEFINE_string('grid', None, "KEY=V1,V2;KEY2=W1,W2: the candidates, the product of the "
                      "axes (';' between axes). Default: the experiment file's TUNE_GRID.")
  flags.DEFINE_string('seeds', '0', 'Comma-separated seeds; a candidate scores the mean of them.')
  flags.DEFINE_string('workdir', None, 'Output folder; default runs/tune/<experiment>-<timestamp>. '
                      'Rerun with the same one to reuse its finished runs.')
  flags.DEFINE_multi_string('set', [], 'KEY=VALUE for every candidate (repeatable); '
                            '--config.KEY=VALUE means the same.')
  flags.DEFINE_string('experiment', None, 'Experiment name; launch.sh passes the first argument.')


def split_axes(grid: str) -> list[str]:
  """'a=1,2; b=x' -> ['a=1,2', 'b=x']: compare's --grid values, one per axis."""
  axes = [a for a in compare.split_values(grid, sep=';') if a]
  if not axes:
    raise errors.UsageError(f'--grid={grid!r}: no axes; write KEY=V1,V2[;KEY2=W1,W2]')
  return axes


def experiment_grid(experiment: str) -> str:
  """The experiment file's TUNE_GRID, or an error saying to give --grid."""
  grid = getattr(experiments_lib.load(experiment), GRID_ATTRIBUTE, None)
  if not isinstance(grid, str) or not grid.strip():
    raise errors.UsageError(f'experiment {experiment!r} declares no {GRID_ATTRIBUTE}; give '
                            "--grid='KEY=V1,V2[;KEY2=W1,W2]'")
  return grid


def _metric(summary: dict, name: str):
  out, _, key = name.partition('/')
  v = summary.get('validation', {}).get(out, {}).get(key)
  return float(v) if isinstance(v, (int, float)) and np.isfinite(v) else None


def choose(runs: list[dict], results: list[dict]) -> dict:
  """Scores each candidate by its seeds' mean validation best metric; returns tune.json's body.

  runs, results: compare.plan's runs and compare.run_all's results, in the same order.
  """
  names = {train.check_config(r['config'])[2] for r in runs}
  if len(names) > 1:
    raise errors.UsageError(f'the candidates pick their best checkpoints by different metrics '
                            f'{sorted(n for n, _ in names)}; fix --config.best_metric')
  metric, mode = names.pop()
  points: dict[str, dict] = {}
  for result in results:
    p = points.setdefault(result['point'], {'point': result['point'],
                                            'overrides': result['overrides'], 'runs': []})
    p['runs'].append(result)
  candidates = []
  for p in points.values():
    values = [_metric({'validation': r['validation']}, metric) for r in p['runs']]
    score = compare_report.stats(values)
    candidates.append({'point': p['point'], 'overrides': p['overrides'],
                       'validation': {metric: score},
                       'dirs': [r['dir'] for r in p['runs']],
                       'steps': [r['steps'] for r in p['runs']]})
  scored = [c for c in candidates if c['validation'][metric]['n'] == len(c['dirs'])]
  if not scored:
    raise errors.UsageError(f'no candidate has a defined validation {metric} on every seed; '
                            'nothing to choose from')
  sign = 1 if mode == 'max' else -1
  best = max(scored, key=lambda c: sign * c['validation'][metric]['mean'])  # first on ties
  chosen_runs = points[best['point']]['runs']
  test = {}
  for section in ('test', 'test_tuned'):
    test[section] = {out: {k: compare_report.stats([r[section].get(out, {}).get(k)
                                                    for r in chosen_runs])
                           for k in chosen_runs[0][section].get(out, {})}
                     for out in chosen_runs[0][section]}
  return {'metric': metric, 'mode': mode, 'candidates': candidates,
          'chosen': {'point': best['point'], 'overrides': best['overrides'],
                     'validation': best['validation'], 'dirs': best['dirs'], **test},
          'why': why(best, candidates, metric, mode)}


def _fmt(s: dict) -> str:
  if s['mean'] is None:
    return 'undefined'
  return f'{s["mean"]:.4f}' + (f' ± {s["std"]:.4f}' if s['std'] is not None else '')


def why(best: dict, candidates: list[dict], metric: str, mode: str) -> str:
  """One sentence: the chosen candidate, its validation score, and the runner-up's."""
  seeds = len(best['dirs'])
  over = ', '.join(f'{k}={v}' for k, v in best['overrides'].items()) or 'the defaults'
  text = (f'chose {best["point"]} ({over}): validation {metric} {_fmt(best["validation"][metric])}'
          f' (mean of {seeds} seed{"s" if seeds > 1 else ""}), the '
          f'{"highest" if mode == "max" else "lowest"} of {len(candidates)} candidates')
  others = [c for c in candidates if c is not best and c['validation'][metric]['mean'] is not None]
  if others:
    sign = 1 if mode == 'max' else -1
    second = max(others, key=lambda c: sign * c['validation'][metric]['mean'])
    text += f'; next {second["point"]} {_fmt(second["validation"][metric])}'
  return text + '; chosen on validation only'


def tune(experiment: str, grid: str | None, seeds: list[int], sets: list[str], workdir: str,
         argv: list[str] | None = None, out=sys.stdout) -> dict:
  """Plans and runs every candidate (compare.run_all), chooses, writes tune.json."""
  grid = grid if grid is not None else experiment_grid(experiment)
  axes = split_axes(grid)
  runs = compare.plan(experiment, axes, seeds, sets)
  os.makedirs(workdir, exist_ok=True)
  print(f'tune {experiment}: {len(runs) // len(seeds)} candidate(s) x {len(seeds)} seed(s) in '
        f'{workdir}', file=out, flush=True)
  results = compare.run_all(runs, workdir, out)
  doc = {'experiment': experiment, 'command': argv, 'grid': grid, 'seeds': seeds,
         'settings': sets, **choose(runs, results)}
  writers.write_json(os.path.join(workdir, 'tune.json'), doc)
  print(doc['why'], file=out, flush=True)
  shown = {'test': (('average_precision_macro', 'mAP'), ('roc_auc_macro', 'AUC'),
                    ('f1_micro', 'F1 micro'), ('mse', 'MSE')),
           'test_tuned': (('f1_micro', 'F1 micro'), ('f1_macro', 'F1 macro'))}
  for section, label in (('test', 'test'), ('test_tuned', 'test @tuned')):
    for name, m in doc['chosen'][section].items():
      figures = [f'{short} {_fmt(m[k])}' for k, short in shown[section] if k in m]
      if figures:
        print(f'chosen, {label}: {name} ' + ', '.join(figures), file=out, flush=True)
  print(f'wrote {os.path.join(workdir, "tune.json")}', file=out, flush=True)
  return doc


def as_sets(argv: list[str]) -> list[str]:
  """`--config.KEY=VALUE` -> `--set=KEY=VALUE`: a setting of every candidate, written as for
  a single run."""
  return [f'--set={a[len("--config."):]}' if a.startswith('--config.') else a for a in argv]


def main(argv):
  experiment, seeds, workdir, command = compare.command_line('tune', argv)
  tune(experiment, FLAGS.grid, seeds, FLAGS.set, workdir, argv=command)


if __name__ == '__main__':
  define_flags()
  sys.argv = as_sets(sys.argv)
  errors.run_main(main)
