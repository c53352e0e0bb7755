"""Speed benchmarks: `./launch.sh bench [--cases=headline,per_class,metrics_large,...]`, one JSON
line each.

Add a case by writing `bench_<name>() -> dict | list[dict]` and registering it in `CASES`.

The headline case times the seed's model (5,200,610 parameters) through the real
jitted train step on random data, the way ../shared/bench/keras_headline.sh
times Keras 3 on JAX; with `--keras` it runs that script in the same sitting,
alternating rounds, and prints the ratio of medians.

The stream case (bench_models.py) runs the movie genres training loop fed from the
prepared array_record files and from the same split in memory, alternating rounds.
"""

import json
import os
import statistics
import subprocess
import time

from absl import flags
from absl import logging
import numpy as np

from mlheads import console
from mlheads import errors
from mlheads.commands import bench_models

FLAGS = flags.FLAGS
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def define_flags() -> None:
  """Defined only when run as a command, so library users and tests can import
  several CLI modules that share flag names (--workdir, --output, ...)."""
  flags.DEFINE_list('cases', None, 'Cases to run (default: all).')
  flags.DEFINE_integer('rows', 100_000, 'metrics: rows N.')
  flags.DEFINE_integer('classes', 100, 'metrics: classes K.')
  flags.DEFINE_integer('repeats', 3, 'metrics: timed runs (median).')
  flags.DEFINE_integer('large_rows', 100_000, 'metrics_large: rows N.')
  flags.DEFINE_integer('large_classes', 10_000, 'metrics_large: classes K.')
  flags.DEFINE_integer('large_batch', 1_000, 'metrics_large: rows per batch.')
  flags.DEFINE_list('sampled_classes', ['10000', '50000'], 'sampled: classes K.')
  flags.DEFINE_list('sampled_negatives', ['0', '256', '1024'],
                    'sampled: negatives per example (0: the full loss).')
  flags.DEFINE_list('batch_sizes', ['32', '256'], 'headline: batch sizes.')
  flags.DEFINE_float('seconds', 8.0, 'headline: timed seconds per batch size.')
  flags.DEFINE_float('case_seconds', 4.0, 'per_class, per_class_conv, input: timed seconds '
                    'per variant.')
  flags.DEFINE_integer('rounds', 3, 'headline: alternating rounds (median).')
  flags.DEFINE_bool('keras', False, 'headline: also run the Keras 3 reference and '
                    'print speedup_vs_keras (same sitting, alternating rounds).')
  flags.DEFINE_string(
      'keras_script', os.path.join(_ROOT, '..', 'shared', 'bench', 'keras_headline.sh'),
      'headline: the Keras reference script (default: ../shared/bench beside the repo).')
  flags.DEFINE_integer('stream_rounds', 3, 'stream: alternating rounds (median).')
  flags.DEFINE_integer(
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
  from mlheads.evaluation import metrics  # pylint: disable=g-import-not-at-top
  n, k = FLAGS.rows, FLAGS.classes
  labels, scores = metrics_data(n, k)
  metrics.compute(labels, scores)  # Warm-up: compile.
  times = []
  for _ in range(FLAGS.repeats):
    t0 = time.perf_counter()
    ours = metrics.compute(labels, scores)
    times.append(time.perf_counter() - t0)
  result = {'bench': 'metrics', 'rows': n, 'classes': k,
            'positives': float(labels.mean()),
            'mlheads_s': round(statistics.median(times), 4),
            'mlheads_runs_s': [round(t, 4) for t in times]}
  sk_rows = n if FLAGS.sklearn_rows == 0 else min(FLAGS.sklearn_rows, n)
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


def _reset_peak_rss() -> bool:
  """Resets the kernel's peak-RSS mark of this process (Linux: `5 > /proc/self/clear_refs`),
  so a case's peak is its own, not an earlier case's."""
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False


def _peak_rss_mb() -> float:
  """The process' peak resident memory (VmHWM) in MiB."""
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) / 1024
  import resource  # pylint: disable=g-import-not-at-top
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_metrics_large():
  """The streaming evaluation of N x K SYNTHETIC scores (N = 100,000, K = 10,000 by default:
  a dense float32 score matrix alone would be 4 GB), against a 2 GB bound on peak memory.

  Labels: data/synthetic.py (power-law classes, stored sparse, densified per batch); scores:
  its oracle linear model, made batch by batch. Every metric of metrics.KEYS, exact, and the
  F1-tuned thresholds.
  """
  from mlheads.data import base, synthetic  # pylint: disable=g-import-not-at-top
  from mlheads.evaluation import metrics, streaming  # pylint: disable=g-import-not-at-top
  n, k, b = FLAGS.large_rows, FLAGS.large_classes, FLAGS.large_batch
  c = synthetic.SyntheticConfig(name='bench', rows=n, classes=k)
  x, idx, _ = synthetic.generate(c)
  field = base.Field((k,), 'float32', 'binary', sparse=c.max_labels)
  positives = np.bincount(idx[idx >= 0], minlength=k)
  inv_p = 1.0 / metrics.propensities(positives, n)
  reset = _reset_peak_rss()
  start_mb = _peak_rss_mb()
  t0 = time.perf_counter()
  acc = streaming.Accumulator(k, n, thresholds={'own': 0.5}, inv_propensity=inv_p)
  for lo in range(0, n, b):
    y, m = field.densify({'labels': idx[lo:lo + b]}, 'labels')
    labels, scores, _, valid = metrics.check_inputs(y, synthetic.oracle_scores(c, x[lo:lo + b]),
                                                    0.5, m)
    acc.add(labels, scores, valid)
  rows_s = time.perf_counter() - t0
  result = acc.finish(tune=True)
  total_s = time.perf_counter() - t0
  m = result.metrics['own']
  peak = _peak_rss_mb()
  return {'bench': 'metrics_large', 'rows': n, 'classes': k, 'batch': b,
          'labels_per_row': round(float((idx >= 0).sum(1).mean()), 2),
          'seconds': round(total_s, 1), 'row_pass_s': round(rows_s, 1),
          'class_pass_s': round(total_s - rows_s, 1), 'spilled': not acc.store.in_memory,
          'peak_rss_mb': round(peak), 'rss_before_mb': round(start_mb), 'bound_mb': 2048,
          'within_bound': peak < 2048, 'peak_reset': reset,
          **{key: round(m[key], 4) for key in ('precision_at_1', 'precision_at_5', 'ndcg_at_5',
                                               'psp_at_5', 'average_precision_macro',
                                               'roc_auc_macro', 'average_precision_micro',
                                               'f1_micro')}}


def bench_sampled() -> list[dict]:
  """The synthetic_xml model's train step at K classes: the full sigmoid loss vs sampled
  negatives (model/sampling.py), batch 256, random SYNTHETIC batches; ms per step, medians
  of alternating rounds."""
  import jax  # pylint: disable=g-import-not-at-top
  from experiments import synthetic_xml  # pylint: disable=g-import-not-at-top
  from mlheads import optimizers, sharding, train  # pylint: disable=g-import-not-at-top
  from mlheads.data import base, pipeline, synthetic  # pylint: disable=g-import-not-at-top
  from mlheads.model import model as model_lib  # pylint: disable=g-import-not-at-top
  from mlheads.state import train_state  # pylint: disable=g-import-not-at-top
  rows = []
  for k in (int(x) for x in FLAGS.sampled_classes):
    c = synthetic.SyntheticConfig(name='bench', rows=8 * 256, classes=k)
    x, idx, count = synthetic.generate(c)
    arrays = {'features': x, 'labels': idx, 'labels_count': count}
    fields = {'features': base.Field((c.features,), 'float32', 'features'),
              'labels': base.Field((k,), 'float32', 'binary', sparse=c.max_labels)}
    ds = base.Dataset(name='bench', splits={}, meta={}, inputs={'features': fields['features']},
                      targets={'labels': fields['labels']})
    steps, times = {}, {}
    for m in (int(x) for x in FLAGS.sampled_negatives):
      config = synthetic_xml.get_config()
      config.heads.labels.negatives = m
      model, heads = model_lib.build_model(config, ds)
      parallel = sharding.DataParallel.over_all_devices()
      state = train_state.create(model, optimizers.make(config), 0, pipeline.example_inputs(ds),
                                 parallel.replicated)
      step = train.make_train_step(heads, parallel)
      batches = [parallel.shard(b) for b in pipeline.eval_batches(ds, arrays, 256)]
      state, out = step(state, batches[0])  # compile
      jax.block_until_ready(out)
      steps[m], times[m] = (step, state, batches), []
    for _ in range(FLAGS.rounds):
      for m, (step, state, batches) in steps.items():
        t = time.perf_counter()
        for i in range(10):
          state, out = step(state, batches[i % len(batches)])
        jax.block_until_ready(out)
        times[m].append(1000 * (time.perf_counter() - t) / 10)
        steps[m] = (step, state, batches)
    full = statistics.median(times[0]) if 0 in times else None
    for m, ts in times.items():
      ms = statistics.median(ts)
      rows.append({'bench': 'sampled', 'classes': k, 'negatives': m, 'batch_size': 256,
                   'ms_per_step': round(ms, 1), 'rounds_ms': [round(t, 1) for t in ts],
                   **({'speedup_vs_full': round(full / ms, 2)} if full else {})})
  return rows


def headline_steps_per_s(batch_size: int, seconds: float) -> dict:
  """Times the headline model's train step on random data (as the Keras script does)."""
  import jax  # pylint: disable=g-import-not-at-top
  from experiments import headline  # pylint: disable=g-import-not-at-top
  from mlheads import optimizers, sharding, train  # pylint: disable=g-import-not-at-top
  from mlheads.data import base, pipeline, tweets  # pylint: disable=g-import-not-at-top
  from mlheads.model import model as model_lib  # pylint: disable=g-import-not-at-top
  from mlheads.state import train_state  # pylint: disable=g-import-not-at-top

  config = headline.get_config()
  config.batch_size = batch_size
  fields = tweets.TrumpTweets.fields_for(config.data)
  ds = base.Dataset(name='bench', splits={}, meta={},
                    inputs={k: fields[k] for k in ('tokens', 'extra')},
                    targets={'retweeted': fields['retweeted']})
  model, heads = model_lib.build_model(config, ds)
  parallel = sharding.DataParallel.over_all_devices()
  state = train_state.create(model, optimizers.make(config), 0, pipeline.example_inputs(ds),
                             parallel.replicated)
  step_fn = train.make_train_step(heads, parallel)
  rng = np.random.default_rng(0)
  n = batch_size * 8
  arrays = {'tokens': rng.integers(1, 10_000, size=(n, 100), dtype=np.int32),
            'extra': rng.random((n, 5), dtype=np.float32),
            'retweeted': (rng.random((n, 1)) < 0.5).astype(np.float32)}
  hosts = list(pipeline.eval_batches(ds, arrays, batch_size))
  batches = [parallel.shard(b) for b in hosts]

  def step(state, i):  # as train.py steps: the distinct rows found on the host batch
    return step_fn(state, batches[i % 8], state.host_rows(hosts[i % 8]['inputs']))

  t = time.perf_counter()
  state, scalars = step(state, 0)
  jax.block_until_ready(scalars)
  compile_s = time.perf_counter() - t
  for i in range(1, 8):  # every batch once: each row count compiled before the clock starts
    state, scalars = step(state, i)
  jax.block_until_ready(scalars)
  steps, t = 0, time.perf_counter()
  while time.perf_counter() - t < seconds:
    state, scalars = step(state, steps)
    steps += 1
    if steps % 10 == 0:  # keep the dispatch queue short, so the clock reads finished work
      jax.block_until_ready(scalars)
  jax.block_until_ready(scalars)
  dt = time.perf_counter() - t
  return {'ms_per_step': 1000 * dt / steps, 'compile_s': compile_s,
          'params': int(sum(x.size for x in jax.tree.leaves(state.params))),
          'device': str(jax.devices()[0].platform)}


def _keras_round(batch_sizes, seconds) -> dict[int, float]:
  """ms/step of the Keras reference per batch size, from its JSON lines."""
  cmd = [FLAGS.keras_script, '--batch_sizes', ','.join(map(str, batch_sizes)),
         '--seconds', str(seconds)]
  out = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if out.returncode != 0:
    raise errors.UsageError(f'{FLAGS.keras_script} failed: {out.stderr.strip()[-300:]}')
  rows = [json.loads(l) for l in out.stdout.splitlines() if l.startswith('{')]
  return {r['batch_size']: r['ms_per_step'] for r in rows}


def bench_headline() -> list[dict]:
  """The seed's model: mlheads vs (optionally) Keras 3 on JAX, alternating rounds."""
  sizes = [int(b) for b in FLAGS.batch_sizes]
  ours = {b: [] for b in sizes}
  keras = {b: [] for b in sizes}
  info = {}
  for _ in range(FLAGS.rounds):
    for b in sizes:
      r = headline_steps_per_s(b, FLAGS.seconds)
      ours[b].append(r['ms_per_step'])
      info[b] = r
    if FLAGS.keras:
      for b, ms in _keras_round(sizes, FLAGS.seconds).items():
        keras[b].append(ms)
  rows = []
  for b in sizes:
    ms = statistics.median(ours[b])
    row = {'bench': 'headline', 'batch_size': b, 'params': info[b]['params'],
           'device': info[b]['device'], 'ms_per_step': round(ms, 2),
           'examples_per_s': round(1000 * b / ms, 1), 'compile_s': round(info[b]['compile_s'], 2),
           'rounds_ms': [round(x, 2) for x in ours[b]],
           # The allocator setting moves both steps' times (launch.sh, notes/perf.md); Keras,
           # run as a child of this process, shares it.
           'glibc_tunables': os.environ.get('GLIBC_TUNABLES', '')}
    if keras[b]:
      kms = statistics.median(keras[b])
      row |= {'keras_ms_per_step': round(kms, 2), 'keras_rounds_ms': keras[b],
              'speedup_vs_keras': round(kms / ms, 2)}
    rows.append(row)
  return rows


CASES = {
    'headline': bench_headline,
    'per_class': lambda: bench_models.bench_per_class(FLAGS.case_seconds),
    'per_class_conv': lambda: bench_models.bench_per_class_conv(FLAGS.case_seconds),
    'input': lambda: bench_models.bench_input(FLAGS.case_seconds),
    'stream': lambda: bench_models.bench_stream(FLAGS.stream_rounds),
    'metrics': bench_metrics,
    'metrics_large': bench_metrics_large,
    'sampled': bench_sampled,
}


def main(argv):
  if len(argv) > 1:
    raise errors.UsageError(f'unexpected arguments {argv[1:]}')
  console.quiet()
  if not FLAGS['verbosity'].present:  # the JSON lines, not the runs' logs (--verbosity=0: both)
    logging.set_verbosity(logging.WARNING)
  names = FLAGS.cases or list(CASES)
  unknown = [c for c in names if c not in CASES]
  if unknown:
    raise errors.UsageError(
        f'--cases: unknown {unknown}; known cases: {sorted(CASES)}')
  if FLAGS.keras and 'headline' in names and not os.path.isfile(FLAGS.keras_script):
    raise errors.UsageError(f'--keras_script={FLAGS.keras_script}: no such file (the Keras '
                            'reference, shared/bench/keras_headline.sh: pass its path)')
  for name in names:
    result = CASES[name]()
    for row in result if isinstance(result, list) else [result]:
      print(json.dumps(row), flush=True)


if __name__ == '__main__':
  define_flags()
  errors.run_main(main)
