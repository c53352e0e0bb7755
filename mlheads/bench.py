"""Speed benchmarks: `./launch.sh bench [--cases=metrics,...]`, one JSON line each.

Add a case by writing `bench_<name>() -> dict` and registering it in `CASES`.
"""

import json
import statistics
import time

from absl import flags
import numpy as np

from mlheads import errors

_CASES = flags.DEFINE_list('cases', None, 'Cases to run (default: all).')
_ROWS = flags.DEFINE_integer('rows', 100_000, 'metrics: rows N.')
_CLASSES = flags.DEFINE_integer('classes', 100, 'metrics: classes K.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'metrics: timed runs (median).')
_SKLEARN_ROWS = flags.DEFINE_integer(
    'sklearn_rows', 0,
    'metrics: time scikit-learn on the first this many rows and extrapolate '
    'linearly to --rows (0: all rows, no extrapolation; -1: skip sklearn).')


def metrics_data(rows, classes, seed=0):
  """Labels `[rows, classes]` with ~5% positives; scores with some ties.

  Scores depend on the label (an informative model), and a fifth of them are
  rounded to 2 decimals so that tie groups exist in every row and column.
  """
  rng = np.random.default_rng(seed)
  labels = (rng.random((rows, classes)) < 0.05).astype(np.int8)
  noise = rng.random((rows, classes), dtype=np.float32)
  scores = np.clip(0.6 * noise + 0.4 * labels * rng.random(
      (rows, classes), dtype=np.float32), 0, 1).astype(np.float32)
  rounded = rng.random((rows, classes)) < 0.2
  scores = np.where(rounded, np.round(scores, 2), scores).astype(np.float32)
  return labels, scores


def sklearn_metrics(labels, scores, threshold=0.5):
  """The scikit-learn equivalents of `mlheads.metrics.compute`'s keys.

  (precision_at_k and one_error have no scikit-learn equivalent.)
  """
  from sklearn import metrics as skm  # pylint: disable=g-import-not-at-top
  pred = (scores > threshold).astype(np.int8)
  out = {
      'hamming_loss': skm.hamming_loss(labels, pred),
      'subset_accuracy': skm.accuracy_score(labels, pred),
  }
  for avg in ('micro', 'macro', 'samples'):
    p, r, f, _ = skm.precision_recall_fscore_support(
        labels, pred, average=avg, zero_division=0)
    out |= {f'precision_{avg}': p, f'recall_{avg}': r, f'f1_{avg}': f}
  pos = labels.sum(0)
  kept = (pos > 0) & (pos < labels.shape[0])
  out['average_precision_macro'] = skm.average_precision_score(
      labels[:, kept], scores[:, kept], average='macro')
  out['average_precision_micro'] = skm.average_precision_score(
      labels, scores, average='micro')
  out['roc_auc_macro'] = skm.roc_auc_score(
      labels[:, kept], scores[:, kept], average='macro')
  out['roc_auc_micro'] = skm.roc_auc_score(labels, scores, average='micro')
  out['label_ranking_average_precision'] = (
      skm.label_ranking_average_precision_score(labels, scores))
  out['coverage_error'] = skm.coverage_error(labels, scores)
  out['label_ranking_loss'] = skm.label_ranking_loss(labels, scores)
  return {k: float(v) for k, v in out.items()}


def bench_metrics():
  """mlheads.metrics.compute vs scikit-learn on 100,000 x 100 (default)."""
  from mlheads import metrics  # pylint: disable=g-import-not-at-top
  n, k = _ROWS.value, _CLASSES.value
  labels, scores = metrics_data(n, k)
  metrics.compute(labels, scores)  # Warm-up: compile.
  times = []
  for _ in range(_REPEATS.value):
    t0 = time.perf_counter()
    ours = metrics.compute(labels, scores)
    times.append(time.perf_counter() - t0)
  result = {'bench': 'metrics', 'rows': n, 'classes': k,
            'positives': float(labels.mean()),
            'mlheads_s': round(statistics.median(times), 4),
            'mlheads_runs_s': [round(t, 4) for t in times]}
  sk_rows = n if _SKLEARN_ROWS.value == 0 else min(_SKLEARN_ROWS.value, n)
  if sk_rows > 0:
    sub_l, sub_s = labels[:sk_rows], scores[:sk_rows]
    t0 = time.perf_counter()
    ref = sklearn_metrics(sub_l, sub_s)
    sk_s = (time.perf_counter() - t0) * n / sk_rows
    ours_sub = ours if sk_rows == n else metrics.compute(sub_l, sub_s)
    diff = {key: abs(ours_sub[key] - v) for key, v in ref.items()}
    worst = max(diff, key=diff.get)
    result |= {
        'sklearn_s': round(sk_s, 3),
        'sklearn_rows': sk_rows,
        'sklearn_extrapolated': sk_rows != n,
        'speedup_vs_sklearn': round(sk_s / result['mlheads_s'], 1),
        'max_abs_diff_vs_sklearn': diff[worst],
        'worst_key': worst,
    }
  return result


CASES = {'metrics': bench_metrics}


def main(argv):
  if len(argv) > 1:
    raise errors.UsageError(f'unexpected arguments {argv[1:]}')
  names = _CASES.value or list(CASES)
  unknown = [c for c in names if c not in CASES]
  if unknown:
    raise errors.UsageError(
        f'--cases: unknown {unknown}; known cases: {sorted(CASES)}')
  for name in names:
    print(json.dumps(CASES[name]()), flush=True)


if __name__ == '__main__':
  errors.run_main(main)
