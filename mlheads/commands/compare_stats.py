"""Which grid points differ from the reference point by more than seed noise: paired tests.

Per output, the reference is the point with the best mean validation mAP (the evaluated
checkpoint's; chosen on validation, never on test). Every other point's test mAP is compared
with the reference's seed by seed: runs with the same seed share the initialization draw and
the data order (the split is fixed), so the per-seed differences are paired. The test is a
paired t-test on those differences (`scipy.stats.ttest_rel`, two-sided), with the 95% t interval
of their mean, and Holm's step-down correction over the points compared (the family: one
output's comparisons against its reference). A difference is significant when its Holm p-value
is below 0.05. It needs at least 2 seeds that both points ran; with fewer there is no test.
"""

import numpy as np
from scipy import stats as scipy_stats

ALPHA = 0.05
METRIC = 'average_precision_macro'


def _finite(x) -> bool:
  return isinstance(x, (int, float)) and np.isfinite(x)


def paired(diffs: np.ndarray) -> tuple[float, list[float], float]:
  """(mean, 95% t interval, two-sided p) of paired differences `[n]`, n >= 2.

  Differences without spread give p 1 when they are all 0, else 0 (every seed moved the
  same way by the same amount), and a zero-width interval; scipy would return NaN.
  """
  n, mean = len(diffs), float(np.mean(diffs))
  sd = float(np.std(diffs, ddof=1))
  if sd == 0:
    return mean, [mean, mean], 1.0 if mean == 0 else 0.0
  half = float(scipy_stats.t.ppf(0.975, n - 1)) * sd / np.sqrt(n)
  p = float(scipy_stats.ttest_1samp(diffs, 0.0).pvalue)  # = ttest_rel of the two series
  return mean, [mean - half, mean + half], p


def holm(pvalues: list[float]) -> list[float]:
  """Holm's step-down adjusted p-values, in the input order."""
  m, out, running = len(pvalues), [0.0] * len(pvalues), 0.0
  for rank, i in enumerate(np.argsort(pvalues, kind='stable')):
    running = max(running, min(1.0, (m - rank) * pvalues[i]))
    out[i] = running
  return out


def against_reference(results: list[dict], out: str, points: list[str]) -> dict:
  """{'reference', 'metric', 'alpha', 'comparisons': [{'point', 'n', 'mean_diff', 'ci95',
  'p', 'p_holm', 'significant'}], 'note'} for output `out`; comparisons is empty (and
  'note' says why) when there is nothing to test."""
  def by_seed(point, section, key):
    return {r['seed']: r[section].get(out, {}).get(key) for r in results if r['point'] == point}

  val = {p: [v for v in by_seed(p, 'validation', METRIC).values() if _finite(v)] for p in points}
  ranked = [p for p in points if val[p]]
  doc = {'reference': None, 'metric': f'test/{METRIC}', 'alpha': ALPHA,
         'method': 'paired t-test over seeds, Holm-corrected', 'comparisons': [], 'note': ''}
  if not ranked:
    doc['note'] = 'no validation mAP to choose a reference by'
    return doc
  ref = max(ranked, key=lambda p: np.mean(val[p]))
  doc['reference'] = ref
  ref_test = by_seed(ref, 'test', METRIC)
  rows = []
  for p in points:
    if p == ref:
      continue
    test = by_seed(p, 'test', METRIC)
    seeds = sorted(s for s in test if _finite(test[s]) and _finite(ref_test.get(s)))
    if len(seeds) >= 2:
      mean, ci, pv = paired(np.array([test[s] - ref_test[s] for s in seeds]))
      rows.append({'point': p, 'n': len(seeds), 'mean_diff': mean, 'ci95': ci, 'p': pv})
  if not rows:
    doc['note'] = ('one seed: no spread, so no test of differences; run --seeds=0,1,2 to '
                   'tell differences from seed noise' if len(points) > 1 else 'one point')
    return doc
  for row, adjusted in zip(rows, holm([r['p'] for r in rows])):
    row['p_holm'] = adjusted
    row['significant'] = adjusted < ALPHA
  doc['comparisons'] = rows
  return doc
