"""The report's PNG plots: learning curves, precision-recall curves, regression scatters.

Plots use the object-oriented `Figure` API (Agg for PNG): no global backend is touched.
"""

import math

from matplotlib.figure import Figure
import numpy as np

from mlheads.evaluation import markdown

DPI = 100
MAX_PR_PANELS = 25  # Beyond 10 classes: small panels for the top 25 by support.


def _finite(v) -> bool:
  return (isinstance(v, (int, float)) and not isinstance(v, bool)
          and math.isfinite(v))


def _series(records, split, key, x) -> tuple[np.ndarray, np.ndarray]:
  """(x, y) of `key` for `split`, sorted by x, nulls dropped."""
  pts = sorted((r[x], r[key]) for r in records
               if r['split'] == split and _finite(r.get(x))
               and _finite(r.get(key)))
  return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


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


def plot_pr(columns, names, per_cls, out, path) -> str:
  """Per-class PR curves on test; returns a note for report.md (or '').

  columns: class index -> {'labels', 'scores', 'mask' (or None)} `[n]`: every class, or
  (many classes) those the evaluation kept, the most frequent. Up to 10 classes share one
  axis; beyond, small panels for the classes with the most test positives (an axis with
  30 curves is unreadable).
  """
  curves = {i: pr_curve(c['labels'], c['scores'], c.get('mask'))
            for i, c in sorted(columns.items())}
  no_pos = [names[i] for i, c in curves.items() if c is None]
  drawable = [i for i, c in curves.items() if c is not None]
  label = lambda i: (f'{names[i]} (AP {markdown.fmt(per_cls["average_precision"][i])},'
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
      ax.set_title(f'{names[i]}\nAP {markdown.fmt(per_cls["average_precision"][i])}, '
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
    with_curve = int(np.sum(np.asarray(per_cls['support']) > 0))
    if len(shown) < with_curve:
      notes.append(f'The plot shows the {len(shown)} classes with the most '
                   f'test positives of {with_curve} with a curve.')
  if no_pos and len(names) <= 10:
    notes.append('No curve (no positive in test): '
                 + ', '.join(f'`{n}`' for n in no_pos) + '.')
  fig.savefig(path, dpi=DPI)
  return ' '.join(notes)


def plot_reliability(reliability, out, path, ece) -> None:
  """Reliability diagram on test, pooled over classes: per bin of the score, the fraction
  of positives against the mean score, before and after calibration (left), and how many
  entries each bin holds (right, log scale).

  reliability: {'before'|'after': {'count', 'score', 'positive'}} (calibration.reliability);
  ece: {'before', 'after'} class-wise ECE for the legend.
  """
  fig = Figure(figsize=(11, 4.6), dpi=DPI, layout='constrained')
  ax, ax_n = fig.subplots(1, 2)
  ax.plot([0, 1], [0, 1], color='gray', ls='--', lw=1, label='perfectly calibrated')
  n_bins = len(reliability['before']['count'])
  edges = np.linspace(0, 1, n_bins + 1)
  for i, when in enumerate(('before', 'after')):
    r = reliability.get(when)
    if not r:
      continue
    pts = [(s, p) for s, p in zip(r['score'], r['positive']) if s is not None]
    if pts:
      x, y = zip(*pts)
      ax.plot(x, y, 'o-', color=f'C{i}', ms=4,
              label=f'{when} (class-wise ECE {markdown.fmt(ece.get(when))})')
    ax_n.bar(edges[:-1] + (i + 0.5) * (edges[1] - edges[0]) / 2, np.maximum(r['count'], 0.5),
             width=(edges[1] - edges[0]) / 2, color=f'C{i}', alpha=0.7, label=when)
  ax.set(xlabel='mean score in bin', ylabel='fraction positive', xlim=(0, 1), ylim=(0, 1),
         title=f'Reliability on test: {out} (all classes pooled)')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc='upper left')
  ax_n.set_yscale('log')
  ax_n.set(xlabel='score bin', ylabel='entries (log scale)', xlim=(0, 1),
           title='Entries per bin')
  ax_n.grid(alpha=0.3)
  ax_n.legend(fontsize=8)
  fig.savefig(path, dpi=DPI)


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
    r2_j = markdown.fmt(r2[j]) if j < len(r2) else 'n/a'
    ax.set(xlabel='true', ylabel='predicted',
           title=f'{name} (test, R² {r2_j})')
    ax.grid(alpha=0.3)
  fig.suptitle(f'Predicted vs true: {out}')
  fig.savefig(path, dpi=DPI)
