"""Shared fixtures: tiny configs and a small prepared slice of the tweets."""

import atexit
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import types

# One compilation cache for the session and the subprocesses its tests start: the CLI and
# fault tests run the same tiny models many times, and XLA compiling them dominates. A fresh
# directory each session, so no test depends on an earlier one. Set before jax is imported.
_CACHE = tempfile.mkdtemp(prefix='mlheads-test-xla-cache-')
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', _CACHE)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '-1')

import ml_collections
import pytest
import tensorflow_datasets as tfds

ROOT = pathlib.Path(__file__).resolve().parent.parent
tfds.disable_progress_bar()


def tiny_headline_config(data_dir: str) -> ml_collections.ConfigDict:
  """The headline experiment shrunk to test size: 240 tweets, tiny widths."""
  from experiments import headline  # pylint: disable=g-import-not-at-top
  c = headline.get_config()
  c.data.dir = data_dir
  c.data.max_rows = 240
  c.data.vocab_size = 60
  c.data.max_len = 12
  c.data.max_ngrams = 32
  c.data.hash_buckets = 64
  c.trunk.embed_dim = 8
  c.trunk.lstm_units = 4
  c.trunk.hidden = (8,)
  c.batch_size = 8
  c.eval_batch_size = 16
  c.epochs = 1
  c.log_every_steps = 5
  c.progress = False
  return c


def compiled(config, ds, train_arrays=None) -> types.SimpleNamespace:
  """What train_and_evaluate builds before its loop, from the same library calls: the model and
  heads for `ds`, `init_state(seed)`, the jitted `train_step(state, sharded batch)`, `shard`,
  and `predict(params, arrays)` over a whole split. Raises what set-up raises (B14, B15)."""
  from mlheads import sharding, train  # pylint: disable=g-import-not-at-top
  from mlheads.data import pipeline  # pylint: disable=g-import-not-at-top
  from mlheads.evaluation import runner  # pylint: disable=g-import-not-at-top
  from mlheads.state import train_state  # pylint: disable=g-import-not-at-top
  spec, tx, _ = train.check_config(config, ds)
  model, heads = spec.build(ds, train_arrays)
  parallel = sharding.DataParallel.over_all_devices()
  eval_fn = runner.make_eval_fn(model, heads, parallel, config.dtype)
  return types.SimpleNamespace(
      model=model, heads=heads, parallel=parallel, shard=parallel.shard,
      init_state=lambda seed: train_state.create(model, tx, seed, pipeline.example_inputs(ds),
                                                 parallel.replicated, config.dtype),
      train_step=train.make_train_step(heads, parallel), eval_fn=eval_fn,
      predict=lambda params, arrays: runner.predict_split(
          eval_fn, params, ds, arrays, config.eval_batch_size, heads))


@pytest.fixture(scope='session')
def tweets_dir(tmp_path_factory) -> str:
  """A tfds data dir shared by the session's tests (the slice is prepared once)."""
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture
def tiny_config(tweets_dir):
  return tiny_headline_config(tweets_dir)


def run_cli(*args, cwd=ROOT, timeout=300) -> subprocess.CompletedProcess:
  """Runs `python -m mlheads.<module> args` the way launch.sh does."""
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=timeout, check=False)
