"""Every setting of every experiment is checked before anything runs (B26), and said in words
(B27): each numeric field perturbed to 0, -1 and a huge value, each name field to a bogus
name, through the checks the CLI runs (train.check_config), must be refused in one line
naming the field, or build a model that runs cleanly."""

import copy
import dataclasses
import importlib
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_dict
import numpy as np
import pytest

from conftest import ROOT
from mlheads import configs
from mlheads import errors
from mlheads import train
from mlheads.commands import compare
from mlheads.evaluation import runner
from mlheads.model import losses
from mlheads.model import model as model_lib
import mlheads.data as data_lib

EXPERIMENTS = sorted(p.stem for p in (pathlib.Path(ROOT) / 'experiments').glob('*.py')
                     if not p.name.startswith('_'))
HUGE = 10**12
# Paths and free text, not names or numbers: a bogus value is a legitimate folder or title.
FREE = {'experiment', 'data.dir', 'data.separator'}
# Fields a perturbation test cannot hold to "some value is refused": any value is meaningful.
NO_RANGE = {'grad_clip'}  # 0 = off; a huge value never clips; only negatives are refused.


def _csv(tmp_path) -> str:
  path = tmp_path / 'films.csv'
  rows = ['title,year,rating,kind,Drama,Action'] + [
      f'film {i} {"love" if i % 2 else "war"},{1950 + i},{i % 9},{"ab"[i % 2]},{i % 2},'
      f'{(i // 2) % 2}' for i in range(60)]
  path.write_text('\n'.join(rows) + '\n')
  return str(path)


def _experiment(name, tmp_path):
  c = importlib.import_module(f'experiments.{name}').get_config()
  if c.data.name == 'from_csv':
    c.data.path, c.data.text, c.data.features, c.data.categorical = (
        _csv(tmp_path), 'title', 'year,rating', 'kind')
    c.data.labels = 'Drama,Action'
    c.data.dir = str(tmp_path / 'tfds')
    c.batch_size = min(c.batch_size, 16)  # the 60-row table's train split: 48 rows
  return c


def _leaves(node, prefix=''):
  """(dotted path, value) of every setting, nested groups walked."""
  for key in node.keys():
    value = node[key]
    path = f'{prefix}{key}'
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, path + '.')
    else:
      yield path, value


def _perturbations(path, value, field_type):
  """The values to try: 0, -1, huge for numbers (each element for a tuple of widths), a
  bogus name for names."""
  if isinstance(value, bool) or field_type is bool or path in FREE:
    return []
  if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
    return [(0,), (-1,), (HUGE,)]
  if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
    return [('bogus',)]
  if field_type is int or isinstance(value, int):
    return [0, -1, HUGE]
  if field_type is float or isinstance(value, float):
    return [0.0, -1.0, float(HUGE)]
  if isinstance(value, str):
    return ['bogus']
  return []


def _field_type(config, path):
  node = config
  *parents, leaf = path.split('.')
  for p in parents:
    node = node[p]
  ref = node.get_ref(leaf)
  return ref.get_type() if isinstance(ref, config_dict.FieldReference) else type(node[leaf])


def _set(config, path, value):
  c = copy.deepcopy(config)
  node = c
  *parents, leaf = path.split('.')
  for p in parents:
    node = node[p]
  ref = node.get_ref(leaf)
  if ref.get_type() is object:
    ref.set(value)
  else:
    node[leaf] = value
  return c


def _runs_cleanly(config, baseline):
  """A config the checks accepted builds on the data set's schema, and its model and losses
  give finite values (a model unlike the unperturbed one is initialized abstractly)."""
  ds = data_lib.schema(config.data)
  # A schema may not know sizes yet (0: a learned vocabulary, a one-hot width): stand-ins.
  known = lambda f: dataclasses.replace(f, shape=tuple(max(d, 1) for d in f.shape),
                                        vocab_size=f.vocab_size or (10 if f.vocab_size == 0
                                                                    else None))
  ds = data_lib.base.Dataset.of_fields(ds.name, {k: known(f) for k, f in
                                                 {**ds.inputs, **ds.targets}.items()})
  targets = ds.targets
  rng = np.random.default_rng(0)
  arrays = {k: (rng.random((8,) + f.shape) < 0.5).astype(np.float32) for k, f in targets.items()}
  model, heads = model_lib.resolve(config).build(ds, arrays)
  if model != baseline:
    inputs = {k: np.zeros((2,) + f.shape, f.dtype) for k, f in ds.inputs.items()}
    jax.eval_shape(model.init, jax.random.key(0), inputs)
  for head in heads.values():
    shape = (8, head.num_classes) + ((2,) if type(head).__name__ == 'BinarySoftmaxHead' else ())
    logits = jnp.asarray(rng.normal(size=shape), jnp.float32)
    labels = jnp.asarray(arrays[head.target][:, :head.num_classes])
    if head.target_kind == 'binary' and type(head).__name__ not in ('PowersetHead',):
      assert np.isfinite(np.asarray(head.loss_fn(logits, labels))).all(), head
  return model


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_b26_every_field_is_refused_in_one_line_or_runs_cleanly(name, tmp_path):
  base_config = _experiment(name, tmp_path)
  baseline = _runs_cleanly(base_config, None)
  tried, refused_somewhere = 0, set()
  for path, value in _leaves(base_config):
    numeric = not isinstance(value, (str, bool, type(None))) and not (
        isinstance(value, tuple) and value and isinstance(value[0], str))
    field_type = _field_type(base_config, path)
    for bad in _perturbations(path, value, field_type):
      tried += 1
      config = _set(base_config, path, bad)
      try:
        train.check_config(config)
      except errors.UsageError as e:
        msg = str(e)
        assert '\n' not in msg and msg.strip(), (path, bad, msg)
        leaf = path.split('.')[-1]
        assert leaf in msg or 'bogus' in msg or str(bad) in msg, (path, bad, msg)
        refused_somewhere.add(path)
        continue
      if path.startswith(('trunk.', 'heads.')):
        _runs_cleanly(config, baseline)
      elif path.startswith('data.') and config.data.name == 'from_csv':
        data_lib.load_checked(config)
    if numeric and field_type in (int, float, object) or isinstance(value, tuple) and value \
        and isinstance(value[0], int):
      if path.split('.')[-1] not in NO_RANGE:
        assert path in refused_somewhere, f'{path} refuses none of 0, -1, {HUGE}: no range'
  assert tried > 40


def test_b26_lstm_units_zero_is_one_line_exit_2_not_a_zero_division(tmp_path):
  config = compare.load_config('headline', [('trunk.lstm_units', '0')])
  with pytest.raises(errors.UsageError, match=r'^--config.trunk.lstm_units must be an integer '
                     r'from 1 to 65,536, got 0$'):
    train.check_config(config)


def test_b26_best_metric_output_and_metric_checked_up_front_naming_the_known_ones():
  config = compare.load_config('movie_genres', [('best_metric', 'labels/f1')])
  with pytest.raises(errors.UsageError, match=r"no output 'labels'; the outputs are 'genres'"):
    train.check_config(config)
  config = compare.load_config('movie_genres', [('best_metric', 'genres/f1')])
  with pytest.raises(errors.UsageError, match=r"output 'genres' reports no metric 'f1'; did "
                     r"you mean 'f1_micro' or 'f1_macro' or 'f1_samples'\?; its metrics are "
                     r'loss, label_accuracy, .*f1_micro'):
    train.check_config(config)
  # A one-label output reports no ranking metric: refused up front, not after an epoch.
  config = compare.load_config('headline', [('best_metric', 'main/precision_at_1')])
  with pytest.raises(errors.UsageError, match=r"output 'main' has one label, and metrics that "
                     r"rank a row's labels \(label_ranking_average_precision, .*\) say nothing"):
    train.check_config(config)
  config = compare.load_config('movie_genres', [('best_metric', 'genres/precision_at_1')])
  assert train.check_config(config)[2] == ('genres/precision_at_1', 'max')
  config = compare.load_config('movie_genres', [('best_metric', 'test/genres/f1_micro')])
  with pytest.raises(errors.UsageError, match='chosen on validation, never on test'):
    train.check_config(config)
  # The form configs.py's comment shows, with and without 'validation/'.
  for name in ('genres/roc_auc_macro', 'validation/genres/roc_auc_macro'):
    config = compare.load_config('movie_genres', [('best_metric', name)])
    assert train.check_config(config)[2] == ('genres/roc_auc_macro', 'max')
  config = compare.load_config('headline_counts', [('best_metric', 'counts/r2_1')])
  assert train.check_config(config)[2] == ('counts/r2_1', 'max')
  assert 'mse' in runner.metric_names('real') and 'f1_micro' in runner.metric_names('binary')


def test_b26_a_loss_that_does_not_fit_the_head_is_refused():
  config = compare.load_config('headline', [('heads.main.kind', 'softmax'),
                                            ('heads.main.loss', 'asl')])
  with pytest.raises(errors.UsageError, match=r"head 'main' \(softmax\): loss 'asl' is a "
                     r"per-label loss .* does not fit a softmax head; use one of "
                     r"\['zlpr', 'softmax_ce'\]"):
    train.check_config(config)
  config = compare.load_config('headline', [('heads.main.loss', 'softmax_ce')])
  with pytest.raises(errors.UsageError, match=r"'softmax_ce' is a softmax loss"):
    train.check_config(config)


@pytest.mark.parametrize('override,message', [
    ('data.seperator=x', "--config.data.seperator=x: unknown key 'seperator' in config.data; "
     "did you mean 'separator'?"),
    ('heads.genres.weight=1', "--config.heads.genres.weight=1: no output 'genres'; the outputs "
     "are 'aux', 'main'"),
    ('heads.main.loss_options.gama=1', "--config.heads.main.loss_options.gama=1: unknown key "
     "'gama' in config.heads.main.loss_options; "
     "did you mean 'gamma'?"),
    ('batch_size=abc', '--config.batch_size=abc: not an integer'),
    ('learning_rate=fast', '--config.learning_rate=fast: not a number'),
])
def test_b27_a_misspelt_key_or_unknown_output_is_said_in_words(override, message):
  experiment = 'from_csv' if override.startswith('data.') else 'headline'
  with pytest.raises(errors.UsageError) as e:
    compare.load_config(experiment, [tuple(override.split('=', 1))])
  assert str(e.value) == message
  assert '\\' not in str(e.value) and 'Did you mean' not in str(e.value)


def test_loss_options_come_from_the_command_line_whichever_loss_is_chosen(caplog):
  config = compare.load_config('movie_genres', [('heads.genres.loss', 'focal'),
                                                ('heads.genres.loss_options.gamma', '1.0'),
                                                ('heads.genres.loss_options.alpha', '0.25')])
  spec = train.check_config(config)[0]
  assert dict(spec.heads['genres'].loss_options) == {'gamma': 1.0, 'alpha': 0.25}
  # An option of another loss is ignored, and said so; a bad value of any is refused.
  config = compare.load_config('movie_genres', [('heads.genres.loss_options.gamma', '1.0')])
  with caplog.at_level('WARNING'):
    spec = train.check_config(config)[0]
  assert dict(spec.heads['genres'].loss_options) == {'pos_weight': 1.0, 'label_smoothing': 0.0}
  assert ("head 'genres' (sigmoid, loss bce) does not use loss option gamma=1.0 (it is an "
          "option of focal: --config.heads.genres.loss=NAME); ignored") in caplog.text
  config = compare.load_config('movie_genres', [('heads.genres.loss_options.gamma_neg', '-2')])
  with pytest.raises(errors.UsageError, match='gamma_neg must be a number from 0 to 100'):
    train.check_config(config)
  # Every loss's options are in every head's config, with one default per name.
  names = {}
  for loss in losses.LOSSES.values():
    for k, v in loss.defaults.items():
      assert names.setdefault(k, v) == v, k
  assert set(configs.head('sigmoid', target='y')['loss_options']) == set(names)


def test_pos_weight_balanced_weighs_each_class_by_its_train_negatives_over_positives():
  config = compare.load_config('movie_genres', [('heads.genres.loss_options.pos_weight',
                                                 'balanced')])
  spec = train.check_config(config)[0].heads['genres']
  labels = np.array([[1, 0, 1], [0, 0, 1], [0, 0, 1], [1, 0, 1]], np.float32)
  mask = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 0], [0, 1, 1]], np.float32)
  head = spec.build(data_lib.base.Field((3,), 'float32', 'binary'), labels, mask)
  # class 0: known rows 0-2, 1 positive, 2 negatives; class 1: no positive -> 1; class 2: no
  # negative -> 1.
  assert dict(head.loss_options)['pos_weight'] == (2.0, 1.0, 1.0)
  logits = jnp.zeros((4, 3))
  weighted = head.loss_fn(logits, labels, jnp.ones((4, 3)))
  plain = losses.sigmoid_bce(logits, labels, jnp.ones((4, 3)))
  assert float(weighted[0]) > float(plain[0])  # row 0's class-0 positive weighs double
  for bad in ('0', '-1', 'heavy'):
    config = compare.load_config('movie_genres', [('heads.genres.loss_options.pos_weight', bad)])
    with pytest.raises(errors.UsageError, match="pos_weight must be 'balanced'"):
      train.check_config(config)


def test_every_head_setting_is_reachable_from_the_command_line():
  config = compare.load_config('movie_genres', [('heads.genres.kind', 'powerset'),
                                                ('heads.genres.min_count', '5'),
                                                ('heads.genres.max_sets', '7')])
  spec = train.check_config(config)[0].heads['genres']
  assert spec.settings['min_count'] == 5 and spec.settings['max_sets'] == 7
  config = compare.load_config('movie_genres', [('heads.genres.kind', 'softmax'),
                                                ('heads.genres.none_class', 'True')])
  assert train.check_config(config)[0].heads['genres'].settings['none_class'] is True
