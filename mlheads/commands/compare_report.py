"""What `compare` writes: compare.json, compare.md (mean ± std over seeds) and curves.png.

Statistics are over seeds, per grid point: the mean and the sample standard deviation
(ddof=1; none with one seed). An undefined value (null in metrics.json) is left out and the
count says so. The validation curves come from each run's metrics.jsonl.

"Epochs to 95%": per output, the target is 95% of the best grid point's final validation mAP
(the mean over its seeds of the validation mAP of the evaluated checkpoint, i.e. the run's
result, which is the best epoch by the experiment's `best_metric`, so that a head which
overfits late is not held to a lowered bar). A run's value is the first
evaluated epoch whose validation mAP reaches the target (epochs are whole: evaluation runs at
the end of each epoch); the table gives the mean over the seeds that reached it, and how many
did. It measures speed of learning towards a bar every head is held to, not each head's own
plateau.
"""

import os

from matplotlib.figure import Figure
import numpy as np

from mlheads.commands import compare_stats
from mlheads.evaluation import markdown as md_lib
from mlheads.state import writers

SPEED_FRACTION = 0.95
# (column label, section of the run result, metric key). '@default' is each head's own
# threshold: 0.5, or 1/C for softmax (docs/heads.md); '@tuned' is per-class thresholds tuned on
# validation for F1, applied to test.
TEST_COLUMNS = (
    ('mAP', 'test', 'average_precision_macro'),
    ('ROC AUC', 'test', 'roc_auc_macro'),
    ('F1 micro @default', 'test', 'f1_micro'),
    ('F1 macro @default', 'test', 'f1_macro'),
    ('F1 micro @tuned', 'test_tuned', 'f1_micro'),
    ('F1 macro @tuned', 'test_tuned', 'f1_macro'),
    ('subset acc @default', 'test', 'subset_accuracy'),
    ('subset acc @tuned', 'test_tuned', 'subset_accuracy'),
)
SPEED_COLUMNS = (
    ('val mAP, epoch 1', 'speed', 'val_map_epoch1'),
    ('val mAP, best ckpt', 'speed', 'val_map_final'),
    ('val mAP, last epoch', 'speed', 'val_map_last'),
    ('epochs to 95%', 'speed', 'epochs_to_target'),
    ('val loss, last epoch', 'speed', 'val_loss_last'),
    ('parameters', 'run', 'parameters'),
    ('time / run, excl. compiling (s)', 'run', 'run_s'),
    ('compiling (s)', 'run', 'compile_s'),
)


# ----------------------------------------------------------------------------
# One run.


def curves(run_dir: str) -> dict[str, dict[str, list]]:
  """{output: {'epoch', 'average_precision_macro', 'roc_auc_macro', 'loss'}} from metrics.jsonl.

  One value per evaluated epoch (the last record of an epoch wins); None where undefined.
  """
  records, _ = writers.read_jsonl(os.path.join(run_dir, 'metrics.jsonl'))
  by_out: dict[str, dict[int, dict]] = {}
  for r in records:
    split, _, out = r['split'].partition('/')
    if split == 'validation' and out and isinstance(r.get('epoch'), (int, float)):
      by_out.setdefault(out, {})[int(r['epoch'])] = r
  keys = ('average_precision_macro', 'roc_auc_macro', 'loss')
  return {out: {'epoch': sorted(eps), **{k: [eps[e].get(k) for e in sorted(eps)] for k in keys}}
          for out, eps in by_out.items()}


def run_result(run: dict, summary: dict, record: dict, run_dir: str) -> dict:
  """One run's entry in compare.json. `record['compile_s']`: JAX's tracing, lowering and
  compiling time within `wall_s` (absent from records of older runs)."""
  compile_s = record.get('compile_s')
  return {
      'point': run['point'], 'overrides': run['overrides'], 'seed': run['seed'],
      'dir': run['dir'], 'wall_s': record['wall_s'], 'compile_s': compile_s,
      'run_s': None if compile_s is None else record['wall_s'] - compile_s,
      'resumed': record.get('resumed', False),
      'finished_at': record.get('finished_at'),
      'parameters': summary.get('parameters'), 'steps': summary.get('steps'),
      'evaluated_step': summary.get('evaluated_step'), 'best_metric': summary.get('best_metric'),
      'test': summary.get('test', {}), 'test_tuned': summary.get('test_tuned', {}),
      'validation': summary.get('validation', {}), 'thresholds': summary.get('thresholds', {}),
      'curves': curves(run_dir),
  }


def one_line(result: dict) -> str:
  parts = []
  for out, m in result['test'].items():
    shown = [f'{short} {m[k]:.4f}' for k, short in (('average_precision_macro', 'mAP'),
                                                    ('roc_auc_macro', 'AUC'), ('mse', 'MSE'))
             if isinstance(m.get(k), (int, float))]
    parts.append(f'test {out} ' + ', '.join(shown))
  return '; '.join(parts) + f'; {result["steps"]} steps'


# ----------------------------------------------------------------------------
# Statistics.


def stats(values) -> dict:
  """{'mean', 'std' (ddof=1, None for one value), 'n', 'values'} over the finite values."""
  vals = [float(v) for v in values if isinstance(v, (int, float)) and np.isfinite(v)]
  if not vals:
    return {'mean': None, 'std': None, 'n': 0, 'values': list(values)}
  arr = np.asarray(vals)
  return {'mean': float(arr.mean()), 'std': float(arr.std(ddof=1)) if len(arr) > 1 else None,
          'n': len(arr), 'values': list(values)}


def _last(xs):
  return xs[-1] if xs else None


def _speed(result: dict, out: str, target) -> dict:
  c = result['curves'].get(out, {})
  epochs, maps = c.get('epoch', []), c.get('average_precision_macro', [])
  reached = None
  if target is not None:
    reached = next((e for e, v in zip(epochs, maps) if v is not None and v >= target), None)
  return {'val_map_epoch1': maps[epochs.index(1)] if 1 in epochs else None,
          'val_map_final': result['validation'].get(out, {}).get('average_precision_macro'),
          'val_map_last': _last(maps), 'val_loss_last': _last(c.get('loss', [])),
          'epochs_to_target': reached}


def build(experiment: str, axes, seeds, sets, results: list[dict], argv=None) -> dict:
  """compare.json: the settings, every run, and per output and point the statistics."""
  points = list(dict.fromkeys(r['point'] for r in results))
  outputs = list(dict.fromkeys(o for r in results for o in r['test']))
  summary, speed_def = {}, {}
  for out in outputs:
    finals = {p: stats([_speed(r, out, None)['val_map_final'] for r in results
                        if r['point'] == p])['mean'] for p in points}
    known = [v for v in finals.values() if v is not None]
    target = SPEED_FRACTION * max(known) if known else None
    best = max((p for p in points if finals[p] is not None), key=finals.get, default=None)
    speed_def[out] = {'fraction': SPEED_FRACTION, 'best_point': best,
                      'best_final_val_map': finals.get(best), 'target_val_map': target}
    summary[out] = {}
    for p in points:
      rs = [r for r in results if r['point'] == p]
      sp = [_speed(r, out, target) for r in rs]
      cols = {}
      for _, section, key in TEST_COLUMNS:
        cols[f'{section}/{key}'] = stats([r[section].get(out, {}).get(key) for r in rs])
      for _, section, key in SPEED_COLUMNS:
        vals = [s[key] for s in sp] if section == 'speed' else [r[key] for r in rs]
        cols[f'{section}/{key}'] = stats(vals)
      summary[out][p] = cols
  return {
      'experiment': experiment, 'command': list(argv) if argv else None,
      'grid': {k: v for k, v in axes}, 'seeds': list(seeds), 'set': {k: v for k, v in sets},
      'points': points, 'outputs': outputs, 'statistics': 'mean and sample std (ddof=1) over seeds',
      'speed': speed_def, 'summary': summary,
      'paired': {out: compare_stats.against_reference(results, out, points) for out in outputs},
      'runs': results,
  }


# ----------------------------------------------------------------------------
# Writing.


def _fmt(s: dict, key: str) -> str:
  if key == 'epochs_to_target' and s['values'] and s['n'] == 0:
    return f'not reached (0/{len(s["values"])})'
  if s['mean'] is None:
    return 'n/a'
  if key == 'parameters':
    return f'{s["mean"]:,.0f}' if not s['std'] else f'{s["mean"]:,.0f} ± {s["std"]:,.0f}'
  digits = (1 if key in ('wall_s', 'run_s', 'compile_s', 'epochs_to_target') else
            3 if key != 'val_loss_last' else 4)
  text = f'{s["mean"]:.{digits}f}' + (f' ± {s["std"]:.{digits}f}' if s['std'] is not None
                                      else '')
  if key == 'epochs_to_target':
    total = len(s['values'])
    text = f'{s["mean"]:.1f}' if s['n'] == total else f'{s["mean"]:.1f} ({s["n"]}/{total} reached)'
  return text


def _table(header, rows) -> list[str]:
  return (['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
          + ['| ' + ' | '.join(r) + ' |' for r in rows])


def markdown(doc: dict) -> str:
  n_seeds = len(doc['seeds'])
  grid = '; '.join(f'`{k}` ∈ {{{", ".join(v)}}}' for k, v in doc['grid'].items()) or 'none'
  sets = ', '.join(f'`{k}={v}`' for k, v in doc['set'].items()) or 'none (experiment defaults)'
  md = [f'# Comparison: {doc["experiment"]}', '']
  if doc.get('command'):
    md += ['```', ' '.join(doc['command']), '```', '']
  cells = (f'Cells: mean ± sample std (ddof=1) over the {n_seeds} seeds.' if n_seeds > 1 else
           f'**One seed ({doc["seeds"][0]}): each cell is a single run, with no spread; '
           'differences between points are not tested and may be seed noise** (use '
           '`--seeds=0,1,2`).')
  md += [f'Grid: {grid}. Seeds: {", ".join(map(str, doc["seeds"]))}. Settings: {sets}. '
         f'{len(doc["runs"])} runs, each in `<point>/seed<k>/`.', '',
         f'{cells} `@default`: each '
         "head's own threshold (0.5; 1/C for softmax). `@tuned`: per-class thresholds tuned on "
         'validation for F1, applied to test. Test metrics are those of the best checkpoint '
         '(by the experiment\'s `best_metric` on validation).', '']
  resumed = [f'{r["point"]}/seed{r["seed"]}' for r in doc['runs'] if r.get('resumed')]
  if resumed:
    md += [f'Resumed runs (their time counts only the resumed part): {", ".join(resumed)}.', '']
  for out in doc['outputs']:
    md += [f'## Output `{out}`', '', '### Test', '']
    rows = [[f'`{p}`'] + [_fmt(doc['summary'][out][p][f'{s}/{k}'], k)
                          for _, s, k in TEST_COLUMNS] for p in doc['points']]
    md += _table(['point'] + [c for c, _, _ in TEST_COLUMNS], rows) + ['']
    md += _paired_section(doc.get('paired', {}).get(out))
    sp = doc['speed'][out]
    md += ['### Speed of learning and cost', '']
    rows = [[f'`{p}`'] + [_fmt(doc['summary'][out][p][f'{s}/{k}'], k)
                          for _, s, k in SPEED_COLUMNS] for p in doc['points']]
    md += _table(['point'] + [c for c, _, _ in SPEED_COLUMNS], rows) + ['']
    if sp['target_val_map'] is not None:
      md += [f'Epochs to 95%: the first evaluated epoch whose validation mAP reaches '
             f'{sp["target_val_map"]:.4f} = {sp["fraction"]:.0%} of the best point\'s mean '
             f'validation mAP at its evaluated (best) checkpoint ({sp["best_final_val_map"]:.4f}, `{sp["best_point"]}`); '
             'mean over the seeds that reached it. Validation losses are each head\'s own loss '
             '(softmax cross-entropy is not on the scale of binary cross-entropy). Time: wall '
             'clock of the whole run (data loading, training, evaluation) less the time JAX '
             'spent tracing and compiling, which is given apart.', '']
  md += ['![Validation curves](curves.png)', '', '<details><summary>Every run</summary>', '']
  rows = []
  for r in doc['runs']:
    for out in doc['outputs']:
      t, tt = r['test'].get(out, {}), r['test_tuned'].get(out, {})
      rows.append([f'`{r["point"]}`', str(r['seed']), f'`{out}`',
                   *(md_lib.fmt(x.get(k)) for x, k in (
                       (t, 'average_precision_macro'), (t, 'roc_auc_macro'), (t, 'f1_micro'),
                       (tt, 'f1_micro'))),
                   str(r['steps']), f'{r["wall_s"]:.1f}'])
  md += _table(['point', 'seed', 'output', 'test mAP', 'ROC AUC', 'F1 micro @default',
                'F1 micro @tuned', 'steps', 'time (s)'], rows)
  md += ['', '</details>', '']
  return '\n'.join(md)


def _paired_section(p: dict | None) -> list[str]:
  """Markdown: each point's test mAP against the reference's, paired over seeds."""
  if not p or p['reference'] is None:
    return []
  md = [f'Against `{p["reference"]}` (best mean validation mAP), test mAP paired seed by seed: '
        f'mean difference, its 95% t interval, and the Holm-corrected p-value of a paired '
        f't-test; significant at p < {p["alpha"]}.', '']
  if not p['comparisons']:
    return md + [f'No test: {p["note"]}.', '']
  rows = [[f'`{c["point"]}`', f'{c["mean_diff"]:+.4f}',
           f'[{c["ci95"][0]:+.4f}, {c["ci95"][1]:+.4f}]', str(c['n']), f'{c["p_holm"]:.3g}',
           'yes' if c['significant'] else 'no'] for c in p['comparisons']]
  return md + _table(['point', 'Δ test mAP', '95% CI', 'seeds', 'p (Holm)', 'significant'],
                     rows) + ['']


def _mean_band(doc, out, point, key, relative=False):
  """(epochs, mean, min, max) over the point's seeds of one curve; None without values.

  relative: each seed's curve divided by its own first value (a shape, free of the loss' scale).
  """
  series = []
  for r in doc['runs']:
    c = r['curves'].get(out, {})
    if r['point'] != point or not c.get('epoch'):
      continue
    s = {e: v for e, v in zip(c['epoch'], c[key]) if isinstance(v, (int, float))}
    if relative:
      first = s.get(min(s)) if s else None
      s = {e: v / first for e, v in s.items()} if first else {}
    series.append(s)
  epochs = sorted({e for s in series for e in s})
  if not epochs:
    return None
  ys = [[s[e] for s in series if e in s] for e in epochs]
  return (np.array(epochs), np.array([np.mean(y) for y in ys]), np.array([min(y) for y in ys]),
          np.array([max(y) for y in ys]), len(series))


def plot_curves(doc: dict, path: str) -> bool:
  """Per output (one row): validation mAP, validation loss, and validation loss relative to
  epoch 1, vs epoch; one color per grid point: the mean over seeds, shaded min-max.

  Heads' own losses differ in scale (softmax CE vs BCE), so the raw loss panel goes to a log
  scale when they are far apart, and the relative panel compares their shapes.
  Returns False (writing nothing) without any curve.
  """
  outs = [o for o in doc['outputs']
          if any(r['curves'].get(o, {}).get('epoch') for r in doc['runs'])]
  if not outs:
    return False
  fig = Figure(figsize=(17, 4.8 * len(outs)), dpi=100, layout='constrained')
  axes = fig.subplots(len(outs), 3, squeeze=False)
  panels = (('average_precision_macro', False, 'validation mAP (macro AP)'),
            ('loss', False, "validation loss (each head's own loss)"),
            ('loss', True, 'validation loss / its epoch-1 value'))
  for row, out in zip(axes, outs):
    for ax, (key, relative, title) in zip(row, panels):
      for i, p in enumerate(doc['points']):
        band = _mean_band(doc, out, p, key, relative)
        if band is None:
          continue
        x, mean, lo, hi, n = band
        color = f'C{i % 10}'
        ax.plot(x, mean, 'o-', color=color, ms=4, lw=1.6, label=f'{p} (n={n})')
        ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)
      target = doc['speed'].get(out, {}).get('target_val_map')
      if key == 'average_precision_macro' and target is not None:
        ax.axhline(target, color='grey', ls=':', lw=1)
        ax.annotate(f'95% target {target:.3f}', (0.01, target),
                    xycoords=('axes fraction', 'data'), ha='left', va='bottom', fontsize=8,
                    color='grey')
      if key == 'loss' and not relative:
        finite = [v for r in doc['runs'] for v in r['curves'].get(out, {}).get('loss', [])
                  if isinstance(v, (int, float)) and v > 0]
        if finite and max(finite) / min(finite) > 3:
          ax.set_yscale('log')
          title += ', log scale'
      ax.set(xlabel='epoch', title=f'{out}: {title}')
      ax.xaxis.get_major_locator().set_params(integer=True)
      ax.grid(alpha=0.3, which='both')
    row[-1].legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.02, 1),
                   title='mean over seeds,\nband min–max', title_fontsize=8)
  fig.suptitle(f'{doc["experiment"]}: validation curves per grid point')
  fig.savefig(path)
  return True


def write(workdir: str, doc: dict) -> list[str]:
  """Writes compare.json, compare.md and curves.png into workdir; returns the paths."""
  written = []
  path = os.path.join(workdir, 'compare.json')
  writers.write_json(path, doc)
  written.append(path)
  png = os.path.join(workdir, 'curves.png')
  has_png = plot_curves(doc, png)
  md = markdown(doc)
  if not has_png:
    md = md.replace('![Validation curves](curves.png)', 'No validation curves were logged.')
  path = os.path.join(workdir, 'compare.md')
  writers.atomic_write(path, md)
  written.append(path)
  if has_png:
    written.append(png)
  return written
