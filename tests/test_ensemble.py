"""mlheads.ensemble: the network blended with the logistic baseline, the weight chosen on
validation; predict gives exactly what the final evaluation scored."""

import csv
import os
import types

import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from sklearn.metrics import log_loss as sk_log_loss

from experiments import from_csv as from_csv_exp
from mlheads import baselines
from mlheads import ensemble
from mlheads import errors
from mlheads.data import pipeline
from mlheads.model import heads as heads_lib
import mlheads.data as data_lib


def _load(config):
  """The data set and its splits read whole (training streams them; these tests compare)."""
  ds = data_lib.load_checked(config)
  return ds, {s: pipeline.read_split(ds.split(s)) for s in ('train', 'validation', 'test')}


WORDS = ['night', 'day', 'love', 'war', 'man', 'city', 'blue', 'king', 'sea', 'gold']


def _csv(tmp_path, n=240):
  """A tiny table: a title of 3 words and a number; label a follows 'love', b 'war' or a
  high score (with noise)."""
  rng = np.random.default_rng(0)
  lines = ['title,score,a,b']
  for _ in range(n):
    w, x = rng.choice(WORDS, size=3), rng.normal()
    a = int('love' in w or rng.random() < 0.1)
    b = int('war' in w or x > 1.0 or rng.random() < 0.1)
    lines.append(f'{" ".join(w)},{x:.3f},{a},{b}')
  path = tmp_path / 'titles.csv'
  path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
  c = from_csv_exp.get_config()
  c.data.path, c.data.dir, c.data.text, c.data.features, c.data.labels = (
      str(path), str(tmp_path / 'tfds'), 'title', 'score', 'a,b')
  c.data.vocab_size, c.data.max_len = 50, 4
  return c


@pytest.fixture(scope='module')
def csv_fit(tmp_path_factory):
  config = _csv(tmp_path_factory.mktemp('ens'))
  return config, baselines.fit(config, c_grid=(1.0,), jobs=1, progress=lambda _: None)


def _macro_ap(y, p):
  return float(np.mean([average_precision_score(y[:, k], p[:, k])
                        for k in range(y.shape[1]) if y[:, k].any()]))


def test_the_linear_arrays_score_new_rows_as_the_fitted_models_do(csv_fit):
  """Rebuilt from vocabularies, idf and coefficients (no pickle), the logistic model scores
  the raw test rows exactly as scikit-learn's fitted models scored them."""
  config, fitted = csv_fit
  lin = ensemble.Linear.of(fitted)
  assert set(lin.vocabularies) == {'word', 'char'} and lin.text == ('title',)
  rows = data_lib.get('from_csv').rows(config.data)
  ds, arrays = _load(config)
  got = lin.scores(ds, rows.split('test'), arrays['test'])['labels']
  want = fitted.predictions['logistic']['test']['labels']['scores']
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_a_constant_class_scores_its_value():
  """A class whose known train labels are all one value is scikit-learn's constant."""
  fitted = types.SimpleNamespace(vectorizers={}, text=(), width=1, models={
      't': [baselines.Constant(1.0), baselines.fit_class(
          np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1]), np.ones(4, bool), 1.0)]})
  lin = ensemble.Linear.of(fitted)
  x = np.array([[0.5], [2.5]])
  ds = types.SimpleNamespace(inputs={'x': types.SimpleNamespace(kind='features')})
  p = lin.scores(ds, None, {'x': x})['t']
  np.testing.assert_array_equal(p[:, 0], 1.0)
  np.testing.assert_allclose(p[:, 1], fitted.models['t'][1].predict_proba(x)[:, 1], rtol=1e-6)


def _preds(y, scores):
  head = heads_lib.SigmoidHead(num_classes=y.shape[1], target='t')
  return baselines.predictions(head, scores, y, np.ones_like(y))


def _fake(rng, n=300, k=3):
  """Two noisy views of the same labels: the network's and the logistic model's."""
  y = (rng.random((n, k)) < 0.3).astype(np.float32)
  view = lambda noise: _preds(y, 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, noise, y.shape)))))
  heads = {'o': heads_lib.SigmoidHead(num_classes=k, target='t')}
  return heads, {'o': view(1.5)}, {'o': view(1.0)}


def _sk_loss(preds):
  """scikit-learn's log loss of the known labels, the probabilities clipped as mlheads clips."""
  known = preds['mask'].astype(bool)
  p = np.clip(preds['scores'].astype(np.float64), 1e-7, 1 - 1e-7)
  return sk_log_loss(preds['labels'][known], p[known], labels=[0, 1])


def test_the_weight_is_the_best_on_validation():
  heads, net, lin = _fake(np.random.default_rng(1))
  weights, val_map, val_loss = ensemble.choose_weights(heads, net, lin)
  y = net['o']['labels']
  mixed = {w: _preds(y, ensemble.mix(net['o']['scores'], lin['o']['scores'], w))
           for w in ensemble.WEIGHTS}
  by_w = {w: _macro_ap(y, m['scores']) for w, m in mixed.items()}
  w = weights['o']
  ranked = sorted(by_w.values())
  assert ranked[-1] - ranked[-2] > ensemble.MAP_TIE  # no tie here: the mAP decides
  assert by_w[w] == pytest.approx(max(by_w.values()), abs=1e-9)
  assert val_map['o'] == pytest.approx(by_w, abs=1e-6)  # mlheads' mAP = scikit-learn's
  assert val_loss['o'] == pytest.approx({w: _sk_loss(m) for w, m in mixed.items()}, rel=1e-6)
  assert 0.0 < w < 1.0  # two noisy views of the labels: the blend beats both here
  assert by_w[w] >= by_w[1.0]  # never below the network alone on validation


def test_a_tie_in_map_is_broken_by_the_lower_log_loss():
  """Both models rank the rows by the same score s (the network under-, the linear model
  overconfident), so every blend ranks them alike: the mAPs tie exactly and the log loss
  (scikit-learn's) picks the blend, where the mAP alone would keep the network."""
  rng = np.random.default_rng(4)
  s = rng.normal(size=(400, 3))
  y = (rng.random(s.shape) < 1 / (1 + np.exp(-2 * s))).astype(np.float32)
  net, lin = (_preds(y, 1 / (1 + np.exp(-a * s))) for a in (1.0, 4.0))
  heads = {'o': heads_lib.SigmoidHead(num_classes=3, target='t')}
  weights, val_map, val_loss = ensemble.choose_weights(heads, {'o': net}, {'o': lin})
  assert max(val_map['o'].values()) - min(val_map['o'].values()) < 1e-9
  sk = {w: _sk_loss(_preds(y, ensemble.mix(net['scores'], lin['scores'], w)))
        for w in ensemble.WEIGHTS}
  assert val_loss['o'] == pytest.approx(sk, rel=1e-6)
  assert weights['o'] == min(sk, key=sk.get) and weights['o'] not in (0.0, 1.0)


def test_the_rule_mAP_first_then_log_loss_then_the_network():
  choose = ensemble.choose
  t = ensemble.MAP_TIE
  # A better mAP (by more than the tolerance) wins even with a worse loss.
  assert choose({1.0: 0.90, 0.5: 0.90 + 2 * t}, {1.0: 0.1, 0.5: 0.5}) == 0.5
  # Within the tolerance, the lower loss wins, even a little below the best mAP.
  assert choose({1.0: 0.90 + t / 2, 0.5: 0.90, 0.0: 0.80}, {1.0: 0.3, 0.5: 0.2, 0.0: 0.1}) == 0.5
  # Equal losses: the first (the network's largest weight).
  assert choose({1.0: 0.9, 0.5: 0.9}, {1.0: 0.2, 0.5: 0.2}) == 1.0
  # NaN never wins; nothing finite: the network alone.
  assert choose({1.0: np.nan, 0.5: 0.8}, {1.0: 0.1, 0.5: 0.2}) == 0.5
  assert choose({1.0: 0.8, 0.5: 0.8}, {1.0: np.nan, 0.5: 0.2}) == 0.5
  assert choose({1.0: np.nan, 0.5: np.nan}, {1.0: 0.1, 0.5: 0.2}) == 1.0


def test_a_full_tie_goes_to_the_network_and_other_rows_are_refused():
  heads, net, _ = _fake(np.random.default_rng(2))
  assert ensemble.choose_weights(heads, net, net)[0] == {'o': 1.0}  # every weight ties
  _, other, _ = _fake(np.random.default_rng(3))
  with pytest.raises(errors.UsageError, match='not the network'):
    ensemble.choose_weights(heads, net, other)


def test_saved_and_loaded_it_blends_the_same_and_a_changed_file_is_refused(csv_fit, tmp_path):
  config, fitted = csv_fit
  heads = {'labels': heads_lib.SigmoidHead(num_classes=2, target='labels')}
  net = fitted.predictions['label_prior']  # a stand-in network: the label prior
  ds, arrays = _load(config)
  ens, sections, _ = ensemble.fit(config, heads, ds, arrays['train'], net, fitted, step=3)
  assert sections['thresholds'] == ens.thresholds
  sha = ensemble.save(str(tmp_path), ens)
  back = ensemble.load(str(tmp_path), sha)
  assert (back.step, back.weights, back.targets, back.thresholds, back.calibration,
          back.validation_map, back.validation_log_loss) == (
      ens.step, ens.weights, ens.targets, ens.thresholds, ens.calibration,
      ens.validation_map, ens.validation_log_loss)
  rows = data_lib.get('from_csv').rows(config.data)
  table, inputs = rows.split('test'), arrays['test']
  net_scores = {'labels': net['test']['labels']['scores']}
  np.testing.assert_array_equal(back.blend(net_scores, ds, table, inputs)['labels'],
                                ens.blend(net_scores, ds, table, inputs)['labels'])
  assert os.listdir(tmp_path) == [ensemble.ENSEMBLE_FILE]  # no temporary file left
  path = tmp_path / ensemble.ENSEMBLE_FILE
  data = bytearray(path.read_bytes())
  data[-1] ^= 1
  path.write_bytes(bytes(data))
  with pytest.raises(errors.UsageError, match='SHA-256'):
    ensemble.load(str(tmp_path), sha)
  path.unlink()
  with pytest.raises(errors.UsageError, match='missing'):
    ensemble.load(str(tmp_path), sha)
  assert ensemble.load(str(tmp_path), None) is None


@pytest.mark.slow
def test_a_from_csv_run_blends_and_predict_gives_what_it_scored(tmp_path):
  """The default from_csv run: metrics.json's sections are the blend's, the network's move to
  'network'; predict on the test rows writes the very probabilities the test mAP came from."""
  from mlheads import train  # pylint: disable=g-import-not-at-top
  from mlheads.commands import predict  # pylint: disable=g-import-not-at-top
  config = _csv(tmp_path)
  config.epochs, config.progress, config.batch_size = 2, False, 16
  assert config.ensemble  # the default
  workdir = str(tmp_path / 'run')
  summary = train.train_and_evaluate(config, workdir)
  assert set(summary['network']) >= {'validation', 'test', 'test_tuned', 'thresholds'}
  ens = summary['ensemble']
  assert ens['step'] == summary['evaluated_step'] and 0.0 <= ens['weights']['labels'] <= 1.0
  val_map, val_loss = ens['validation_map']['labels'], ens['validation_log_loss']['labels']
  assert set(val_map) == set(val_loss) == {f'{w:g}' for w in ensemble.WEIGHTS}
  chosen = f"{ens['weights']['labels']:g}"  # the record audits the choice: redone from it
  assert ensemble.choose(val_map, val_loss) == chosen
  assert summary['validation']['labels']['average_precision_macro'] == pytest.approx(
      val_map[chosen])
  assert val_map[chosen] >= max(val_map.values()) - ensemble.MAP_TIE
  assert val_map[chosen] >= (summary['network']['validation']['labels']
                             ['average_precision_macro'] - ensemble.MAP_TIE)

  rows = data_lib.get('from_csv').rows(config.data).split('test')
  src = tmp_path / 'test_rows.csv'
  rows[['title', 'score']].to_csv(src, index=False)
  out = tmp_path / 'pred.csv'
  s = predict.run(workdir, str(src), str(out), keep='none')
  assert 'blended with the logistic model' in s['chosen']
  with open(out, encoding='utf-8') as f:
    got = list(csv.DictReader(f))
  p = np.array([[float(r['labels:a']), float(r['labels:b'])] for r in got])
  _, arrays = _load(config)
  y = arrays['test']['labels']
  assert _macro_ap(y, p) == pytest.approx(
      summary['test']['labels']['average_precision_macro'], abs=1e-6)
