"""Run report: WORKDIR/report.md (per-output and per-class tables) and PNG
plots under WORKDIR/plots/ (learning curves, PR curves, regression scatters).

Per-class numbers are recomputed from the test predictions with
`metrics.per_class`, so they follow its conventions (masks, ties, NaN where
undefined); undefined values print as `n/a`, never as 0. Plots use the
object-oriented `Figure` API (Agg for PNG): no global backend is touched.
"""

import json
import math
import os
import re

from matplotlib.figure import Figure
import numpy as np

from mlheads import metrics

DPI = 100
MAX_PR_PANELS = 25  # Beyond 10 classes: small panels for the top 25 by support.
HEADLINE = {
    'average_precision_macro': 'mAP (macro AP)', 'f1_micro': 'F1 micro',
    'f1_macro': 'F1 macro', 'roc_auc_macro': 'ROC AUC macro',
    'label_ranking_average_precision': 'LRAP',
    'subset_accuracy': 'subset accuracy', 'hamming_loss': 'Hamming loss',
    'precision_at_1': 'precision@1', 'precision_at_3': 'precision@3',
    'loss': 'loss'}
_SPLITS = {'test': 'test @0.5', 'test_tuned': 'test @tuned',
           'validation': 'validation @0.5'}
# Unbounded values print with significant digits; the rest with 3 decimals.
_UNBOUNDED = ('loss', 'mse', 'mae', 'coverage_error')


def write(workdir: str, summary: dict, predictions: dict,
          class_names: dict[str, list[str]]) -> list[str]:
  """Writes WORKDIR/report.md and WORKDIR/plots/*.png; returns the paths.

  Args:
    workdir: the run directory; metrics.jsonl there (if any) gives the
      learning curves.
    summary: {'experiment', 'steps', 'parameters', 'validation', 'test',
      'test_tuned', 'thresholds'} as saved in metrics.json; any of the
      metric sections may be missing, a value may be None (undefined).
    predictions: {'validation'|'test': {output: {'scores': [n, K],
      'labels': [n, K], 'mask': [n, K] (optional)}}} as numpy arrays.
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
  params = f'{params:,}' if isinstance(params, int) else _fmt(params)
  md = [f'# Run report: {name}', '',
        f'steps {_fmt(summary.get("steps"))} · parameters {params} · '
        f'outputs: {", ".join(f"`{o}`" for o in outputs) or "none"}', '',
        '`@0.5`: labels predicted where score > 0.5. `@tuned`: per-class '
        'thresholds tuned on validation, applied to test. `n/a`: undefined '
        '(e.g. AP of a class without a positive) or not reported.', '']

  md += ['## Learning curves', '']
  records, bad_lines = read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  path = os.path.join(plot_dir, 'learning_curves.png')
  if plot_learning_curves(records, path):
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
  with open(report, 'w') as f:
    f.write('\n'.join(md))
  return [report] + written


def _regression_section(out, summary, pred, names, plot_dir, stem):
  """Markdown lines and PNG paths for a regression output."""
  keys = {}  # Whatever the trainer reported, R² rows named by column.
  for s in ('test', 'validation'):
    keys.update((k, k) for k in _section(summary, s, out))
  keys.update((f'r2_{i}', f'R² `{_esc(n)}`') for i, n in enumerate(names)
              if f'r2_{i}' in keys)
  md = [f'## Output `{out}` (regression)', '']
  md += _metric_table(out, summary, keys,
                      {'test': 'test', 'validation': 'validation'})
  if pred is None:
    return md, []
  path = os.path.join(plot_dir, f'scatter_{stem}.png')
  sec = _section(summary, 'test', out)
  cols = np.shape(pred['scores'])[1] if np.ndim(pred['scores']) == 2 else 1
  plot_scatter(pred, names, out, path,
               [sec.get(f'r2_{j}') for j in range(cols)])
  md += [f'![Predicted vs true, {out}](plots/scatter_{stem}.png)', '']
  return md, [path]


def _binary_section(out, summary, pred, names, plot_dir, stem):
  """Markdown lines and PNG paths for a binary (multi-label) output."""
  k = len(names) or (np.shape(pred['scores'])[1] if pred else 0)
  names = names or [str(i) for i in range(k)]
  md = [f'## Output `{out}` (binary, {k} classes)', '', '### Headline', '']
  md += _metric_table(out, summary, HEADLINE)
  glob = ((summary.get('thresholds') or {}).get(out) or {}).get('global')
  if glob is not None:
    md += [f'Global threshold tuned on validation: {_fmt(glob)}.', '']
  if pred is None:
    return md + ['No test predictions: no per-class table.', ''], []
  labels, scores, mask = pred['labels'], pred['scores'], pred.get('mask')
  thr = _thresholds(summary, out, k)
  at_05 = metrics.per_class(labels, scores, 0.5, mask)
  tuned = None if thr is None else metrics.per_class(labels, scores, thr,
                                                     mask)
  md += ['### Per class (test)', '']
  md += _class_table(names, at_05, tuned, thr)
  why = lambda i: ('no unmasked entry' if at_05['count'][i] == 0 else
                   'no positive' if at_05['support'][i] == 0 else
                   'no negative')
  left_out = [f'`{_esc(names[i])}` ({why(i)})' for i in range(k)
              if np.isnan(at_05['average_precision'][i])]
  md += ['Left out of the macro AP / ROC AUC averages (no positive or no '
         'negative in test): ' + (', '.join(left_out) or 'none') + '.', '']
  path = os.path.join(plot_dir, f'pr_{stem}.png')
  note = plot_pr(pred, names, at_05, out, path)
  md += [f'![Precision-recall curves, {out}](plots/pr_{stem}.png)', '']
  md += [note, ''] if note else []
  # Everything else the trainer reported, folded away.
  keys = {key: key for key in ('loss',) + metrics.KEYS
          if any(key in _section(summary, s, out) for s in _SPLITS)}
  md += ['<details><summary>All metrics</summary>', '']
  md += _metric_table(out, summary, keys) + ['</details>', '']
  return md, [path]


# ----------------------------------------------------------------------------
# Markdown.


def _fmt(v, key='') -> str:
  """A number as printed in report.md; None / NaN / inf -> 'n/a'."""
  if v is None or isinstance(v, str):
    return 'n/a' if v is None else v
  if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
    return str(int(v))  # Counts and steps; a float 1.0 still prints 1.000.
  v = float(v)
  if not math.isfinite(v):
    return 'n/a'
  return f'{v:.4g}' if key in _UNBOUNDED else f'{v:.3f}'


def _esc(name) -> str:
  """A class name safe inside a markdown table cell."""
  return str(name).replace('|', r'\|').replace('\n', ' ')


def _table(header, rows) -> list[str]:
  return (['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join(['---'] + ['--:'] * (len(header) - 1)) + '|']
          + ['| ' + ' | '.join(r) + ' |' for r in rows] + [''])


def _section(summary, split, out) -> dict:
  return (summary.get(split) or {}).get(out) or {}


def _metric_table(out, summary, labels, splits=_SPLITS) -> list[str]:
  """Rows `labels` {key: row label} by columns `splits` {split: header}."""
  cols = [_section(summary, s, out) for s in splits]
  rows = [[label] + [_fmt(c.get(key), key) for c in cols]
          for key, label in labels.items()]
  return _table(['metric'] + list(splits.values()), rows)


def _class_table(names, at_05, tuned, thr) -> list[str]:
  """Per-class rows; tuned columns only when thresholds exist."""
  prf = ('precision', 'recall', 'f1')
  sets = [(at_05, '@0.5')] + ([(tuned, '@tuned')] if tuned is not None else [])
  header = ['class', 'support', 'n'] + [f'{c} {t}' for _, t in sets
                                        for c in ('P', 'R', 'F1')]
  header += ['AP', 'ROC AUC'] + (['threshold'] if tuned is not None else [])
  rows = []
  for i, name in enumerate(names):
    row = [_esc(name), _fmt(at_05['support'][i]), _fmt(at_05['count'][i])]
    row += [_fmt(d[k][i]) for d, _ in sets for k in prf]
    row += [_fmt(at_05['average_precision'][i]), _fmt(at_05['roc_auc'][i])]
    rows.append(row + ([_fmt(thr[i])] if tuned is not None else []))
  return _table(header, rows)


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
  return pred is not None and not np.isin(pred['labels'], (0, 1)).all()


def _thresholds(summary, out, k):
  """`[K]` tuned thresholds, or None if the run tuned none for `out`.

  A missing per-class entry falls back to the global tuned threshold: that
  is the best validation-based choice left for the class.
  """
  t = (summary.get('thresholds') or {}).get(out)
  if not t:
    return None
  glob = t.get('global')
  per = list(t.get('per_class') or [glob] * k)
  per = [glob if v is None else v for v in per]
  if len(per) != k or any(v is None for v in per):
    return None
  return np.asarray(per, np.float32)


def read_jsonl(path) -> tuple[list[dict], int]:
  """Records of metrics.jsonl and the count of unreadable lines.

  A run killed mid-write leaves a truncated last line: skip it, don't fail.
  """
  records, bad = [], 0
  if not os.path.exists(path):
    return records, bad
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  for line in lines:
    try:
      r = json.loads(line)
    except json.JSONDecodeError:
      r = None
    if isinstance(r, dict) and isinstance(r.get('split'), str):
      records.append(r)
    else:
      bad += 1
  return records, bad


def _finite(v) -> bool:
  return (isinstance(v, (int, float)) and not isinstance(v, bool)
          and math.isfinite(v))


def _series(records, split, key, x) -> tuple[np.ndarray, np.ndarray]:
  """(x, y) of `key` for `split`, sorted by x, nulls dropped."""
  pts = sorted((r[x], r[key]) for r in records
               if r['split'] == split and _finite(r.get(x))
               and _finite(r.get(key)))
  return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


# ----------------------------------------------------------------------------
# Plots.


def plot_learning_curves(records, path) -> bool:
  """Losses (left) and validation mAP / ROC AUC (right) vs epoch or step.

  Train total loss in black; per output, train loss dashed and validation
  loss solid, in one color, so overfitting of one output is visible.
  Returns False (writing nothing) if there is nothing to draw.
  """
  if not records:
    return False
  # Epoch reads better, but only if every record has one: else use step.
  x = 'epoch' if all(_finite(r.get('epoch')) for r in records) else 'step'
  val_splits = []
  for r in records:
    if r['split'].startswith('validation') and r['split'] not in val_splits:
      val_splits.append(r['split'])
  outs = [s.partition('/')[2] or s for s in val_splits]
  fig = Figure(figsize=(13, 4.8), dpi=DPI, layout='constrained')
  ax_loss, ax_rank = fig.subplots(1, 2, sharex=True)  # Same run, same x.
  drawn = []
  sx, sy = _series(records, 'train', 'loss', x)
  if len(sx):
    ax_loss.plot(sx, sy, color='black', lw=1.2, label='train loss (total)')
    drawn.append(sy)
  for i, (split, out) in enumerate(zip(val_splits, outs)):
    tx, ty = _series(records, 'train', f'loss_{out}', x)
    if len(tx):
      ax_loss.plot(tx, ty, '--', color=f'C{i % 10}', lw=1, alpha=0.8,
                   label=f'train loss {out}')
      drawn.append(ty)
    vx, vy = _series(records, split, 'loss', x)
    if len(vx):
      ax_loss.plot(vx, vy, 'o-', color=f'C{i % 10}', ms=3.5,
                   label=f'validation loss {out}')
      drawn.append(vy)
  if not drawn:
    return False
  ys = np.concatenate(drawn)
  # Heads can differ in loss scale by orders of magnitude (BCE vs MSE).
  if ys.min() > 0 and ys.max() / ys.min() > 30:
    ax_loss.set_yscale('log')
  log = ' (log scale)' if ax_loss.get_yscale() == 'log' else ''
  ax_loss.set(xlabel=x, ylabel='loss' + log, title='Loss')
  ax_loss.grid(alpha=0.3)
  ax_loss.legend(fontsize=8)
  ranked = False
  for i, (split, out) in enumerate(zip(val_splits, outs)):
    for key, style, label in (('average_precision_macro', 'o-', 'mAP'),
                              ('roc_auc_macro', 's--', 'ROC AUC')):
      vx, vy = _series(records, split, key, x)
      if len(vx):
        ax_rank.plot(vx, vy, style, color=f'C{i % 10}', ms=3.5,
                     label=f'{label} {out}')
        ranked = True
  ax_rank.set(xlabel=x, ylabel='macro average (validation)',
              title='Validation mAP and ROC AUC')
  ax_rank.grid(alpha=0.3)
  if ranked:
    ax_rank.legend(fontsize=8)
  else:
    ax_rank.text(0.5, 0.5, 'no validation mAP / ROC AUC logged',
                 ha='center', va='center', transform=ax_rank.transAxes)
  fig.savefig(path, dpi=DPI)
  return True


def pr_curve(labels, scores, mask=None):
  """Precision-recall curve of one class, ties grouped as scikit-learn does.

  Args:
    labels: 0/1 `[n]`.
    scores: `[n]`.
    mask: optional 0/1 `[n]`; 0 leaves the entry out.

  Returns:
    (recall, precision), `[m + 1]` each with recall strictly ascending,
    starting at (0, 1): the staircase that average precision integrates,
    sum(diff(recall) * precision[1:]). Thresholds that add only negatives
    (same recall, lower precision) add nothing to AP and only draw spikes,
    so they are dropped. None if the class has no unmasked positive.
  """
  valid = np.ones(len(labels), bool) if mask is None else np.asarray(mask) > 0
  y = np.asarray(labels)[valid] == 1
  # float32, as metrics compares scores: the same tie groups.
  s = np.asarray(scores, np.float32)[valid]
  if not y.any():
    return None
  order = np.argsort(-s, kind='stable')
  y, s = y[order], s[order]
  last = np.r_[s[1:] != s[:-1], True]  # One point per distinct threshold.
  tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
  first = np.r_[True, tp[1:] != tp[:-1]] & (tp > 0)  # Each recall's first.
  tp, fp = tp[first], fp[first]
  return np.r_[0.0, tp / y.sum()], np.r_[1.0, tp / (tp + fp)]


def plot_pr(pred, names, per_cls, out, path) -> str:
  """Per-class PR curves on test; returns a note for report.md (or '').

  Up to 10 classes share one axis; beyond, small panels for the classes
  with the most test positives (an axis with 30 curves is unreadable).
  """
  scores, labels = np.asarray(pred['scores']), np.asarray(pred['labels'])
  mask = pred.get('mask')
  mask = None if mask is None else np.asarray(mask)
  col = lambda a, i: None if a is None else a[:, i]
  curves = {i: pr_curve(labels[:, i], scores[:, i], col(mask, i))
            for i in range(len(names))}
  no_pos = [names[i] for i, c in curves.items() if c is None]
  drawable = [i for i, c in curves.items() if c is not None]
  label = lambda i: (f'{names[i]} (AP {_fmt(per_cls["average_precision"][i])},'
                     f' {int(per_cls["support"][i])} pos)')
  notes = []
  if len(names) <= 10:
    fig = Figure(figsize=(9, 5.5), dpi=DPI, layout='constrained')
    ax = fig.subplots()
    for i in drawable:
      r, p = curves[i]
      ax.step(r, p, where='pre', color=f'C{i % 10}', lw=1.5, label=label(i))
    for n in no_pos:  # Say in the plot itself why a class is missing.
      ax.plot([], [], ' ', label=f'{n} (no positive: no curve)')
    ax.set(xlabel='recall', ylabel='precision', xlim=(0, 1.01),
           ylim=(0, 1.02), title=f'Precision-recall on test: {out}')
    ax.grid(alpha=0.3)
    if drawable or no_pos:
      ax.legend(loc='center left', bbox_to_anchor=(1.01, 0.5), fontsize=9,
                title='class (AP, positives)', title_fontsize=9)
  else:
    shown = sorted(drawable, key=lambda i: -per_cls['support'][i])
    shown = shown[:MAX_PR_PANELS]
    ncols = 5
    nrows = max(1, math.ceil(len(shown) / ncols))
    fig = Figure(figsize=(2.6 * ncols, 2.4 * nrows + 0.6), dpi=DPI,
                 layout='constrained')
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, sharey=True))
    for ax, i in zip(axes.flat, shown):
      r, p = curves[i]
      ax.step(r, p, where='pre', color='C0', lw=1.3)
      # Prevalence: the precision of a random ranking, for scale.
      prev = per_cls['support'][i] / max(per_cls['count'][i], 1)
      ax.axhline(prev, color='gray', ls=':', lw=1)
      ax.set_title(f'{names[i]}\nAP {_fmt(per_cls["average_precision"][i])}, '
                   f'{int(per_cls["support"][i])} pos', fontsize=8)
      ax.set(xlim=(0, 1.01), ylim=(0, 1.02))
      ax.tick_params(labelsize=7)
      ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
      ax.axis('off')
    fig.suptitle(f'Precision-recall on test: {out} (top {len(shown)} of '
                 f'{len(names)} classes by support; dotted: prevalence)')
    fig.supxlabel('recall')
    fig.supylabel('precision')
    if len(shown) < len(drawable):
      notes.append(f'The plot shows the {len(shown)} classes with the most '
                   f'test positives of {len(drawable)} with a curve.')
  if no_pos:
    notes.append('No curve (no positive in test): '
                 + ', '.join(f'`{n}`' for n in no_pos) + '.')
  fig.savefig(path, dpi=DPI)
  return ' '.join(notes)


def plot_scatter(pred, names, out, path, r2=(), max_points=5000):
  """Predicted vs true per column of a regression output, with y = x.

  `r2` (from the summary, None where undefined) goes into panel titles.
  """
  scores = np.asarray(pred['scores'], np.float64)
  labels = np.asarray(pred['labels'], np.float64)
  if scores.ndim == 1:
    scores, labels = scores[:, None], labels[:, None]
  mask = pred.get('mask')
  mask = np.ones(scores.shape, bool) if mask is None else (
      np.asarray(mask).reshape(scores.shape) > 0)
  k = scores.shape[1]
  ncols = min(k, 3)
  nrows = math.ceil(k / ncols)
  fig = Figure(figsize=(4.2 * ncols, 4 * nrows), dpi=DPI, layout='constrained')
  axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False))
  rng = np.random.default_rng(0)
  for j, ax in enumerate(axes.flat):
    if j >= k:
      ax.axis('off')
      continue
    t, p = labels[mask[:, j], j], scores[mask[:, j], j]
    if len(t) > max_points:  # Thin dense clouds so points stay visible.
      keep = rng.choice(len(t), max_points, replace=False)
      t, p = t[keep], p[keep]
    ax.scatter(t, p, s=8, alpha=0.5, edgecolors='none')
    if len(t):
      lo, hi = min(t.min(), p.min()), max(t.max(), p.max())
      ax.plot([lo, hi], [lo, hi], color='gray', ls='--', lw=1, label='y = x')
      ax.legend(fontsize=8, loc='upper left')
    name = names[j] if j < len(names) else f'column {j}'
    r2_j = _fmt(r2[j]) if j < len(r2) else 'n/a'
    ax.set(xlabel='true', ylabel='predicted',
           title=f'{name} (test, R² {r2_j})')
    ax.grid(alpha=0.3)
  fig.suptitle(f'Predicted vs true: {out}')
  fig.savefig(path, dpi=DPI)
