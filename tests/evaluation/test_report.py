"""mlheads.report on small random data: files, tables, numbers, plots."""

import json
import os
import re

from matplotlib import image
import numpy as np
import pytest

from mlheads.evaluation import metrics
from mlheads.evaluation import plots
from mlheads.evaluation import report

N = 40
GENRES = ['Action', 'Comedy', 'Drama', 'Short film']  # 'Short film': no
                                                      # positive in test.
RATING = ['rating', 'votes']
THRESHOLDS = [0.3, 0.45, 0.6, 0.5]
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _binary(seed, no_positive=None):
  rng = np.random.default_rng(seed)
  labels = (rng.random((N, len(GENRES))) < 0.4).astype(np.int64)
  if no_positive is not None:
    labels[:, no_positive] = 0
  # Scores correlated with labels, rounded so that ties occur.
  scores = np.clip(0.35 * labels + 0.65 * rng.random(labels.shape), 0, 1)
  scores = np.round(scores, 2).astype(np.float32)
  mask = (rng.random(labels.shape) > 0.1).astype(np.int64)
  return {'scores': scores, 'labels': labels, 'mask': mask}


def _regression(seed):
  rng = np.random.default_rng(seed)
  labels = rng.normal(size=(N, 2))
  return {'scores': labels + 0.3 * rng.normal(size=(N, 2)), 'labels': labels,
          'mask': np.ones((N, 2), np.int64)}


def _binary_summary(p, threshold=0.5):
  m = metrics.compute(p['labels'], p['scores'], threshold, p['mask'])
  m = {k: (None if np.isnan(v) else v) for k, v in m.items()}
  return {'loss': 0.61, **m}


@pytest.fixture(name='run')
def _run(tmp_path):
  return make_run(tmp_path)


def make_run(tmp_path):
  """(workdir, summary, predictions, class_names) of a tiny two-output run.

  Writes WORKDIR/metrics.jsonl (ending in a truncated line).
  """
  preds = {
      'validation': {'genres': _binary(1), 'rating': _regression(2)},
      'test': {'genres': _binary(3, no_positive=3), 'rating': _regression(4)},
  }
  reg = {'loss': 0.09, 'mse': 0.09, 'mae': 0.24, 'r2_0': 0.91, 'r2_1': None}
  summary = {
      'experiment': 'movie_genres', 'steps': 900, 'parameters': 123456,
      'validation': {'genres': _binary_summary(preds['validation']['genres']),
                     'rating': reg},
      'test': {'genres': _binary_summary(preds['test']['genres']),
               'rating': reg},
      'test_tuned': {'genres': _binary_summary(preds['test']['genres'],
                                               np.array(THRESHOLDS))},
      'thresholds': {'genres': {'per_class': THRESHOLDS}},
  }
  summary = json.loads(json.dumps(summary))  # As the trainer's metrics.json.
  lines = []
  for step in range(100, 1000, 100):
    lines.append({'step': step, 'split': 'train', 'epoch': step / 300,
                  'loss': 1.0 / step ** 0.3, 'loss_genres': 0.7 / step ** 0.3,
                  'loss_rating': 0.3 / step ** 0.3, 'examples_per_s': 1e4})
    if step % 300 == 0:
      lines.append({'step': step, 'split': 'validation/genres',
                    'epoch': step // 300, 'loss': 0.6 - step / 1e4,
                    'average_precision_macro': 0.5 + step / 1e4,
                    'roc_auc_macro': None if step == 300 else 0.7})
      lines.append({'step': step, 'split': 'validation/rating',
                    'epoch': step // 300, 'loss': 0.2 - step / 1e5})
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    f.write(''.join(json.dumps(r) + '\n' for r in lines))
    f.write('{"step": 1000, "split": "tra')  # Killed mid-write.
  return (str(tmp_path), summary, preds,
          {'genres': GENRES, 'rating': RATING})


def _class_rows(text):
  """The per-class table as {class name: {column: cell}}."""
  lines = text.splitlines()
  start = next(i for i, l in enumerate(lines) if l.startswith('| class |'))
  header = [c.strip() for c in lines[start].strip('|').split('|')]
  rows = {}
  for line in lines[start + 2:]:
    if not line.startswith('|'):
      break
    cells = [c.strip() for c in line.strip('|').split('|')]
    rows[cells[0]] = dict(zip(header, cells))
  return rows


def _check_png(path, min_h=250, min_w=400):
  with open(path, 'rb') as f:
    assert f.read(8) == PNG_MAGIC, path
  img = image.imread(path)
  h, w = img.shape[:2]
  assert min_h <= h <= 3000 and min_w <= w <= 3000, (path, img.shape)


def test_write_creates_report_and_plots(run):
  workdir = run[0]
  paths = report.write(*run)
  names = [os.path.relpath(p, workdir) for p in paths]
  assert names == ['report.md', 'plots/learning_curves.png',
                   'plots/pr_genres.png', 'plots/scatter_rating.png']
  for p in paths[1:]:
    _check_png(p)
  text = open(paths[0]).read()
  for n in names[1:]:
    assert f']({n})' in text  # Relative links, as a viewer of WORKDIR needs.
  assert '1 unreadable line(s)' in text


def test_report_text(run):
  text = open(report.write(*run)[0]).read()
  assert text.startswith('# Run report: movie_genres')
  assert '123,456' in text and '900' in text
  for name in GENRES + RATING:
    assert name in text
  assert not re.search(r'\bnan\b', text, re.IGNORECASE)
  assert not re.search(r'\binf\b', text, re.IGNORECASE)
  rows = _class_rows(text)
  assert set(rows) == set(GENRES)
  # The class without a positive: undefined, never 0.
  short = rows['Short film']
  assert short['support'] == '0'
  for col in ('R @0.5', 'AP', 'ROC AUC', 'R @tuned'):
    assert short[col] == 'n/a', col
  assert re.search(r'Left out of the macro AP.*`Short film` \(no positive\)',
                   text)
  # None in the summary (R² of 'votes') prints as n/a in the regression table.
  assert re.search(r'\| R² `votes` \| n/a \| n/a \|', text)


def test_per_class_numbers_equal_metrics(run):
  _, _, preds, _ = run
  text = open(report.write(*run)[0]).read()
  rows = _class_rows(text)
  p = preds['test']['genres']
  for thr, suffix in ((0.5, '@0.5'), (np.array(THRESHOLDS), '@tuned')):
    want = metrics.per_class(p['labels'], p['scores'], thr, p['mask'])
    for i, name in enumerate(GENRES):
      row = rows[name]
      assert row['support'] == str(want['support'][i])
      assert row['n'] == str(want['count'][i])
      for key, col in (('precision', 'P'), ('recall', 'R'), ('f1', 'F1')):
        v = want[key][i]
        assert row[f'{col} {suffix}'] == ('n/a' if np.isnan(v) else
                                          f'{v:.3f}'), (name, col, suffix)
      for key, col in (('average_precision', 'AP'), ('roc_auc', 'ROC AUC')):
        v = want[key][i]
        assert row[col] == ('n/a' if np.isnan(v) else f'{v:.3f}'), (name, col)
      assert float(row['threshold']) == pytest.approx(THRESHOLDS[i])
  # Something must differ between the two threshold settings, or the
  # comparison above could not tell the columns apart.
  assert any(r['F1 @0.5'] != r['F1 @tuned'] for r in rows.values())


@pytest.mark.parametrize('content', [None, '', '\n'])
def test_missing_or_empty_jsonl_still_reports(run, content):
  workdir = run[0]
  os.remove(os.path.join(workdir, 'metrics.jsonl'))
  if content is not None:
    with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
      f.write(content)
  paths = report.write(*run)
  assert not any(p.endswith('learning_curves.png') for p in paths)
  text = open(paths[0]).read()
  assert 'No learning curves' in text
  assert len(_class_rows(text)) == len(GENRES)


def test_learning_curves_without_epoch(tmp_path):
  # No 'epoch' anywhere, nulls, no validation: still a plot, by step.
  path = str(tmp_path / 'lc.png')
  records = [{'step': s, 'split': 'train', 'loss': None if s == 2 else 1 / s}
             for s in range(1, 6)]
  assert plots.plot_learning_curves(records, path)
  _check_png(path)
  assert not plots.plot_learning_curves(
      [{'step': 1, 'split': 'train', 'loss': None}], str(tmp_path / 'x.png'))


def test_pr_curve_area_is_average_precision():
  p = _binary(5)
  want = metrics.per_class(p['labels'], p['scores'], 0.5, p['mask'])
  for i in range(len(GENRES)):
    recall, precision = plots.pr_curve(p['labels'][:, i], p['scores'][:, i],
                                        p['mask'][:, i])
    assert np.all(np.diff(recall) > 0) and recall[-1] == 1
    ap = np.sum(np.diff(recall) * precision[1:])
    np.testing.assert_allclose(ap, want['average_precision'][i], rtol=1e-5)
  assert plots.pr_curve(np.zeros(4), np.ones(4)) is None


def test_many_classes_use_panels_and_say_so(tmp_path):
  rng = np.random.default_rng(0)
  k = 30
  labels = (rng.random((N, k)) < 0.3).astype(np.int64)
  scores = rng.random((N, k)).astype(np.float32)
  columns = {i: {'labels': labels[:, i], 'scores': scores[:, i]} for i in range(k)}
  names = [f'class {i}' for i in range(k)]
  per_cls = metrics.per_class(labels, scores)
  note = plots.plot_pr(columns, names, per_cls, 'tags', str(tmp_path / 'pr.png'))
  assert f'shows the {plots.MAX_PR_PANELS} classes' in note
  _check_png(str(tmp_path / 'pr.png'), min_h=600, min_w=1000)
