"""What `compare_heads` writes: compare_heads.json (mean and std per data set, method and
metric), compare_heads.md (the tables and the chart), compare_heads.png, compare_heads_runs.json
(how it was made, every run) and each entry's own compare report.

Methods are the head kinds (the runs of `compare`, mean and sample std over seeds) and the two
baselines, `sklearn_baseline` (TF-IDF + logistic regression) and `label_prior`, each a single
deterministic fit (std null, n 1). Every metric is of the entry's output on test, except
`validation_average_precision_macro` (what the best head is chosen by) and the costs.
"""

import dataclasses
import datetime
import json
import os

from matplotlib.figure import Figure
import numpy as np

from mlheads.commands import compare_report
from mlheads.evaluation import markdown as md_lib
from mlheads.state import writers

# (key in compare_heads.json, section of metrics.json, metric, column label).
METRICS = (
    ('average_precision_macro', 'test', 'average_precision_macro', 'test mAP'),
    ('f1_micro', 'test', 'f1_micro', 'F1 micro'),
    ('f1_macro', 'test', 'f1_macro', 'F1 macro'),
    ('hamming_loss', 'test', 'hamming_loss', 'Hamming loss'),
    ('subset_accuracy', 'test', 'subset_accuracy', 'subset acc'),
    ('f1_micro_tuned', 'test_tuned', 'f1_micro', 'F1 micro @tuned'),
    ('f1_macro_tuned', 'test_tuned', 'f1_macro', 'F1 macro @tuned'),
    ('validation_average_precision_macro', 'validation', 'average_precision_macro', 'val mAP'),
)
# (key, column label): the costs of a method.
COSTS = (('train_s', 'train s'), ('compile_s', 'compile s'), ('parameters', 'parameters'))
BASELINES = (('sklearn_baseline', None), ('label_prior', 'label_prior'))


def _stat(values) -> dict:
  s = compare_report.stats(values)
  return {'mean': s['mean'], 'std': s['std'], 'n': s['n']}


def entry_result(entry, doc: dict | None, base: dict, sets: dict | None = None) -> dict:
  """One entry's methods (heads from compare.json `doc`, baselines from metrics.json `base`).
  `doc` None: no head has finished a pass yet (the baselines alone; `sets` its settings)."""
  out = entry.output
  doc = doc or {'points': [], 'runs': [], 'seeds': [], 'set': dict(sets or {})}
  methods = {}
  for point in doc['points']:
    runs = [r for r in doc['runs'] if r['point'] == point]
    methods[point] = {key: _stat([r[section].get(out, {}).get(metric) for r in runs])
                      for key, section, metric, _ in METRICS}
    methods[point]['train_s'] = _stat([r['run_s'] for r in runs])
    methods[point]['compile_s'] = _stat([r['compile_s'] for r in runs])
    methods[point]['parameters'] = _stat([r['parameters'] for r in runs])
  for name, part in BASELINES:
    sections = base[part] if part else base
    methods[name] = {key: _stat([sections.get(section, {}).get(out, {}).get(metric)])
                     for key, section, metric, _ in METRICS}
  methods['sklearn_baseline']['train_s'] = _stat([base['baseline'].get('wall_s')])
  methods['label_prior']['train_s'] = _stat([None])  # counting frequencies: not timed
  info = base['baseline']
  return {
      'entry': dataclasses.asdict(entry), 'seeds': doc['seeds'], 'set': doc['set'],
      'methods': methods,
      'baseline': {k: info.get(k) for k in ('c', 'features', 'validation_map', 'wall_s', 'rows')},
      'runs': [{k: r.get(k) for k in ('point', 'seed', 'wall_s', 'compile_s', 'run_s', 'steps',
                                      'evaluated_step', 'parameters', 'resumed', 'finished_at')}
               | {'test_average_precision_macro':
                  r['test'].get(out, {}).get('average_precision_macro')}
               for r in doc['runs']],
  }


def read_entry(entry, entry_dir: str, plan, base: dict) -> dict:
  """An entry's result from its folder, given its finished baselines' metrics.json `base`: with
  the heads if their compare.json was made with the plan's settings and the first of its seeds
  (an interrupted study has fewer), else the baselines alone."""
  sets = dict(s.split('=', 1) for s in plan.sets(entry))
  try:
    with open(os.path.join(entry_dir, 'compare.json'), encoding='utf-8') as f:
      doc = json.load(f)
  except (OSError, ValueError):
    doc = None
  seeds = (doc or {}).get('seeds') or []
  if not seeds or seeds != list(plan.seeds[:len(seeds)]) or doc.get('set') != sets:
    doc = None
  return entry_result(entry, doc, base, sets)


def table_json(done: dict) -> dict:
  """{entry: {method: {metric: {'mean', 'std', 'n'}}}}."""
  return {name: r['methods'] for name, r in done.items()}


def best_head(methods: dict) -> str | None:
  """The head with the best mean validation mAP (chosen on validation, never on test)."""
  heads = {m: v['validation_average_precision_macro']['mean'] for m, v in methods.items()
           if m not in dict(BASELINES) and
           v['validation_average_precision_macro']['mean'] is not None}
  return max(heads, key=heads.get) if heads else None


def _cell(s: dict, key: str) -> str:
  if s['mean'] is None:
    return 'n/a'
  if key == 'parameters':
    return f'{s["mean"]:,.0f}'
  d = 1 if key.endswith('_s') else 3
  return f'{s["mean"]:.{d}f}' + (f' ± {s["std"]:.{d}f}' if s['std'] is not None else '')


def _compute_s(done: dict) -> float:
  """Seconds of every run (wall, compiling included) and every baseline in `done`."""
  return sum(sum(r['wall_s'] or 0 for r in d['runs']) + (d['baseline']['wall_s'] or 0)
             for d in done.values())


def elapsed_s(invocations: list[dict]) -> float:
  """Seconds covered by the invocations' [started_at, + wall_s] intervals, overlaps counted
  once (invocations with `--config.only` may run side by side, each in its own workdir)."""
  spans = sorted((t, t + inv['wall_s']) for inv in invocations
                 for t in [datetime.datetime.fromisoformat(inv['started_at']).timestamp()])
  total, end = 0.0, -np.inf
  for start, stop in spans:
    total += max(0.0, stop - max(start, end))
    end = max(end, stop)
  return total


def markdown(plan, entries, done: dict, invocations: list[dict]) -> str:
  md = ['# Every head on each data set\'s best trunk, with the classical baselines', '']
  trained = [inv for inv in invocations if inv.get('entries')]  # report-only ones train nothing
  # Each distinct command once, in the order first run: a rerun of the same command resumes it.
  for command in dict.fromkeys(' '.join(inv['command']) for inv in trained if inv.get('command')):
    md += ['```', command, '```', '']
  n = len(plan.seeds)
  total, elapsed = sum(inv['wall_s'] for inv in trained), elapsed_s(trained)
  md += [f'Wall time: {elapsed / 60:.1f} min over {len(trained)} invocation(s) of the command '
         + (f'({total / 60:.1f} min added up: some ran at the same time) '
            if total > elapsed + 1 else '')
         + '(' + ', '.join(f'{inv["started_at"]}: {inv["wall_s"] / 60:.1f} min'
                         for inv in trained)
         + '; a rerun reads the runs that finished and trains the rest; one stopped early counts '
         f'until its last write); the runs and baselines shown took {_compute_s(done) / 60:.1f} '
         'min between them'
         + ''.join(f' ({inv["command"][1]} ran on {inv["cores"]} of the {inv["cpus"]} CPU cores)'
                   for inv in trained[:1] if 'cores' in inv and inv.get('command'))
         + '.', '']
  if plan.quick:
    md += ['**Quick version** (`--config.quick=True`): one seed, fewer rows and epochs '
           '(below); a smoke test of the pipeline, not the study.', '']
  md += [f'Heads: mean ± sample std (ddof=1) over seeds {", ".join(map(str, plan.seeds))}'
         + ('' if n > 1 else ' (**one seed: no spread**)') + '. `sklearn_baseline`: TF-IDF of '
         'word 1-2-grams and char_wb 2-5-grams + the numbers (pixels for the mosaics) -> '
         'one-vs-rest logistic regression (liblinear), C in {0.25, 1, 4, 16} chosen on '
         'validation macro mAP; `label_prior`: the train label frequencies. Both are '
         'deterministic single fits, on the same rows and splits as the heads '
         '(`./launch.sh baseline EXPERIMENT`). Test metrics at each head\'s own threshold '
         '(0.5; 1/C for softmax) unless `@tuned` (per-class thresholds tuned on validation). '
         'Best head: by mean validation mAP. Time: wall clock less compiling (heads), '
         'featurizing and fitting every C (baseline).', '']
  md += ['![test mAP per method](compare_heads.png)', '']
  missing = [e.name for e in entries if e.name not in done]
  if missing:
    md += [f'**Not finished yet**: {", ".join(missing)}.', '']
  header = ['method'] + [label for *_, label in METRICS] + [label for _, label in COSTS]
  for e in entries:
    if e.name not in done:
      continue
    r = done[e.name]
    methods, base = r['methods'], r['baseline']
    md += [f'## {e.name}', '',
           f'Experiment `{e.experiment}`, output `{e.output}`; trunk: {e.trunk}. '
           + (f'Trunk chosen on validation: {e.chosen}. ' if e.chosen else '') + 'Seeds: '
           + (', '.join(map(str, r['seeds'])) or 'none')
           + (f' (**{len(r["seeds"])} of the {n} planned: the study was stopped early**)'
              if len(r['seeds']) < n else '') + '. Settings: '
           + (', '.join(f'`{k}={v}`' for k, v in r['set'].items()) or 'the experiment\'s')
           + '. Baseline: C = ' + ', '.join(f'{c:g}' for c in base['c'].values())
           + ', features ' + ', '.join(f'{k} {v:,}' for k, v in base['features'].items())
           + '.' + (f' Each head\'s runs: [compare_heads/{e.name}.md](compare_heads/{e.name}.md).'
                    if r['seeds'] else ''), '']
    if not r['seeds']:
      md += ['**No head has finished a pass here yet**: the baselines alone.', '']
    rows = []
    best = best_head(methods)
    for m, v in methods.items():
      name = f'`{m}`' + (' (best on val)' if m == best else '')
      rows.append([name] + [_cell(v[k], k) for k, *_ in METRICS]
                  + [_cell(v[k], k) if k in v else '' for k, _ in COSTS])
    md += md_lib.table(header, rows)
    for head, why in e.skip:
      md += [f'`{head}`: not trained here: {why}.', '']
    if best:
      gap = (methods[best]['average_precision_macro']['mean']
             - methods['sklearn_baseline']['average_precision_macro']['mean'])
      md += [f'Best head on validation: `{best}`; its test mAP minus the baseline\'s: '
             f'{gap:+.3f}.', '']
  return '\n'.join(md)


def plot(entries, done: dict, path: str) -> bool:
  """Test mAP per method (mean ± std over seeds), one panel per entry; baselines as lines."""
  shown = [e for e in entries if e.name in done]
  if not shown:
    return False
  fig = Figure(figsize=(11, 2.6 * len(shown)), dpi=100, layout='constrained')
  axes = fig.subplots(len(shown), 1, squeeze=False)[:, 0]
  for ax, e in zip(axes, shown):
    methods = done[e.name]['methods']
    heads = [m for m in methods if m not in dict(BASELINES)]
    means = [methods[m]['average_precision_macro']['mean'] for m in heads]
    stds = [methods[m]['average_precision_macro']['std'] or 0.0 for m in heads]
    y = np.arange(len(heads))
    ax.errorbar([v if v is not None else np.nan for v in means], y, xerr=stds, fmt='o',
                capsize=3, color='C0', label='head (mean ± std over seeds)')
    lr = methods['sklearn_baseline']['average_precision_macro']['mean']
    prior = methods['label_prior']['average_precision_macro']['mean']
    if lr is not None:
      ax.axvline(lr, color='C3', ls='--', label=f'TF-IDF + logistic regression ({lr:.3f})')
    ax.set_yticks(y, heads)
    ax.invert_yaxis()
    known = [v for v in means + [lr] if v is not None]
    if known:
      lo, hi = min(known), max(known)
      pad = max(0.01, 0.15 * (hi - lo))
      ax.set_xlim(lo - pad, min(1.0, hi + pad) if hi < 1 else hi + pad / 4)
    ax.set_title(f'{e.name} (output {e.output}): test mAP; label prior '
                 + (f'{prior:.3f}' if prior is not None else 'n/a'), fontsize=10)
    ax.grid(alpha=0.3, axis='x')
    ax.legend(fontsize=8, loc='lower right')
  fig.savefig(path)
  return True


def write(results: str, plan, entries, done: dict, invocations: list[dict],
          entry_dirs: dict) -> list[str]:
  """Writes the results folder (see the module docstring); returns the paths."""
  os.makedirs(os.path.join(results, 'compare_heads'), exist_ok=True)
  written = []
  path = os.path.join(results, 'compare_heads.json')
  writers.write_json(path, table_json(done))
  written.append(path)
  path = os.path.join(results, 'compare_heads_runs.json')
  writers.write_json(path, {'invocations': invocations, 'quick': plan.quick,
                            'seeds': list(plan.seeds), 'entries': done,
                            'missing': [e.name for e in entries if e.name not in done]})
  written.append(path)
  png = os.path.join(results, 'compare_heads.png')
  if plot(entries, done, png):
    written.append(png)
  path = os.path.join(results, 'compare_heads.md')
  writers.atomic_write(path, markdown(plan, entries, done, invocations))
  written.append(path)
  for name, folder in entry_dirs.items():
    md = os.path.join(folder, 'compare.md')
    if os.path.exists(md):
      with open(md, encoding='utf-8') as f:
        text = f.read().replace('(curves.png)', f'({name}_curves.png)')
      writers.atomic_write(os.path.join(results, 'compare_heads', f'{name}.md'), text)
    curves = os.path.join(folder, 'curves.png')
    if os.path.exists(curves):
      with open(curves, 'rb') as src:
        data = src.read()
      with open(os.path.join(results, 'compare_heads', f'{name}_curves.png'), 'wb') as dst:
        dst.write(data)
  return written
