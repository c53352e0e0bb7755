"""compare's statistics without training: the paired test against scipy, Holm's correction, the
reference chosen on validation, one-seed tables, and the compile timer."""

import jax
import numpy as np
import pytest
from scipy import stats as scipy_stats

from mlheads.commands import compare
from mlheads.commands import compare_report
from mlheads.commands import compare_stats


def _result(point, seed, val_map, test_map, wall=10.0, compile_s=4.0):
  m = lambda v: {'genres': {'average_precision_macro': v, 'roc_auc_macro': 0.7, 'f1_micro': 0.5,
                            'f1_macro': 0.4, 'subset_accuracy': 0.2, 'loss': 0.3}}
  return {'point': point, 'seed': seed, 'dir': f'{point}/seed{seed}', 'overrides': {},
          'wall_s': wall, 'compile_s': compile_s, 'run_s': wall - compile_s, 'resumed': False,
          'parameters': 100, 'steps': 10, 'test': m(test_map), 'test_tuned': m(test_map),
          'validation': m(val_map), 'curves': {'genres': {
              'epoch': [1, 2], 'average_precision_macro': [val_map - 0.1, val_map],
              'roc_auc_macro': [0.6, 0.7], 'loss': [0.5, 0.4]}}}


def test_paired_test_equals_scipy_ttest_rel_and_its_interval():
  rng = np.random.default_rng(0)
  a, b = rng.random(5), rng.random(5)
  mean, ci, p = compare_stats.paired(a - b)
  ref = scipy_stats.ttest_rel(a, b)
  assert p == pytest.approx(ref.pvalue, rel=1e-12)
  assert mean == pytest.approx(np.mean(a - b))
  np.testing.assert_allclose(ci, ref.confidence_interval(0.95), rtol=1e-10)
  # No spread: identical runs are not different; a constant shift is.
  assert compare_stats.paired(np.zeros(3))[2] == 1.0
  assert compare_stats.paired(np.full(3, 0.01))[2] == 0.0


def test_holm_matches_the_step_down_rule():
  got = compare_stats.holm([0.01, 0.04, 0.03, 0.5])
  # sorted: 0.01*4=0.04, 0.03*3=0.09, 0.04*2=0.08 -> max so far 0.09, 0.5*1=0.5
  np.testing.assert_allclose(got, [0.04, 0.09, 0.09, 0.5])
  assert compare_stats.holm([0.6, 0.6]) == [1.0, 1.0]


def test_reference_is_chosen_on_validation_and_differences_are_paired_by_seed():
  # 'b' is best on test, 'a' on validation: the reference is 'a'. 'c' is far below on every
  # seed (significant); 'b' differs by seed noise.
  results = []
  for seed, noise in zip((0, 1, 2), (0.01, -0.012, 0.004)):
    results += [_result('a', seed, 0.90, 0.80 + noise), _result('b', seed, 0.85, 0.801 - noise),
                _result('c', seed, 0.70, 0.60 + noise + 0.001 * seed)]
  doc = compare_stats.against_reference(results, 'genres', ['a', 'b', 'c'])
  assert doc['reference'] == 'a'
  rows = {r['point']: r for r in doc['comparisons']}
  diffs_b = [0.801 - n - (0.80 + n) for n in (0.01, -0.012, 0.004)]
  assert rows['b']['mean_diff'] == pytest.approx(np.mean(diffs_b))
  assert rows['b']['n'] == 3 and not rows['b']['significant']
  assert rows['c']['significant'] and rows['c']['ci95'][1] < 0
  assert rows['c']['p_holm'] >= rows['c']['p']


def test_one_seed_says_so_in_the_tables_and_tests_nothing():
  results = [_result('a', 0, 0.9, 0.8), _result('b', 0, 0.8, 0.7)]
  doc = compare_report.build('movie_genres', [('heads.genres.kind', ['a', 'b'])], [0], [],
                             results)
  assert doc['paired']['genres']['comparisons'] == []
  assert 'one seed' in doc['paired']['genres']['note']
  md = compare_report.markdown(doc)
  assert 'One seed (0): each cell is a single run' in md
  assert 'No test: one seed' in md
  assert '±' not in md.split('### Test')[1].split('###')[0]  # no spread shown


def test_several_seeds_get_a_paired_table_and_time_without_compiling():
  results = [_result(p, s, v + 0.01 * s, v - 0.1 + 0.01 * s, wall=10 + s)
             for p, v in (('a', 0.9), ('b', 0.8)) for s in (0, 1, 2)]
  doc = compare_report.build('movie_genres', [('heads.genres.kind', ['a', 'b'])], [0, 1, 2],
                             [], results)
  md = compare_report.markdown(doc)
  assert 'Against `a` (best mean validation mAP)' in md and '| `b` | -0.1000 |' in md
  run_s = doc['summary']['genres']['a']['run/run_s']
  assert run_s['mean'] == pytest.approx(np.mean([6, 7, 8]))
  assert doc['summary']['genres']['a']['run/compile_s']['mean'] == pytest.approx(4.0)


def test_compile_timer_counts_compiling_not_running():
  f = jax.jit(lambda x: (x * 2 + 1).sum())
  with compare.compile_timer() as first:
    f(np.ones(7, np.float32)).block_until_ready()
  with compare.compile_timer() as again:
    f(np.ones(7, np.float32)).block_until_ready()  # cached: nothing compiles
  assert first['s'] > 0 and again['s'] == 0
