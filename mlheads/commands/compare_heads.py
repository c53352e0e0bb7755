"""`./launch.sh compare_heads`: every classification head on each data set's best trunk, three
seeds, with the classical baselines beside them, into results/.

  ./launch.sh compare_heads                  # the full study (hours on 2 CPU cores; resumable)
  ./launch.sh compare_heads --config.quick=True   # reduced: 1 seed, fewer rows and epochs
  ./launch.sh compare_heads --config.only=movie_genres,tweets

For each entry of ENTRIES (a data set, an experiment and the output whose head is varied),
`baseline.run` fits the label prior and the TF-IDF + logistic regression on the same data
settings in WORKDIR/<entry>/baseline/, and `compare.compare` trains the grid
`heads.<output>.kind` = the entry's heads in WORKDIR/<entry>/ (its grid, seed and resume
machinery: rerunning the same command skips finished runs and resumes an interrupted one).
Breadth first: seed 0 of every entry, then seed 1 of every entry, ...; after each entry of
each pass the results folder is rewritten, so a study stopped early shows every data set
with the seeds it finished:
  compare_heads.json   {entry: {method: {metric: {"mean", "std", "n"}}}}: the heads,
                       `sklearn_baseline` and `label_prior`; test metrics of the output
  compare_heads.md     the tables, how they were made, and the chart
  compare_heads.png    test mAP per method and data set
  compare_heads_runs.json   the commands and wall times, entries, settings, every run
  compare_heads/<entry>.md, <entry>_curves.png   each entry's compare.md and curves
`--config.report_only=True` trains nothing and rewrites them from what has finished.
"""

import dataclasses
import json
import os
import shlex
import sys
import time

from absl import flags
from absl import logging
import jax
import ml_collections

from mlheads import console
from mlheads import errors
from mlheads.commands import baseline as baseline_cmd
from mlheads.commands import compare
from mlheads.commands import compare_heads_report as report
from mlheads.state import writers

FLAGS = flags.FLAGS
HEAD_KINDS = ('softmax', 'sigmoid', 'binary_softmax', 'per_class', 'chain', 'powerset')
SEEDS = (0, 1, 2)


@dataclasses.dataclass(frozen=True)
class Entry:
  """One data set of the comparison.

  Attributes:
    name: its key in compare_heads.json.
    experiment: the experiment file it runs.
    output: the output whose head kind is varied and scored.
    trunk: the trunk, in words, for the tables.
    sets: `KEY=VALUE` settings on top of the experiment (the trunk and its training).
    quick: settings added by `--config.quick=True` (fewer rows and epochs).
    skip: (head kind, why) for heads not trained on this entry; the tables say why.
    chosen: how the trunk was chosen (on validation), for the tables.
  """
  name: str
  experiment: str
  output: str
  trunk: str
  sets: tuple[str, ...] = ()
  quick: tuple[str, ...] = ()
  skip: tuple[tuple[str, str], ...] = ()
  chosen: str = ''

  @property
  def heads(self) -> tuple[str, ...]:
    skipped = dict(self.skip)
    return tuple(h for h in HEAD_KINDS if h not in skipped)


# The bag trunk with from_csv's defaults (experiments/from_csv.py: word + hashed bigram +
# hashed character 3-5-gram embeddings (64), averaged, dropout 0.5, the numbers, Dense(256),
# dropout 0.5; AdamW 3e-3, batch 64, 10 epochs) less its wide path: only the sigmoid head can
# add the wide logits to its own (`add`), and every head here gets the same features. Plus
# early stopping (patience 3 epochs on validation mAP; the best epoch is kept either way): the
# bag peaks early (movie_genres: epoch 2 of 10, then overfits), and 18 runs per data set is
# the study's cost.
BAG = ('trunk.kind=bag', 'trunk.embed_dim=64', 'trunk.hidden=(256,)', 'trunk.dropout=0.5',
       'trunk.wide=False', 'optimizer=adamw', 'learning_rate=3e-3', 'weight_decay=0.0',
       'batch_size=64', 'epochs=10', 'patience=3')
BAG_WORDS = ('bag of words + hashed bigrams + hashed char 3-5-grams, Embedding(64) each, '
             'averaged, dropout {dropout}, + {side} -> Dense(256), dropout {dropout} (no wide '
             'path); AdamW 3e-3, batch 64, 10 epochs, patience 3')
# The tweets' bag: BAG with dropout 0.7, chosen by `./launch.sh tune tweets_engagement` on
# validation only (results/tune/tweets_bag_*.json, docs/results.md): binary_softmax head, a
# grid of learning rate {1e-3, 3e-3} x dropout {0.5, 0.7} x embed_dim {64, 128} on seed 0
# (dropout 0.7 the higher validation mAP at every other setting), then the four dropout-0.7
# points on seeds 0-2; the chosen point differs from BAG in the dropout alone.
TWEETS_BAG = tuple('trunk.dropout=0.7' if s == 'trunk.dropout=0.5' else s for s in BAG)

TWEETS_CHOSEN = ('validation macro mAP of seed 0, sigmoid / binary_softmax: bag 0.969 / 0.970 '
                 'against the LSTM (3 epochs) 0.961 / 0.962; then the bag\'s dropout 0.7 '
                 '(validation mAP 0.9714 +- 0.0010 over seeds 0-2, binary_softmax) against 0.5 '
                 '(0.9703, the study\'s 3 seeds), by `./launch.sh tune` over learning rate x '
                 'dropout x embed_dim')
MOVIES_CHOSEN = ('validation macro mAP of seed 0, sigmoid / binary_softmax: bag 0.562 / 0.561 '
                 'against the LSTM (3 epochs) 0.532 / 0.545')

# The best trunk per data set: the one place to change when a better trunk lands. The
# checkpoint kept is the best by validation mAP, the metric compared. The text sets' trunk was
# chosen on validation only, one seed, the sigmoid and binary_softmax heads (`chosen`: the
# figures; docs/results.md): the bag trunk against the experiments' LSTM (3 epochs).
# The tweets train both the seed's headline model (as it is) and the chosen text trunk.
# Cheapest first: the study runs breadth first, so the first entries finish first.
ENTRIES = (
    Entry('digit_mosaics', 'digit_mosaics', 'digits',
          'Conv(32) -> pool -> Conv(64) -> pool -> Dense(128)',
          sets=('best_metric=digits/average_precision_macro',),
          quick=('data.max_rows=1500', 'epochs=1')),
    Entry('tweets', 'tweets_engagement', 'engagement',
          BAG_WORDS.format(side='5 numbers', dropout=0.7),
          sets=('best_metric=engagement/average_precision_macro',) + TWEETS_BAG,
          quick=('data.max_rows=2000', 'epochs=1'),
          chosen=TWEETS_CHOSEN),
    Entry('tweets_headline', 'headline_engagement', 'main',
          "the seed's headline model: Embedding(512) -> LSTM(32) + 5 numbers -> 3 x Dense(64), "
          'aux output (sigmoid, weight 0.2) on the LSTM',
          sets=('best_metric=main/average_precision_macro', 'epochs=3'),
          quick=('data.max_rows=2000', 'epochs=1')),
    Entry('movie_genres', 'movie_genres', 'genres',
          BAG_WORDS.format(side='6 numbers', dropout=0.5),
          sets=('best_metric=genres/average_precision_macro',) + BAG,
          quick=('data.max_rows=3000', 'epochs=1'),
          chosen=MOVIES_CHOSEN,
          skip=(('per_class', 'one whole bag trunk per class is 7 x 33.9M parameters (the '
                 'hashed n-gram tables), each updated densely every step (the row-by-row table '
                 'update needs one shared trunk): 237M parameters and their AdamW moments per '
                 'step on 2 CPU cores'),)),
)
QUICK_SEEDS = (0,)


def settings() -> ml_collections.ConfigDict:
  """The command's settings, given as `--config.KEY=VALUE` like an experiment's."""
  return ml_collections.ConfigDict({
      'quick': False,  # a reduced version: 1 seed, each entry's `quick` settings.
      'only': '',  # comma-separated entries to run; the others are read if finished.
      'report_only': False,  # train nothing: rewrite the tables from the finished entries.
      'seeds': '',  # comma-separated; '' = 0,1,2 (0 with quick).
      'data_dir': '',  # tfds data dir for every run; '' = the tfds default.
      'jobs': 0,  # threads for the logistic regression; 0 = every core.
  })


def define_flags() -> None:
  """Defined only when run as a command (flag names are shared with other CLI modules)."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_dict(
      'config', settings(), 'quick (bool), only (entries, comma-separated: '
      f'{",".join(e.name for e in ENTRIES)}), seeds, data_dir, jobs.', lock_config=True)
  flags.DEFINE_string('workdir', None, 'Runs folder; default runs/compare_heads '
                      '(runs/compare_heads_quick with --config.quick=True).')
  flags.DEFINE_string('results', None, 'Where the tables go; default results/ (WORKDIR/results '
                      'with --config.quick=True).')


@dataclasses.dataclass(frozen=True)
class Plan:
  entries: tuple[Entry, ...]
  seeds: tuple[int, ...]
  quick: bool
  data_dir: str = ''

  def sets(self, entry: Entry) -> list[str]:
    extra = list(entry.quick) if self.quick else []
    return list(entry.sets) + extra + ([f'data.dir={self.data_dir}'] if self.data_dir else [])

  def grid(self, entry: Entry) -> list[str]:
    return [f'heads.{entry.output}.kind={",".join(entry.heads)}']


def select(only: str, entries=ENTRIES) -> tuple[Entry, ...]:
  names = [n.strip() for n in only.split(',') if n.strip()]
  known = {e.name: e for e in entries}
  bad = [n for n in names if n not in known]
  if bad:
    raise errors.UsageError(f'--only: unknown entries {bad}; known: {list(known)}')
  return tuple(known[n] for n in names) if names else tuple(entries)


def check(plan: Plan) -> None:
  """Every run's config and every baseline's, built and checked before anything trains."""
  for e in plan.entries:
    compare.plan(e.experiment, plan.grid(e), list(plan.seeds), plan.sets(e))
    baseline_config(plan, e)


def baseline_config(plan: Plan, entry: Entry):
  config = compare.plan(entry.experiment, [], [plan.seeds[0]], plan.sets(entry))[0]['config']
  return config


def _baseline_key(config_dict: dict) -> dict:
  """What the baselines depend on: the data settings (less the data dir) and each output's
  target; not the trunk, the heads' kinds, the optimizer or the seed."""
  data = {k: v for k, v in config_dict.get('data', {}).items() if k != 'dir'}
  return {'data': data, 'targets': {name: h.get('target')
                                    for name, h in config_dict.get('heads', {}).items()}}


def finished_baseline(plan: Plan, entry: Entry, folder: str) -> dict | None:
  """The metrics.json of the entry's baselines if they finished on the plan's data and
  targets."""
  try:
    with open(os.path.join(folder, 'config.json'), encoding='utf-8') as f:
      same = (_baseline_key(compare.config_json(baseline_config(plan, entry)))
              == _baseline_key(json.load(f)))
    with open(os.path.join(folder, 'metrics.json'), encoding='utf-8') as f:
      done = json.load(f)
  except (OSError, ValueError):
    return None
  return done if same else None


def run_baseline(plan: Plan, entry: Entry, workdir: str, jobs: int, out) -> dict:
  """The entry's baselines (skipped when finished under the same config); its metrics.json."""
  folder = os.path.join(workdir, 'baseline')
  done = finished_baseline(plan, entry, folder)
  if done is not None:
    print(f'{entry.name}: baseline already finished, skipped', file=out, flush=True)
    return done
  print(f'{entry.name}: baseline in {folder} ...', file=out, flush=True)
  progress = lambda line: print(f'  {line}', file=out, flush=True)
  return baseline_cmd.run(baseline_config(plan, entry), folder, jobs=jobs or None,
                          progress=progress)


INVOCATIONS = 'invocations.json'  # in the workdir: every invocation's command and wall time.


def _invocations(workdir: str) -> list[dict]:
  try:
    with open(os.path.join(workdir, INVOCATIONS), encoding='utf-8') as f:
      return list(json.load(f))
  except (OSError, ValueError, TypeError):
    return []


def _committed(results: str, plan: Plan) -> dict:
  """The results folder's compare_heads_runs.json, if it holds a study like the plan's."""
  try:
    with open(os.path.join(results, 'compare_heads_runs.json'), encoding='utf-8') as f:
      doc = json.load(f)
  except (OSError, ValueError):
    return {}
  same = (isinstance(doc, dict) and doc.get('quick') == plan.quick
          and doc.get('seeds') == list(plan.seeds) and isinstance(doc.get('entries'), dict))
  return doc if same else {}


def run(plan: Plan, workdir: str, results: str, *, entries=ENTRIES, jobs: int = 0, argv=None,
        out=sys.stdout) -> dict:
  """Runs the plan's entries (heads, then baselines), rewriting the results after each; the
  other `entries` are read from the workdir where they have finished. Returns
  compare_heads.json.

  Each invocation's command and wall time is kept in WORKDIR/invocations.json, so that the
  tables of a study finished over several invocations (an interruption, then the same command
  again) give the time of all of them.
  """
  check(plan)
  os.makedirs(workdir, exist_ok=True)
  t0 = time.perf_counter()
  earlier = _invocations(workdir)
  this = {'command': argv, 'started_at': time.strftime('%Y-%m-%dT%H:%M:%S'),
          'entries': [e.name for e in plan.entries], 'wall_s': 0.0,
          'cores': len(os.sched_getaffinity(0)), 'cpus': os.cpu_count()}
  say = lambda s: print(s, file=out, flush=True)
  if plan.quick:
    say(f'compare_heads --config.quick=True: seeds {list(plan.seeds)} and, per entry, '
        + '; '.join(f'{e.name}: {", ".join(e.quick)}' for e in plan.entries)
        + ' (a reduced version; the full study is ./launch.sh compare_heads)')

  def write(done):
    this['wall_s'] = time.perf_counter() - t0
    writers.write_json(os.path.join(workdir, INVOCATIONS), earlier + [this])
    return report.write(results, plan, entries, done, earlier + [this],
                        entry_dirs={n: os.path.join(workdir, n) for n in done})

  done = {}
  for e in entries:  # what earlier invocations finished, shown until this one redoes it
    base = finished_baseline(plan, e, os.path.join(workdir, e.name, 'baseline'))
    if base is not None:
      done[e.name] = report.read_entry(e, os.path.join(workdir, e.name), plan, base)
  # An entry whose runs are not in this workdir (a fresh clone: runs/ is not committed) keeps
  # what the results folder already shows, so that redoing one entry keeps the others.
  # Their wall time is that of the invocations the results folder lists.
  committed = _committed(results, plan)
  shown = committed.get('entries', {})
  as_json = lambda e: json.loads(json.dumps(dataclasses.asdict(e)))
  kept = {e.name: shown[e.name] for e in entries  # the same data, heads and settings only
          if e.name not in done and shown.get(e.name, {}).get('entry') == as_json(e)}
  done |= kept
  if kept and not earlier:
    earlier = list(committed.get('invocations', []))
  # Breadth first: every entry's seed 0 (and its baseline), then seed 1, ...: an interrupted
  # study has every head on every data set, with fewer seeds, rather than a few data sets.
  for n in range(1, len(plan.seeds) + 1):
    for e in plan.entries:
      entry_dir = os.path.join(workdir, e.name)
      say(f'== {e.name} ({e.experiment}), seeds {list(plan.seeds[:n])}: heads '
          f'{", ".join(e.heads)} on output {e.output!r}; trunk: {e.trunk}')
      base = run_baseline(plan, e, entry_dir, jobs, out)  # after the first pass: read back
      doc = compare.compare(e.experiment, plan.grid(e), list(plan.seeds[:n]), plan.sets(e),
                            entry_dir, argv=argv, out=out)
      done[e.name] = report.entry_result(e, doc, base)
      write(done)
  say('wrote ' + ', '.join(write(done)))
  return report.table_json(done)


def make_plan(config) -> Plan:
  """The plan of the settings `config` (see `settings`); raises UsageError on a bad one."""
  if config.jobs < 0:
    raise errors.UsageError(f'--config.jobs must be >= 0, got {config.jobs}')
  seeds = (tuple(compare.parse_seeds(config.seeds)) if config.seeds else
           QUICK_SEEDS if config.quick else SEEDS)
  if config.report_only and config.only:
    raise errors.UsageError('--config.report_only=True trains nothing: drop --config.only')
  entries = () if config.report_only else select(config.only)
  return Plan(entries, seeds, config.quick, config.data_dir)


def main(argv):
  if len(argv) > 1:
    raise errors.UsageError(f'unexpected arguments {argv[1:]}; settings go as --config.KEY=VALUE')
  console.quiet()
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  config = FLAGS.config
  plan = make_plan(config)
  workdir = FLAGS.workdir or os.path.join('runs', 'compare_heads_quick' if plan.quick
                                          else 'compare_heads')
  results = FLAGS.results or (os.path.join(workdir, 'results') if plan.quick else 'results')
  # Seeds of one head compile the same programs: a persistent cache compiles each once.
  jax.config.update('jax_compilation_cache_dir', os.path.join(workdir, 'xla_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  command = ['./launch.sh', 'compare_heads'] + [shlex.quote(a) for a in sys.argv[1:]]
  run(plan, workdir, results, jobs=config.jobs, argv=command)


if __name__ == '__main__':
  try:
    define_flags()  # ml_collections parses the --config.KEY=VALUE overrides here
  except (KeyError, AttributeError, TypeError, ValueError) as e:
    while isinstance(e, AttributeError) and e.args and isinstance(e.args[0], Exception):
      e = e.args[0]  # ml_collections wraps the KeyError of an unknown key
    message = ' '.join(str(e.args[0] if isinstance(e, KeyError) and e.args else e).split())
    print(f'error: --config: {message}', file=sys.stderr)
    sys.exit(errors.USAGE_EXIT_CODE)
  errors.run_main(main)
