"""Trains one experiment over a grid of settings and seeds, and tabulates the results.

  ./launch.sh compare EXPERIMENT --grid='heads.genres.kind=sigmoid,softmax' --seeds=0,1,2
      [--set='epochs=3' ...] [--workdir=runs/compare/NAME]

Every run is `train.train_and_evaluate` in this process, in `WORKDIR/<point>/seed<k>`. Every
setting (`--set`, each grid value, the seed) goes through the same parser as
`--config.KEY=VALUE` on the command line (ml_collections' config flags on the locked experiment
config), and every run's config is checked (`train.check_config`) before the first one trains: a
misspelt key or a bad value is one line, exit 2, nothing trained.

A run that finished under the same config (its `compare_run.json` and `metrics.json` are there)
is skipped; an unfinished one resumes from its checkpoints. So rerunning the same command after
an interruption finishes the grid without retraining anything.

Writes WORKDIR/compare.json (every run's metrics, config point, seed, wall and compile time,
parameters, validation curve), WORKDIR/compare.md (per output: mean ± std over seeds, each point
against the best by validation mAP in a paired t-test over seeds) and WORKDIR/curves.png.
docs/compare.md describes the columns.
"""

import contextlib
import json
import os
import re
import shlex
import sys
import time

from absl import flags
from absl import logging
import jax

from mlheads import console
from mlheads import errors
from mlheads import train
from mlheads.commands import compare_report
from mlheads.commands import experiments as experiments_lib
from mlheads.state import writers

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defined only when run as a command, so library users and tests can import
  several CLI modules that share flag names (--workdir, --output, ...)."""
  flags.DEFINE_multi_string(
      'grid', [], "KEY=V1,V2,...: one axis of the grid (repeat for a product). Values are split "
      "on commas outside brackets and quotes, so 'trunk.hidden=(32,),(64,64)' has two values.")
  flags.DEFINE_string('seeds', '0', 'Comma-separated integer seeds (config.seed).')
  flags.DEFINE_multi_string('set', [], 'KEY=VALUE applied to every run (repeatable).')
  flags.DEFINE_string('workdir', None, 'Output folder; default '
                      'runs/compare/<experiment>-<timestamp>.')
  flags.DEFINE_string('experiment', None, 'Experiment name (a file in experiments/); '
                      'launch.sh passes the first argument here.')


RUN_RECORD = 'compare_run.json'  # written into a run's folder when it has finished.


# ----------------------------------------------------------------------------
# Parsing: grid, seeds, settings -> the list of runs.


def split_values(text: str, sep: str = ',') -> list[str]:
  """'a,(1,2),"x,y"' -> ['a', '(1,2)', '"x,y"']: a `sep` inside brackets or quotes stays."""
  out, cur, depth, quote = [], [], 0, ''
  for ch in text:
    if quote:
      quote = '' if ch == quote else quote
    elif ch in '\'"':
      quote = ch
    elif ch in '([{':
      depth += 1
    elif ch in ')]}':
      depth -= 1
    elif ch == sep and depth == 0:
      out.append(''.join(cur).strip())
      cur = []
      continue
    cur.append(ch)
  out.append(''.join(cur).strip())
  if depth or quote:
    raise errors.UsageError(f'unbalanced brackets or quotes in {text!r}')
  return out


def _key_value(text: str, flag: str) -> tuple[str, str]:
  key, eq, value = text.partition('=')
  key = key.strip()
  if key.startswith('config.'):
    key = key[len('config.'):]
  if not eq or not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*', key):
    raise errors.UsageError(f'--{flag}={text!r}: expected KEY=VALUE with a dotted config key, '
                            'e.g. heads.genres.kind=sigmoid')
  if key == 'seed':
    raise errors.UsageError(f'--{flag}={text!r}: give seeds with --seeds=0,1,2')
  return key, value


def parse_grid(grid: list[str]) -> list[tuple[str, list[str]]]:
  """['k=a,b', 'j=1,2'] -> [('k', ['a', 'b']), ('j', ['1', '2'])]; checks the syntax only."""
  axes = []
  for text in grid:
    key, values = _key_value(text, 'grid')
    values = split_values(values)
    if any(not v for v in values):
      raise errors.UsageError(f'--grid={text!r}: an empty value')
    if len(set(values)) != len(values):
      raise errors.UsageError(f'--grid={text!r}: a value is repeated')
    if key in [k for k, _ in axes]:
      raise errors.UsageError(f'--grid: {key} is given twice; list its values once, '
                              'comma-separated')
    axes.append((key, values))
  return axes


def parse_seeds(text: str) -> list[int]:
  try:
    seeds = [int(s) for s in split_values(text)]
  except ValueError:
    raise errors.UsageError(f'--seeds={text!r}: expected comma-separated integers') from None
  if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
    raise errors.UsageError(f'--seeds={text!r}: expected distinct integers >= 0')
  return seeds


def _safe(text: str) -> str:
  return re.sub(r'[^A-Za-z0-9_.+-]+', '_', str(text)).strip('_') or '_'


def point_names(axes) -> list[tuple[str, dict[str, str]]]:
  """The grid's points, in order (product of the axes): (folder name, {key: value}).

  One axis: the value alone ('sigmoid'). Several: 'kind-sigmoid__learning_rate-0.01' (the
  key's last part, or the whole key where two axes share it).
  """
  points = [('default', {})]
  leaves = [k.rsplit('.', 1)[-1] for k, _ in axes]
  for key, values in axes:
    label = key.rsplit('.', 1)[-1] if leaves.count(key.rsplit('.', 1)[-1]) == 1 else key
    new = []
    for name, over in points:
      for v in values:
        part = _safe(v) if len(axes) == 1 else f'{_safe(label)}-{_safe(v)}'
        new.append((part if name == 'default' else f'{name}__{part}', {**over, key: v}))
    points = new
  names = [n for n, _ in points]
  if len(set(names)) != len(names):
    raise errors.UsageError(f'two grid points get the same folder name in {names}; '
                            'use values that differ in letters or digits')
  return points


def experiment_path(name: str) -> str:
  """experiments/NAME.py, checked as launch.sh checks it."""
  return experiments_lib.path(name)


def load_config(experiment: str, overrides: list[tuple[str, str]], what: str = ''):
  """The experiment's locked config with `--config.KEY=VALUE` overrides, parsed by ml_collections'
  config flags exactly as `./launch.sh EXPERIMENT --config.KEY=VALUE` parses them."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  argv = ['compare'] + [f'--config.{k}={v}' for k, v in overrides]
  config = experiments_lib.get_config(experiment)
  fv = flags.FlagValues()
  try:
    # The override flags are made here, from argv: an unknown key fails here, not in fv(argv).
    config_flags.DEFINE_config_dict('config', config, flag_values=fv, lock_config=True,
                                    sys_argv=argv)
    fv(argv)
  except (flags.Error, ValueError, KeyError, AttributeError, TypeError) as e:
    msg = errors.flag_error(e, argv, config)
    raise errors.UsageError(f'{what}: {msg}' if what else msg) from None
  config = fv.config
  config.experiment = experiment
  return config


def plan(experiment: str, grid: list[str], seeds: list[int], sets: list[str]) -> list[dict]:
  """Every run of the comparison, its config built and checked; raises UsageError first.

  Returns [{'point', 'overrides', 'seed', 'dir' (relative), 'config'}] in the order they run:
  point by point, seed by seed.
  """
  fixed = [_key_value(s, 'set') for s in sets]
  axes = parse_grid(grid)
  both = sorted({k for k, _ in fixed} & {k for k, _ in axes})
  if both:
    raise errors.UsageError(f'{", ".join(both)} is in both --set and --grid')
  # Each --set alone first, so that a bad one is named on its own.
  for k, v in fixed:
    load_config(experiment, [(k, v)], f'--set {k}={v}')
  for k, values in axes:
    for v in values:
      load_config(experiment, [(k, v)], f'--grid {k}={v}')
  runs = []
  for name, over in point_names(axes):
    for seed in seeds:
      what = f'{name} seed {seed}'
      settings = [('progress', 'False')] + fixed + list(over.items()) + [('seed', str(seed))]
      config = load_config(experiment, settings, what)
      try:
        train.check_config(config)
      except errors.UsageError as e:
        raise errors.UsageError(f'{what}: {e}') from None
      runs.append({'point': name, 'overrides': dict(over), 'seed': seed,
                   'dir': os.path.join(name, f'seed{seed}'), 'config': config})
  return runs


# ----------------------------------------------------------------------------
# Running.


def config_json(config) -> dict:
  """The config as JSON, less what may change without making it another run."""
  d = json.loads(config.to_json_best_effort())
  d.get('data', {}).pop('dir', None)
  d.pop('progress', None)
  return d


def _finished(run_dir: str, config) -> dict | None:
  """The run record of a run finished under this config, else None."""
  try:
    with open(os.path.join(run_dir, RUN_RECORD), encoding='utf-8') as f:
      record = json.load(f)
    with open(os.path.join(run_dir, 'metrics.json'), encoding='utf-8') as f:
      json.load(f)
  except (OSError, ValueError):
    return None
  return record if record.get('config') == config_json(config) else None


def _read_summary(run_dir: str) -> dict:
  with open(os.path.join(run_dir, 'metrics.json'), encoding='utf-8') as f:
    return json.load(f)


# JAX's own timings of a compilation: tracing to a jaxpr, lowering to MLIR, XLA's compile.
COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration',
                  '/jax/core/compile/jaxpr_to_mlir_module_duration',
                  '/jax/core/compile/backend_compile_duration')


@contextlib.contextmanager
def compile_timer():
  """`{'s': seconds}` JAX spent tracing and compiling inside the block (jax.monitoring), so
  that a run's time can be given without it: compiling dominates small runs and does not
  scale with the data."""
  spent = {'s': 0.0}

  def listen(event, duration, **_):
    if event in COMPILE_EVENTS:
      spent['s'] += duration

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    yield spent
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)


def run_all(runs: list[dict], workdir: str, out=sys.stdout) -> list[dict]:
  """Trains (or skips, or resumes) each run; returns one result dict per run."""
  results = []
  for i, run in enumerate(runs, 1):
    run_dir = os.path.join(workdir, run['dir'])
    head = f'[{i}/{len(runs)}] {run["point"]} seed {run["seed"]}'
    record = _finished(run_dir, run['config'])
    if record is None:
      print(f'{head}: training in {run_dir} ...', file=out, flush=True)
      resumed = os.path.isdir(os.path.join(run_dir, 'checkpoints'))
      t0 = time.perf_counter()
      with compile_timer() as compiling:
        train.train_and_evaluate(run['config'], run_dir)
      record = {'config': config_json(run['config']), 'wall_s': time.perf_counter() - t0,
                'compile_s': compiling['s'], 'resumed': resumed,
                'finished_at': time.strftime('%Y-%m-%dT%H:%M:%S')}
      writers.write_json(os.path.join(run_dir, RUN_RECORD), record)
      how = 'resumed and finished' if resumed else 'done'
    else:
      how = 'already finished, skipped'
    summary = _read_summary(run_dir)
    result = compare_report.run_result(run, summary, record, run_dir)
    results.append(result)
    took = f'{record["wall_s"]:.1f} s' + (f', {record["compile_s"]:.1f} s of it compiling'
                                          if 'compile_s' in record else '')
    print(f'{head}: {how} ({took}): '
          + compare_report.one_line(result), file=out, flush=True)
  return results


def compare(experiment: str, grid: list[str], seeds: list[int], sets: list[str], workdir: str,
            argv: list[str] | None = None, out=sys.stdout) -> dict:
  """Plans, runs and writes compare.json, compare.md and curves.png; returns compare.json."""
  runs = plan(experiment, grid, seeds, sets)
  os.makedirs(workdir, exist_ok=True)
  print(f'compare {experiment}: {len(runs) // len(seeds)} grid point(s) x {len(seeds)} seed(s) '
        f'= {len(runs)} runs in {workdir}', file=out, flush=True)
  results = run_all(runs, workdir, out)
  doc = compare_report.build(experiment, parse_grid(grid), seeds,
                             [_key_value(s, 'set') for s in sets], results, argv)
  written = compare_report.write(workdir, doc)
  print('wrote ' + ', '.join(written), file=out, flush=True)
  return doc


def command_line(command: str, argv) -> tuple[str, list[int], str, list[str]]:
  """What compare and tune share on the command line: (experiment, seeds, workdir, the
  command as typed); checks the experiment and the seeds, and quiets the run logs."""
  if len(argv) > 1:
    raise errors.UsageError(f'unexpected arguments {argv[1:]}; give the experiment first, then '
                            'the flags')
  console.quiet()
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # one progress line per run instead of the run logs.
  experiment = FLAGS.experiment
  if not experiment:
    raise errors.UsageError(f'name the experiment: ./launch.sh {command} EXPERIMENT --grid=...')
  experiment_path(experiment)
  seeds = parse_seeds(FLAGS.seeds)
  workdir = FLAGS.workdir or os.path.join(
      'runs', command, f'{experiment}-{time.strftime("%Y%m%d-%H%M%S")}')
  typed = ['./launch.sh', command, experiment] + [
      shlex.quote(a) for a in sys.argv[1:] if not a.startswith('--experiment=')]
  return experiment, seeds, workdir, typed


def main(argv):
  experiment, seeds, workdir, command = command_line('compare', argv)
  compare(experiment, FLAGS.grid, seeds, FLAGS.set, workdir, argv=command)


if __name__ == '__main__':
  define_flags()
  errors.run_main(main)
