"""Every registry entry runs: each head, trunk, loss, optimizer, data set and experiment.

A new entry is tested the day it lands: the parameter lists below are the registries
themselves, and a data set or an experiment without a recipe here fails
`test_every_data_set_has_a_slice`.
"""

import importlib
import pathlib

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import ROOT, compiled
from mlheads import configs
from mlheads import optimizers
from mlheads import train
from mlheads.data import base
from mlheads.data import pipeline
from mlheads.model import heads as heads_lib
from mlheads.model import losses
from mlheads.model import model as model_lib
from mlheads.model import trunks
import mlheads.data as data_lib

B, K = 8, 3
# Every input any trunk reads with its default settings; a trunk that reads another key
# fails `test_every_trunk_trains_a_step` naming the key, so add it here.
INPUTS = {'tokens': base.Field((6,), 'int32', 'tokens', vocab_size=20),
          'bigrams': base.Field((6,), 'int32', 'hashed', vocab_size=30),
          'chargrams': base.Field((10,), 'int32', 'hashed', vocab_size=30),
          'extra': base.Field((5,), 'float32', 'features'),
          'features': base.Field((3,), 'float32', 'features'),
          'image': base.Field((16, 16, 1), 'float32', 'image')}
TARGETS = {'y': base.Field((K,), 'float32', 'binary'), 'r': base.Field((2,), 'float32', 'real')}
TOY = base.Dataset(name='toy', splits={}, meta={}, inputs=INPUTS, targets=TARGETS)


def _arrays(n=B, seed=0):
  rng = np.random.default_rng(seed)
  return {'tokens': rng.integers(0, 20, size=(n, 6)).astype(np.int32),
          'bigrams': rng.integers(0, 30, size=(n, 6)).astype(np.int32),
          'chargrams': rng.integers(0, 30, size=(n, 10)).astype(np.int32),
          'extra': rng.normal(size=(n, 5)).astype(np.float32),
          'features': rng.normal(size=(n, 3)).astype(np.float32),
          'image': rng.random((n, 16, 16, 1)).astype(np.float32),
          'y': (rng.random((n, K)) < 0.5).astype(np.float32),
          'r': rng.normal(size=(n, 2)).astype(np.float32)}


def _config(trunk='mlp', heads=None, loss='', optimizer='adam'):
  c = configs.base_config()
  c.trunk = {'kind': trunk}
  c.heads = heads or {'out': configs.head('sigmoid', target='y', loss=loss)}
  c.optimizer = optimizer
  c.batch_size = B
  return c


def _one_step(config):
  """Builds the config's model on TOY, runs one train step; returns (before, after, scalars)."""
  arrays = _arrays()
  run = compiled(config, TOY, arrays)
  state = run.init_state(0)
  before = jax.device_get(state.params)
  batch = next(pipeline.eval_batches(TOY, arrays, B))
  state, scalars = run.train_step(state, run.shard(batch))
  return before, jax.device_get(state.params), jax.device_get(scalars)


def _moved(before, after) -> bool:
  return any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before),
                                                      jax.tree.leaves(after)))


def _target(cls_or_loss) -> str:
  kind = getattr(cls_or_loss, 'target_kind', None) or cls_or_loss.targets
  return 'r' if kind == 'real' else 'y'


def test_every_head_trains_a_step():
  # One model with an output per head kind: one compile for the whole registry.
  heads = {kind: configs.head(kind, target=_target(cls)) for kind, cls in heads_lib.HEADS.items()}
  before, after, scalars = _one_step(_config(heads=heads))
  for kind in heads_lib.HEADS:
    assert np.isfinite(scalars[f'loss_{kind}']), kind
    assert _moved(before[kind], after[kind]), kind
  assert scalars['grad_norm'] > 0


@pytest.mark.parametrize('kind', sorted(trunks.TRUNKS))
def test_every_trunk_trains_a_step(kind):
  before, after, scalars = _one_step(_config(trunk=kind))
  assert np.isfinite(scalars['loss'])
  assert _moved(before['trunk'], after['trunk'])


def _fitting_head(loss) -> str:
  """The first head kind that the loss fits (a head lists the kinds of loss it takes)."""
  return next(kind for kind, cls in heads_lib.HEADS.items() if loss.reads in cls.fits_losses)


def test_every_loss_fits_some_head():
  assert all(_fitting_head(loss) for loss in losses.LOSSES.values())


def test_every_loss_trains_a_step_through_a_head_it_fits():
  heads = {name: configs.head(_fitting_head(loss), target=_target(loss), loss=name)
           for name, loss in losses.LOSSES.items()}
  before, after, scalars = _one_step(_config(heads=heads))
  for name in losses.LOSSES:
    assert np.isfinite(scalars[f'loss_{name}']), name
    assert _moved(before[name], after[name]), name


@pytest.mark.parametrize('name', sorted(optimizers.OPTIMIZERS))
def test_every_optimizer_trains_a_step(name):
  before, after, scalars = _one_step(_config(optimizer=name))
  assert np.isfinite(scalars['loss']) and _moved(before, after)


def test_unknown_names_list_the_known_ones():
  """B14: every registry names the known entries when asked for an unknown one."""
  for c, known in ((_config(trunk='lstm'), sorted(trunks.TRUNKS)),
                   (_config(loss='hinge'), sorted(losses.LOSSES)),
                   (_config(optimizer='lamb'), sorted(optimizers.OPTIMIZERS)),
                   (_config(heads={'out': configs.head('svm', target='y')}),
                    sorted(heads_lib.HEADS))):
    with pytest.raises(Exception, match='known: ' + str(known).replace('[', r'\[')):
      train.check_config(c)


def test_a_trunk_names_the_input_it_lacks():
  ds = base.Dataset(name='toy', splits={}, meta={}, inputs={'x': INPUTS['features']},
                    targets=TARGETS)
  with pytest.raises(Exception, match=r"trunk 'text' reads one tokens input, and the data set "
                     r"has none; its inputs are \['x'\]"):
    model_lib.build_model(_config(trunk='text'), ds)
  named = _config(trunk='text')
  named.trunk.text_input = 'words'
  with pytest.raises(Exception, match=r"trunk 'text' reads input 'words' "
                     r"\(--config.trunk.text_input\), which the data set does not have"):
    model_lib.build_model(named, ds)


# ----------------------------------------------------------------------------- data sets


def _csv_slice(tmp_path):
  path = tmp_path / 'films.csv'
  rows = ['title,year,genres'] + [f'film {i} {"love" if i % 2 else "war"},{1950 + i},'
                                  f'{"Drama" if i % 2 else "Action|Drama"}' for i in range(60)]
  path.write_text('\n'.join(rows) + '\n')
  c = _experiment('from_csv')
  c.data.path, c.data.text, c.data.features, c.data.label_list = str(path), 'title', 'year', \
      'genres'
  c.data.hash_buckets = 64  # the default 2^18 rows per n-gram table: too big for a test
  return c


def _experiment(name):
  return importlib.import_module(f'experiments.{name}').get_config()


def _sliced(name, rows):
  def make(tmp_path):
    del tmp_path
    c = _experiment(name)
    c.data.max_rows = rows
    return c
  return make


def _synthetic_slice(tmp_path):
  del tmp_path
  c = _experiment('synthetic_xml')
  c.data.rows, c.data.classes, c.data.features = 80, 300, 8
  return c


# Data set -> a small config that reads it (its experiment's, on a slice).
SLICES = {
    'trump_tweets': _sliced('headline', 200),
    'movie_genres': _sliced('movie_genres', 300),
    'digit_mosaics': _sliced('digit_mosaics', 70),
    'from_csv': _csv_slice,
    'synthetic_xml': _synthetic_slice,
    'goemotions': _sliced('goemotions', 0),  # tfds.testing.mock_data below
}


def test_every_data_set_has_a_slice():
  assert set(SLICES) == set(data_lib.DATASETS)


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(data_lib.DATASETS))
def test_every_data_set_loads_checked_and_trains_a_step(name, tmp_path, monkeypatch):
  c = SLICES[name](tmp_path)
  c.data.dir = str(tmp_path / 'tfds')
  c.batch_size = 8
  if name in ('goemotions',):
    from tensorflow_datasets.text import goemotions  # pylint: disable=g-import-not-at-top
    monkeypatch.setattr(goemotions, 'tf', type('tf', (), {'bool': np.bool_}))
    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
      ds = data_lib.load_checked(c)
  else:
    ds = data_lib.load_checked(c)
  arrays = {s: pipeline.read_split(ds.split(s)) for s in ds.splits}
  assert set(arrays) == set(base.SPLITS)
  assert all(pipeline.num_rows(a) > 0 for a in arrays.values())
  run = compiled(c, ds, arrays['train'])
  batch = next(pipeline.eval_batches(ds, arrays['train'], 8))
  _, scalars = run.train_step(run.init_state(0), run.shard(batch))
  assert np.isfinite(jax.device_get(scalars['loss']))


# ----------------------------------------------------------------------------- experiments

EXPERIMENTS = sorted(p.stem for p in (pathlib.Path(ROOT) / 'experiments').glob('*.py')
                     if not p.name.startswith('_'))


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_every_experiment_config_passes_its_checks(name, tmp_path):
  c = _experiment(name)
  if c.data.name == 'from_csv':  # needs a file
    c = _csv_slice(tmp_path)
  assert isinstance(c, ml_collections.ConfigDict) and c.heads
  spec, _, (metric, mode) = train.check_config(c)
  assert set(spec.heads) == set(c.heads) and mode in ('max', 'min')
  assert metric.split('/')[0] in c.heads

