"""mlheads.baselines against scikit-learn run directly on the same rows (tiny slices)."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, f1_score
from sklearn.multiclass import OneVsRestClassifier

from experiments import digit_mosaics as digits_exp
from experiments import from_csv as from_csv_exp
from experiments import headline_counts
from experiments import movie_genres
from mlheads import baselines
from mlheads import errors
from mlheads.data import base
from mlheads.data import movies
from mlheads.data import pipeline
from mlheads.data import splits
import mlheads.data as data_lib

ROWS = 400
C_GRID = (0.25, 4.0)


def _movie_config(data_dir):
  c = movie_genres.get_config()
  c.data.dir, c.data.max_rows, c.data.vocab_size, c.data.max_len = data_dir, ROWS, 300, 6
  return c


@pytest.fixture(scope='module')
def movie_fit(tmp_path_factory):
  config = _movie_config(str(tmp_path_factory.mktemp('tfds')))
  lines = []
  return config, baselines.fit(config, c_grid=C_GRID, jobs=2, progress=lines.append), lines


def _macro_ap(y, p):
  has = np.flatnonzero(y.sum(0) > 0)
  return float(np.mean([average_precision_score(y[:, k], p[:, k]) for k in has]))


def test_logistic_equals_sklearn_one_vs_rest_on_the_same_rows(movie_fit):
  """The table's own rows, split the fixed way, featurized and fitted by scikit-learn alone:
  the same C is chosen and the same probabilities come out."""
  _, fitted, _ = movie_fit
  df = movies.load_table().iloc[:ROWS].reset_index(drop=True)
  parts = dict(zip(base.SPLITS, splits.split_indices(ROWS, (0.8, 0.1, 0.1), 0)))
  y = {s: df[list(movies.GENRES)].to_numpy(np.float64)[i] for s, i in parts.items()}
  raw = movies.numeric_features(df)
  mean, std = raw[parts['train']].mean(0), raw[parts['train']].std(0)
  nums = {s: (raw[i] - mean) / np.where(std > 0, std, 1) for s, i in parts.items()}
  titles = {s: df['title'].iloc[i].astype(str).tolist() for s, i in parts.items()}
  vecs = [TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
          TfidfVectorizer(analyzer='char_wb', ngram_range=(2, 5), min_df=2, sublinear_tf=True)]
  for v in vecs:
    v.fit(titles['train'])
  x = {s: sp.hstack([v.transform(titles[s]) for v in vecs] + [sp.csr_matrix(nums[s])]).tocsr()
       for s in parts}
  best = None
  for c in C_GRID:
    clf = OneVsRestClassifier(LogisticRegression(C=c, solver='liblinear', max_iter=1000))
    clf.fit(x['train'], y['train'])
    val = _macro_ap(y['validation'], clf.predict_proba(x['validation']))
    if best is None or val > best[0]:
      best = (val, c, clf.predict_proba(x['test']))
  _, c, p_test = best
  assert fitted.summary['baseline']['c'] == {'genres': c}
  test = fitted.predictions['logistic']['test']['genres']
  np.testing.assert_array_equal(test['labels'], y['test'])
  np.testing.assert_allclose(test['scores'], p_test, rtol=1e-5, atol=1e-6)
  m = fitted.summary['test']['genres']
  assert m['average_precision_macro'] == pytest.approx(_macro_ap(y['test'], p_test), abs=1e-5)
  assert m['f1_micro'] == pytest.approx(
      f1_score(y['test'], p_test > 0.5, average='micro', zero_division=0), abs=1e-6)
  assert fitted.summary['baseline']['features']['numbers'] == 6
  assert fitted.summary['baseline']['features']['word'] == len(vecs[0].vocabulary_)
  assert fitted.summary['baseline']['features']['char'] == len(vecs[1].vocabulary_)


def test_label_prior_is_the_train_frequencies(movie_fit):
  _, fitted, _ = movie_fit
  df = movies.load_table().iloc[:ROWS].reset_index(drop=True)
  train = splits.split_indices(ROWS, (0.8, 0.1, 0.1), 0)[0]
  freq = df[list(movies.GENRES)].to_numpy(np.float64)[train].mean(0)
  prior = fitted.predictions['label_prior']
  for s in ('validation', 'test'):
    np.testing.assert_allclose(prior[s]['genres']['scores'], np.tile(freq, (len(
        prior[s]['genres']['scores']), 1)), rtol=1e-6)
  y = prior['test']['genres']['labels']
  # A constant score ranks every example alike: AP is each class's positive rate.
  has = y.sum(0) > 0
  assert fitted.summary['label_prior']['test']['genres']['average_precision_macro'] == (
      pytest.approx(y.mean(0)[has].mean(), abs=1e-6))


def test_summary_has_a_runs_sections_and_says_what_was_fitted(movie_fit):
  _, fitted, lines = movie_fit
  s = fitted.summary
  for section in ('validation', 'test', 'test_tuned', 'thresholds', 'default_thresholds'):
    assert section in s and section in s['label_prior']
  assert len(s['thresholds']['genres']['per_class']) == 7
  assert s['default_thresholds'] == {'genres': 0.5}
  assert set(s['test']['genres']) == set(s['validation']['genres'])
  info = s['baseline']
  assert set(info['validation_map']['genres']) == set(C_GRID)
  assert info['validation_map']['genres'][info['c']['genres']] == pytest.approx(
      s['validation']['genres']['average_precision_macro'])
  assert info['rows'] == {'train': 320, 'validation': 40, 'test': 40}
  # One progress line per C, then the choice.
  per_c = [l for l in lines if ', C=' in l]
  assert len(per_c) == len(C_GRID) and all('validation mAP' in l for l in per_c)
  assert any('chosen on validation' in l for l in lines)


def test_unknown_labels_are_left_out_of_each_class_fit(tmp_path):
  """from_csv with unknown label cells: each class is fitted on its known train rows only."""
  rng = np.random.default_rng(0)
  words = ['night', 'day', 'love', 'war', 'man', 'city', 'blue', 'king']
  lines = ['title,score,a,b']
  for i in range(200):
    w = rng.choice(words, size=3)
    a = '' if i % 5 == 0 else str(int('love' in w))
    b = '' if i % 7 == 0 else str(int('war' in w or rng.random() < 0.2))
    lines.append(f'{" ".join(w)},{rng.normal():.3f},{a},{b}')
  path = tmp_path / 'f.csv'
  path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
  c = from_csv_exp.get_config()
  c.data.path, c.data.dir, c.data.text, c.data.features, c.data.labels = (
      str(path), str(tmp_path / 'tfds'), 'title', 'score', 'a,b')
  c.data.vocab_size, c.data.max_len = 50, 4
  fitted = baselines.fit(c, c_grid=(1.0,), jobs=1, progress=lambda _: None)
  rows = data_lib.get('from_csv').rows(c.data)
  ds = data_lib.load_checked(c)
  arrays = {s: pipeline.read_split(ds.split(s)) for s in ('train', 'test')}
  texts = {s: rows.texts(s) for s in ('train', 'test')}
  feats = baselines.features(texts, {s: baselines.numbers(ds, arrays[s]) for s in texts})
  x = feats.matrices
  y, m = arrays['train']['labels'], arrays['train']['labels_mask'] > 0
  assert (~m).any(axis=0).all()  # both classes have unknown train cells
  for k in range(2):
    clf = LogisticRegression(C=1.0, solver='liblinear', max_iter=1000).fit(
        x['train'][m[:, k]], y[m[:, k], k])
    np.testing.assert_allclose(fitted.predictions['logistic']['test']['labels']['scores'][:, k],
                               clf.predict_proba(x['test'])[:, 1], rtol=1e-5, atol=1e-6)
  known = m.sum(0)
  np.testing.assert_allclose(fitted.predictions['label_prior']['test']['labels']['scores'][0],
                             (y * m).sum(0) / known, rtol=1e-6)


def test_images_are_fitted_on_their_pixels(tmp_path):
  c = digits_exp.get_config()
  c.data.dir, c.data.max_rows = str(tmp_path), 120
  fitted = baselines.fit(c, c_grid=(1.0,), jobs=2, progress=lambda _: None)
  assert fitted.summary['baseline']['features'] == {'numbers': 256}
  assert 0.0 <= fitted.summary['test']['digits']['average_precision_macro'] <= 1.0


def test_one_label_class_is_a_constant_as_in_one_vs_rest():
  x = sp.csr_matrix(np.eye(4))
  for value in (0.0, 1.0):
    model = baselines.fit_class(x, np.full(4, value), np.ones(4, bool), 1.0)
    np.testing.assert_array_equal(model.predict_proba(x)[:, 1], value)


def test_rows_in_an_old_shuffled_order_are_refused(movie_fit):
  config, _, _ = movie_fit
  ds = data_lib.load(config.data)
  rows = data_lib.get('movie_genres').rows(config.data)
  sizes = {s: len(rows.parts[s]) for s in base.SPLITS}
  assert baselines.split_texts(ds, rows, sizes)['test'] == rows.texts('test')
  old = ds.__class__(**{**ds.__dict__, 'meta': {k: v for k, v in ds.meta.items()
                                               if k != 'record_order'}})
  with pytest.raises(errors.UsageError, match='older mlheads'):
    baselines.split_texts(old, rows, sizes)
  with pytest.raises(errors.UsageError, match='not the records per split'):
    baselines.split_texts(ds, rows, {**sizes, 'test': sizes['test'] + 1})


def test_regression_outputs_and_bad_c_are_usage_errors(tmp_path):
  c = headline_counts.get_config()
  c.data.dir, c.data.max_rows, c.data.vocab_size, c.data.max_len = str(tmp_path), 200, 50, 8
  with pytest.raises(errors.UsageError, match='binary targets only'):
    baselines.fit(c, progress=lambda _: None)
  with pytest.raises(errors.UsageError, match='C values must be > 0'):
    baselines.fit(c, c_grid=(0.0,), progress=lambda _: None)


def test_a_run_with_baseline_true_reports_the_baseline_beside_its_own_map(tiny_config,
                                                                          tmp_path):
  """`--config.baseline=True`: metrics.json gets the baselines' test mAP on the same splits,
  the very numbers `baselines.fit` gives alone, and the summary table prints them."""
  from mlheads import console  # pylint: disable=g-import-not-at-top
  from mlheads import train  # pylint: disable=g-import-not-at-top
  tiny_config.baseline = True
  summary = train.train_and_evaluate(tiny_config, str(tmp_path / 'run'))
  alone = baselines.fit(tiny_config, progress=lambda _: None).summary
  for out in ('main', 'aux'):
    got = summary['baseline'][out]
    assert got['run'] == summary['test'][out]['average_precision_macro']
    assert got['logistic'] == alone['test'][out]['average_precision_macro']
    assert got['label_prior'] == alone['label_prior']['test'][out]['average_precision_macro']
  assert summary['baseline']['c'] == alone['baseline']['c']
  line = next(l for l in console.summary_table(summary).splitlines()
              if l.startswith('Baseline, main:'))
  assert f'{summary["test"]["main"]["average_precision_macro"]:.4f} (this run)' in line
  assert f'{alone["test"]["main"]["average_precision_macro"]:.4f} (TF-IDF' in line


def test_baseline_true_on_a_regression_output_fails_before_any_data_is_read(tmp_path):
  from mlheads import train  # pylint: disable=g-import-not-at-top
  c = headline_counts.get_config()
  c.data.dir, c.baseline = str(tmp_path / 'tfds'), True
  with pytest.raises(errors.UsageError, match='binary targets only'):
    train.check_config(c)
  assert not (tmp_path / 'tfds').exists()


def test_label_lists_stored_sparse_and_a_stratified_split(tmp_path):
  """from_csv's label_list layout (stored sparse) split by iterative stratification: the
  baseline sees the dense labels of the very rows each split holds, and reports the @k,
  propensity and calibration figures a run does."""
  rng = np.random.default_rng(1)
  words = ['night', 'day', 'love', 'war', 'man', 'city', 'blue', 'king']
  lines = ['title,tags']
  for i in range(200):
    w = rng.choice(words, size=3)
    tags = [t for t, on in (('romance', 'love' in w), ('action', 'war' in w),
                            ('rare', i % 25 == 0)) if on]
    lines.append(f'{" ".join(w)},{"|".join(tags) or "|"}')
  path = tmp_path / 'f.csv'
  path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
  c = from_csv_exp.get_config()
  c.data.path, c.data.dir, c.data.text, c.data.label_list = (
      str(path), str(tmp_path / 'tfds'), 'title', 'tags')
  c.data.vocab_size, c.data.max_len, c.data.split = 50, 4, 'stratified'
  fitted = baselines.fit(c, c_grid=(1.0,), jobs=1, progress=lambda _: None)
  ds = data_lib.load(c.data)
  assert ds.targets['labels'].sparse and list(ds.targets['labels'].names) == [
      'action', 'rare', 'romance']
  rows = data_lib.get('from_csv').rows(c.data)
  assert 'iterative stratification' in rows.rule
  for s in ('validation', 'test'):
    cells = rows.split(s)['tags']
    want = np.array([[name in str(cell).split('|') for name in ('action', 'rare', 'romance')]
                     for cell in cells], np.float32)
    got = fitted.predictions['logistic'][s]['labels']
    np.testing.assert_array_equal(got['labels'], want)
    assert got['scores'].shape == want.shape
    assert want[:, 1].sum() >= 1  # the rare tag (8 rows) reaches every split
  m = fitted.summary['test']['labels']
  for key in ('precision_at_1', 'psp_at_3', 'ndcg_at_5'):
    assert np.isfinite(m[key]), key
  assert set(fitted.summary['calibration']['labels']['test']) == {'before', 'after'}


def test_more_classes_than_one_vs_rest_fits_are_refused():
  ds = base.Dataset.of_fields('big', {
      'labels': base.Field((baselines.MAX_CLASSES + 1,), 'int32', 'binary', sparse=3)})
  with pytest.raises(errors.UsageError, match='1,001 classes; the one-vs-rest baseline fits '
                                              'at most 1,000'):
    baselines.output_heads({'main': 'labels'}, ds)
