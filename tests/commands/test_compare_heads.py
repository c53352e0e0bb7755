"""mlheads.compare_heads: the plan, its checks, and one tiny study end to end (two heads, two
seeds and the baselines on the tiny headline model), its tables, a rerun and a report-only run."""

import dataclasses
import json
import os

from matplotlib import image
import numpy as np
import pytest

from conftest import run_cli
from mlheads import errors
from mlheads import train
from mlheads.commands import baseline as baseline_cmd
from mlheads.commands import compare_heads
from mlheads.commands import compare_heads_report as report
from test_compare import tiny_sets

HEADS = ('softmax', 'sigmoid')  # the tiny study's heads (test_compare compiles the same two)
SEEDS = (0, 1)
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _tiny_entry(data_dir: str) -> compare_heads.Entry:
  skip = tuple((h, 'not in the tiny test') for h in compare_heads.HEAD_KINDS if h not in HEADS)
  return compare_heads.Entry('tiny', 'headline', 'main', 'tiny headline trunk',
                             sets=tuple(tiny_sets(data_dir)), skip=skip,
                             chosen='the only trunk tried')


@pytest.fixture(scope='module')
def study(tmp_path_factory):
  root = tmp_path_factory.mktemp('compare_heads')
  entry = _tiny_entry(str(root / 'tfds'))
  plan = compare_heads.Plan((entry,), SEEDS, quick=False)
  workdir, results = str(root / 'runs'), str(root / 'results')
  with open(os.devnull, 'w') as devnull:
    table = compare_heads.run(plan, workdir, results, entries=(entry,), jobs=1,
                              argv=['./launch.sh', 'compare_heads'], out=devnull)
  return entry, plan, workdir, results, table


# ----------------------------------------------------------------------------
# The plan and its checks (nothing trains).


def test_every_entry_of_the_study_and_of_quick_is_a_valid_config():
  """Each run of the full and the quick study is built and checked as it would run."""
  for quick in (False, True):
    compare_heads.check(compare_heads.Plan(compare_heads.ENTRIES, (0,), quick))
  for e in compare_heads.ENTRIES:
    assert set(e.heads) | set(dict(e.skip)) == set(compare_heads.HEAD_KINDS)
    assert {s.split('=')[0] for s in e.quick} >= {'data.max_rows', 'epochs'}
    assert f'best_metric={e.output}/average_precision_macro' in e.sets  # chosen on validation
    if any(s.startswith('trunk.kind=') for s in e.sets):  # not the experiment's own trunk:
      assert 'validation' in e.chosen, e.name  # the tables say how it was chosen


def test_the_tweets_bag_is_bag_with_the_tuned_dropout_and_the_tables_say_so():
  """The tuned tweets trunk changes one setting of BAG, and its words name the right rate."""
  tweets = next(e for e in compare_heads.ENTRIES if e.name == 'tweets')
  changed = set(compare_heads.TWEETS_BAG) ^ set(compare_heads.BAG)
  assert changed == {'trunk.dropout=0.5', 'trunk.dropout=0.7'}
  config = compare_heads.baseline_config(
      compare_heads.Plan((tweets,), (0,), quick=False), tweets)
  assert config.trunk.kind == 'bag' and config.trunk.dropout == 0.7
  assert 'dropout 0.7' in tweets.trunk and 'dropout 0.5' not in tweets.trunk
  assert 'tune' in tweets.chosen

def test_bad_settings_are_one_line_usage_errors():
  config = compare_heads.settings()
  config.only = 'movie_genres,nope'
  with pytest.raises(errors.UsageError, match="unknown entries \\['nope'\\]"):
    compare_heads.make_plan(config)
  config.only, config.seeds = '', '1,1'
  with pytest.raises(errors.UsageError, match='distinct'):
    compare_heads.make_plan(config)
  config.seeds, config.report_only, config.only = '', True, 'tweets'
  with pytest.raises(errors.UsageError, match='report_only'):
    compare_heads.make_plan(config)
  config.only = ''
  assert compare_heads.make_plan(config).entries == ()
  config.report_only, config.quick = False, True
  plan = compare_heads.make_plan(config)
  assert plan.seeds == compare_heads.QUICK_SEEDS and plan.entries == compare_heads.ENTRIES


@pytest.mark.slow
def test_the_cli_rejects_a_misspelt_setting_in_one_line(tmp_path):
  proc = run_cli('-m', 'mlheads.commands.compare_heads', '--config.quik=True',
                 f'--workdir={tmp_path / "w"}', timeout=120)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().splitlines() == [
      'error: --config: \'quik\' Did you mean "quick" instead of "quik"?']
  assert not (tmp_path / 'w').exists()


def test_the_best_head_is_chosen_on_validation_not_test():
  def method(val, test):
    return {'validation_average_precision_macro': {'mean': val},
            'average_precision_macro': {'mean': test}}
  methods = {'sigmoid': method(0.7, 0.9), 'chain': method(0.8, 0.6),
             'sklearn_baseline': method(0.95, 0.95), 'label_prior': method(0.99, 0.99)}
  assert report.best_head(methods) == 'chain'


def test_wall_time_counts_invocations_that_overlap_once():
  def inv(start, wall_s):
    return {'started_at': f'2026-12-01T{start}', 'wall_s': wall_s}
  # 20:00-20:10 and 20:05-20:20 overlap (20 min together); 21:00-21:01 apart.
  invocations = [inv('20:05:00', 900), inv('21:00:00', 60), inv('20:00:00', 600)]
  assert report.elapsed_s(invocations) == pytest.approx(21 * 60)
  assert report.elapsed_s(invocations[:1]) == 900
  assert report.elapsed_s([]) == 0


# ----------------------------------------------------------------------------
# The tiny study.


def _run_metrics(workdir, head, seed):
  with open(os.path.join(workdir, 'tiny', head, f'seed{seed}', 'metrics.json')) as f:
    return json.load(f)


def test_json_has_every_head_and_both_baselines_with_mean_and_std(study):
  entry, _, workdir, results, table = study
  with open(os.path.join(results, 'compare_heads.json')) as f:
    written = json.load(f)
  assert written == json.loads(json.dumps(table))
  assert list(written) == ['tiny']
  assert set(written['tiny']) == set(HEADS) | {'sklearn_baseline', 'label_prior'}
  for method, metrics in written['tiny'].items():
    for key in ('average_precision_macro', 'f1_micro', 'f1_macro', 'hamming_loss',
                'subset_accuracy'):
      assert set(metrics[key]) >= {'mean', 'std'}, (method, key)
    assert (metrics['train_s']['mean'] is None) == (method == 'label_prior'), method
  for head in HEADS:
    for key, section in (('average_precision_macro', 'test'), ('hamming_loss', 'test'),
                         ('validation_average_precision_macro', 'validation')):
      got = [_run_metrics(workdir, head, s)[section][entry.output][key.replace('validation_', '')]
             for s in SEEDS]
      assert written['tiny'][head][key]['mean'] == pytest.approx(np.mean(got))
      assert written['tiny'][head][key]['std'] == pytest.approx(np.std(got, ddof=1))
  with open(os.path.join(workdir, 'tiny', 'baseline', 'metrics.json')) as f:
    base = json.load(f)
  assert written['tiny']['sklearn_baseline']['average_precision_macro']['mean'] == (
      base['test']['main']['average_precision_macro'])
  assert written['tiny']['label_prior']['subset_accuracy']['mean'] == (
      base['label_prior']['test']['main']['subset_accuracy'])
  assert written['tiny']['sklearn_baseline']['average_precision_macro']['std'] is None


def test_markdown_shows_the_command_the_numbers_the_skipped_heads_and_the_chart(study):
  entry, _, _, results, table = study
  with open(os.path.join(results, 'compare_heads.md')) as f:
    md = f.read()
  assert './launch.sh compare_heads' in md and 'Wall time:' in md
  ap = table['tiny']['sigmoid']['average_precision_macro']
  assert f'{ap["mean"]:.3f} ± {ap["std"]:.3f}' in md
  lr = table['tiny']['sklearn_baseline']['average_precision_macro']['mean']
  assert f'| `sklearn_baseline` | {lr:.3f} |' in md
  assert '(best on val)' in md
  assert f'Trunk chosen on validation: {entry.chosen}.' in md
  for head, why in entry.skip:
    assert f'`{head}`: not trained here: {why}.' in md
  with open(os.path.join(results, 'compare_heads.png'), 'rb') as f:
    assert f.read(8) == PNG_MAGIC
  assert image.imread(os.path.join(results, 'compare_heads.png')).shape[0] > 100
  assert os.path.exists(os.path.join(results, 'compare_heads', 'tiny.md'))
  with open(os.path.join(results, 'compare_heads_runs.json')) as f:
    runs = json.load(f)
  assert len(runs['entries']['tiny']['runs']) == len(HEADS) * len(SEEDS)
  assert runs['missing'] == []


def test_a_rerun_trains_nothing_and_report_only_reads_what_finished(study, monkeypatch):
  entry, plan, workdir, results, table = study

  def refuse(*_, **__):
    raise AssertionError('trained again')

  monkeypatch.setattr(train, 'train_and_evaluate', refuse)
  monkeypatch.setattr(baseline_cmd, 'run', refuse)
  with open(os.devnull, 'w') as devnull:
    again = compare_heads.run(plan, workdir, results, entries=(entry,),
                              argv=['./launch.sh', 'compare_heads'], out=devnull)
    assert again == table
    only_report = compare_heads.Plan((), plan.seeds, quick=False)
    assert compare_heads.run(only_report, workdir, results, entries=(entry,),
                             out=devnull) == table
    # Baselines finished, no head yet (a study stopped early): the baselines alone are shown.
    baselines_only = {'tiny': {m: table['tiny'][m] for m in ('sklearn_baseline', 'label_prior')}}
    doc = os.path.join(workdir, 'tiny', 'compare.json')
    os.rename(doc, doc + '.away')
    assert compare_heads.run(only_report, workdir, results, entries=(entry,),
                             out=devnull) == baselines_only
    os.rename(doc + '.away', doc)
    with open(os.path.join(results, 'compare_heads.md')) as f:
      md = f.read()
    assert '**No head has finished a pass here yet**' in md
    # The resumed command is listed once, though each invocation counts in the wall time.
    blocks = md.split('Wall time:')[0].split('```')[1::2]
    assert blocks and len(blocks) == len(set(blocks))
    # Other seeds: the heads' runs are not those asked for; the baselines do not depend on them.
    other = compare_heads.Plan((), (5,), quick=False)
    assert compare_heads.run(other, workdir, results, entries=(entry,),
                             out=devnull) == baselines_only
    # Other data: nothing finished.
    moved = dataclasses.replace(entry, sets=entry.sets + ('data.max_rows=200',))
    assert compare_heads.run(only_report, workdir, results, entries=(moved,), out=devnull) == {}
  with open(os.path.join(results, 'compare_heads.md')) as f:
    assert '**Not finished yet**: tiny.' in f.read()
  with open(os.path.join(workdir, compare_heads.INVOCATIONS)) as f:
    assert len(json.load(f)) == 6


def test_a_new_workdir_keeps_the_entries_the_results_folder_shows(study, tmp_path):
  """A fresh clone has results/ but no runs/: redoing one entry keeps the others' rows."""
  entry, plan, workdir, _, table = study
  kept = tmp_path / 'results'
  only_report = compare_heads.Plan((), plan.seeds, quick=False)
  with open(os.devnull, 'w') as devnull:
    # The results folder of the finished study (another test rewrites the shared one).
    assert compare_heads.run(only_report, workdir, str(kept), entries=(entry,),
                             out=devnull) == table
    with open(kept / 'compare_heads_runs.json') as f:
      runs = json.load(f)
    assert compare_heads.run(only_report, str(tmp_path / 'runs'), str(kept), entries=(entry,),
                             out=devnull) == table
    with open(kept / 'compare_heads_runs.json') as f:  # their wall time goes with them
      assert json.load(f)['invocations'][:len(runs['invocations'])] == runs['invocations']
    # Not for an entry whose settings have changed, nor for other seeds.
    moved = dataclasses.replace(entry, sets=entry.sets + ('data.max_rows=200',))
    assert compare_heads.run(only_report, str(tmp_path / 'runs2'), str(kept), entries=(moved,),
                             out=devnull) == {}
    with open(kept / 'compare_heads_runs.json', 'w') as f:
      json.dump(runs, f)
    other = compare_heads.Plan((), (5,), quick=False)
    assert compare_heads.run(other, str(tmp_path / 'runs3'), str(kept), entries=(entry,),
                             out=devnull) == {}
