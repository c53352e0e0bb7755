"""Run report: WORKDIR/report.md (per-output, @k, calibration and per-class tables) and
PNG plots under WORKDIR/plots/ (learning curves, PR curves, reliability diagrams,
regression scatters).

Per-class numbers come from the test split's streaming evaluation (runner.report_details)
or, given whole arrays, from `metrics.per_class`: the same conventions either way (masks,
ties, NaN where undefined); undefined values print as `n/a`, never as 0. Every column
names the threshold it predicts at: each head's own (`@0.5`; a softmax over C classes
`@1/C`), from the summary's `default_thresholds`, or `@tuned` (per-class thresholds tuned
on validation). Beyond MAX_CLASS_ROWS classes the table shows the most frequent ones and
WORKDIR/per_class_<output>.csv holds them all.
"""

import csv
import os
import re

import numpy as np

from mlheads.evaluation import markdown
from mlheads.evaluation import metrics
from mlheads.evaluation import plots
from mlheads.state import writers

HEADLINE = {
    'average_precision_macro': 'mAP (macro AP)', 'f1_micro': 'F1 micro',
    'f1_macro': 'F1 macro', 'roc_auc_macro': 'ROC AUC macro',
    'label_ranking_average_precision': 'LRAP',
    'subset_accuracy': 'subset accuracy (rows all right)',
    'label_accuracy': 'label accuracy (1 − Hamming loss)',
    'precision_at_1': 'P@1', 'precision_at_5': 'P@5', 'ndcg_at_5': 'nDCG@5',
    'psp_at_5': 'PSP@5', 'loss': 'loss'}
AT_K = {'precision': 'P@k', 'recall': 'R@k', 'ndcg': 'nDCG@k', 'psp': 'PSP@k',
        'psndcg': 'PSnDCG@k'}
MAX_CLASS_ROWS = 50
PR_CLASSES = plots.MAX_PR_PANELS  # the classes whose columns the evaluation keeps for PR curves


def default_threshold(summary, out) -> float:
  """The head's own decision threshold (0.5 where the summary does not say)."""
  t = (summary.get('default_thresholds') or {}).get(out)
  return 0.5 if t is None else float(t)


def _at(t: float) -> str:
  return f'@{t:.3g}'


def _splits(summary, out) -> dict[str, str]:
  """Column headers of an output's metric tables: each says its threshold."""
  at = _at(default_threshold(summary, out))
  return {'test': f'test {at}', 'test_tuned': 'test @tuned', 'validation': f'validation {at}'}


def write(workdir: str, summary: dict, predictions: dict,
          class_names: dict[str, list[str]]) -> list[str]:
  """Writes WORKDIR/report.md and WORKDIR/plots/*.png; returns the paths.

  Args:
    workdir: the run directory; metrics.jsonl there (if any) gives the
      learning curves.
    summary: {'experiment', 'steps', 'parameters', 'validation', 'test',
      'test_tuned', 'thresholds'} as saved in metrics.json; any of the
      metric sections may be missing, a value may be None (undefined).
    predictions: {'test': {output: details}}: a binary output's
      `runner.report_details` ({'per_class': {'own', 'tuned'}, 'columns',
      'reliability'}) or whole arrays {'scores': [n, K], 'labels': [n, K],
      'mask': [n, K] (optional)}; a regression output's {'arrays': ...} or
      whole arrays.
    class_names: {output: [K names]}.

  Returns:
    Paths written: report.md first, then the PNGs.
  """
  plot_dir = os.path.join(workdir, 'plots')
  os.makedirs(plot_dir, exist_ok=True)
  written = []
  test_preds = predictions.get('test', {})
  outputs = _outputs(summary, predictions)
  name = summary.get('experiment', os.path.basename(os.path.abspath(workdir)))
  params = summary.get('parameters')
  params = f'{params:,}' if isinstance(params, int) else markdown.fmt(params)
  md = [f'# Run report: {name}', '',
        f'steps {markdown.fmt(summary.get("steps"))} · parameters {params} · '
        f'outputs: {", ".join(f"`{o}`" for o in outputs) or "none"}', '',
        '`@t`: labels predicted where score > t, the head\'s own threshold '
        '(0.5; 1/C for a softmax over C classes). `@tuned`: per-class '
        'thresholds tuned on validation, applied to test. `n/a`: undefined '
        '(e.g. AP of a class without a positive) or not reported.', '']

  md += ['## Learning curves', '']
  records, bad_lines = writers.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  path = os.path.join(plot_dir, 'learning_curves.png')
  if plots.plot_learning_curves(records, path):
    written.append(path)
    md += ['![Learning curves](plots/learning_curves.png)', '']
  else:
    md += ['No learning curves: metrics.jsonl is missing, empty or holds no '
           'loss values.', '']
  if bad_lines:
    md += [f'({bad_lines} unreadable line(s) of metrics.jsonl skipped.)', '']

  for out in outputs:
    names = list(class_names.get(out, []))
    pred = test_preds.get(out)
    stem = re.sub(r'[^A-Za-z0-9_.-]', '_', out)
    section = (_regression_section if _is_regression(out, summary, predictions)
               else _binary_section)
    lines, paths = section(out, summary, pred, names, plot_dir, stem)
    md += lines
    written += paths

  report = os.path.join(workdir, 'report.md')
  writers.atomic_write(report, '\n'.join(md))
  return [report] + written


def _regression_section(out, summary, pred, names, plot_dir, stem):
  """Markdown lines and PNG paths for a regression output."""
  keys = {}  # Whatever the trainer reported, R² rows named by column.
  for s in ('test', 'validation'):
    keys.update((k, k) for k in _section(summary, s, out))
  keys.update((f'r2_{i}', f'R² `{markdown.esc(n)}`') for i, n in enumerate(names)
              if f'r2_{i}' in keys)
  md = [f'## Output `{out}` (regression)', '']
  md += _metric_table(out, summary, keys,
                      {'test': 'test', 'validation': 'validation'})
  if pred is not None and 'arrays' in pred:
    pred = pred['arrays']
  if pred is None:
    return md, []
  path = os.path.join(plot_dir, f'scatter_{stem}.png')
  sec = _section(summary, 'test', out)
  cols = np.shape(pred['scores'])[1] if np.ndim(pred['scores']) == 2 else 1
  plots.plot_scatter(pred, names, out, path,
               [sec.get(f'r2_{j}') for j in range(cols)])
  md += [f'![Predicted vs true, {out}](plots/scatter_{stem}.png)', '']
  return md, [path]


def _binary_details(pred, own, thr):
  """Whole arrays -> the streaming evaluation's details (the same per-class conventions)."""
  if pred is None or 'per_class' in pred:
    return pred
  labels, scores, mask = (np.asarray(pred['labels']), np.asarray(pred['scores']),
                          pred.get('mask'))
  labels, scores = labels.reshape(len(labels), -1), scores.reshape(len(scores), -1)
  mask = None if mask is None else np.asarray(mask).reshape(labels.shape)
  per_class = {'own': metrics.per_class(labels, scores, own, mask)}
  if thr is not None:
    per_class['tuned'] = metrics.per_class(labels, scores, thr, mask)
  cols = {i: {'labels': labels[:, i], 'scores': scores[:, i],
              'mask': None if mask is None else mask[:, i]} for i in range(labels.shape[1])}
  return {'per_class': per_class, 'columns': cols}


def _binary_section(out, summary, pred, names, plot_dir, stem):
  """Markdown lines and PNG paths for a binary (multi-label) output."""
  own = default_threshold(summary, out)
  k = len(names)
  thr = _thresholds(summary, out, k) if k else None
  details = _binary_details(pred, own, thr)
  if not k and details:
    k = len(details['per_class']['own']['support'])
    names = [str(i) for i in range(k)]
    thr = _thresholds(summary, out, k)
  md = [f'## Output `{out}` (binary, {k} classes)', '', '### Headline', '']
  # Only what was reported: a one-label output has no ranking metrics (metrics.keys).
  reported = {key: label for key, label in HEADLINE.items()
              if any(key in _section(summary, s, out) for s in _splits(summary, out))}
  md += _metric_table(out, summary, reported or HEADLINE)
  md += [f'This head predicts a label where its score > {markdown.fmt(own)} (`{_at(own)}`).', '']
  test = _section(summary, 'test', out)
  if any(f'precision_at_{j}' in test for j in metrics.TOP_K):
    md += ['### Ranking at k (test)', '']
    md += markdown.table(['metric'] + [f'k = {j}' for j in metrics.TOP_K],
                         [[label] + [markdown.fmt(test.get(f'{m}_at_{j}')) for j in metrics.TOP_K]
                          for m, label in AT_K.items()])
    md += ['PSP@k and PSnDCG@k weight each hit by 1 / propensity of its label (Jain et al. '
           '2016; propensities from the train split\'s label frequencies), so rare labels '
           'count more.', '']
  paths = []
  md_cal, path = _calibration(out, summary, details, plot_dir, stem)
  md += md_cal
  paths += [path] if path else []
  if details is None:
    return md + ['No test predictions: no per-class table.', ''], paths
  at_own = details['per_class']['own']
  tuned = details['per_class'].get('tuned') if thr is not None else None
  md += ['### Per class (test)', '']
  order = np.argsort(-np.asarray(at_own['support']), kind='stable')
  shown = list(range(k)) if k <= MAX_CLASS_ROWS else order[:MAX_CLASS_ROWS].tolist()
  md += _class_table(names, at_own, _at(own), tuned, thr, shown)
  if k > MAX_CLASS_ROWS:
    csv_path = os.path.join(os.path.dirname(plot_dir), f'per_class_{stem}.csv')
    _class_csv(csv_path, names, at_own, tuned, thr)
    paths.append(csv_path)
    md += [f'The {len(shown)} classes with the most test positives of {k}; all of them: '
           f'[per_class_{stem}.csv](per_class_{stem}.csv).', '']
  why = lambda i: ('no unmasked entry' if at_own['count'][i] == 0 else
                   'no positive' if at_own['support'][i] == 0 else
                   'no negative')
  left_out = [i for i in range(k) if np.isnan(at_own['average_precision'][i])]
  listed = ', '.join(f'`{markdown.esc(names[i])}` ({why(i)})' for i in left_out[:20])
  if len(left_out) > 20:
    listed += f' and {len(left_out) - 20} more'
  md += ['Left out of the macro AP / ROC AUC averages (no positive or no '
         'negative in test): ' + (listed or 'none') + '.', '']
  path = os.path.join(plot_dir, f'pr_{stem}.png')
  note = plots.plot_pr(details['columns'], names, at_own, out, path)
  md += [f'![Precision-recall curves, {out}](plots/pr_{stem}.png)', '']
  md += [note, ''] if note else []
  # Everything else the trainer reported, folded away.
  keys = {key: key for key in ('loss',) + metrics.KEYS
          if any(key in _section(summary, s, out) for s in _splits(summary, out))}
  md += ['<details><summary>All metrics</summary>', '']
  md += _metric_table(out, summary, keys) + ['</details>', '']
  return md, paths + [path]


def _calibration(out, summary, details, plot_dir, stem):
  """The ECE table before / after the calibration fitted on validation, and its diagram."""
  cal = (summary.get('calibration') or {}).get(out)
  if not cal:
    return [], None
  rows = [[f'class-wise ECE, {when}'] + [markdown.fmt((cal.get(s) or {}).get(when))
                                          for s in ('validation', 'test')]
          for when in ('before', 'after')]
  md = [f'### Calibration ({cal.get("method")} per class, fitted on validation)', '']
  md += markdown.table(['metric', 'validation', 'test'], rows)
  md += ['Class-wise ECE: 15 equal-width bins per class, |fraction positive - mean score| '
         'weighted by the bin\'s share, averaged over classes. Calibration maps each class\'s '
         'scores by an increasing function: per-class AP, ROC AUC and tuned decisions are '
         'unchanged; predict writes the calibrated probabilities.', '']
  rel = (details or {}).get('reliability')
  if not rel:
    return md, None
  path = os.path.join(plot_dir, f'reliability_{stem}.png')
  plots.plot_reliability(rel, out, path, cal.get('test') or {})
  md += [f'![Reliability on test, {out}](plots/reliability_{stem}.png)', '']
  return md, path


def _class_csv(path, names, at_own, tuned, thr) -> None:
  keys = ('support', 'count', 'precision', 'recall', 'f1', 'average_precision', 'roc_auc')

  def write(f):
    w = csv.writer(f)
    w.writerow(['class', *keys] + ([f'{c} @tuned' for c in ('precision', 'recall', 'f1')] +
                                   ['threshold'] if tuned is not None else []))
    for i, name in enumerate(names):
      row = [name] + [markdown.fmt(at_own[k][i]) for k in keys]
      if tuned is not None:
        row += [markdown.fmt(tuned[k][i]) for k in ('precision', 'recall', 'f1')] + [
            markdown.fmt(thr[i])]
      w.writerow(row)

  writers.atomic_write(path, write, newline='')


def _section(summary, split, out) -> dict:
  return (summary.get(split) or {}).get(out) or {}


def _metric_table(out, summary, labels, splits=None) -> list[str]:
  """Rows `labels` {key: row label} by columns `splits` {split: header}."""
  splits = splits or _splits(summary, out)
  cols = [_section(summary, s, out) for s in splits]
  rows = [[label] + [markdown.fmt(c.get(key), key) for c in cols]
          for key, label in labels.items()]
  return markdown.table(['metric'] + list(splits.values()), rows)


def _class_table(names, at_own, own_label, tuned, thr, shown) -> list[str]:
  """Per-class rows at the head's own threshold; tuned columns only when thresholds exist."""
  fmt = markdown.fmt
  prf = ('precision', 'recall', 'f1')
  sets = [(at_own, own_label)] + ([(tuned, '@tuned')] if tuned is not None else [])
  header = ['class', 'support', 'n'] + [f'{c} {t}' for _, t in sets
                                        for c in ('P', 'R', 'F1')]
  header += ['AP', 'ROC AUC'] + (['threshold'] if tuned is not None else [])
  rows = []
  for i in shown:
    name = names[i]
    row = [markdown.esc(name), fmt(at_own['support'][i]), fmt(at_own['count'][i])]
    row += [fmt(d[k][i]) for d, _ in sets for k in prf]
    row += [fmt(at_own['average_precision'][i]), fmt(at_own['roc_auc'][i])]
    rows.append(row + ([fmt(thr[i])] if tuned is not None else []))
  return markdown.table(header, rows)


# ----------------------------------------------------------------------------
# Summary and predictions helpers.


def _outputs(summary, predictions) -> list[str]:
  """Output names in first-seen order over the summary and predictions."""
  seen = []
  for part in [summary.get(s) or {} for s in ('test', 'validation',
                                              'test_tuned')] + [
                   predictions.get(s) or {} for s in ('test', 'validation')]:
    seen += [o for o in part if o not in seen]
  return seen


def _is_regression(out, summary, predictions) -> bool:
  for s in ('test', 'validation'):
    sec = _section(summary, s, out)
    if 'mse' in sec:
      return True
    if any(k in sec for k in metrics.KEYS):
      return False
  # No metrics to tell by: anything but 0/1 labels is a regression target.
  pred = (predictions.get('test') or {}).get(out)
  if pred is None or 'per_class' in pred:
    return False
  if 'arrays' in pred:
    return True
  return not np.isin(pred['labels'], (0, 1)).all()


def _thresholds(summary, out, k):
  """`[K]` tuned thresholds, or None if the run tuned none for `out`."""
  per = ((summary.get('thresholds') or {}).get(out) or {}).get('per_class')
  if not per or len(per) != k or any(v is None for v in per):
    return None
  return np.asarray(per, np.float32)
