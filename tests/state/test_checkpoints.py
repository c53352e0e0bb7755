"""Tests for mlheads.state.checkpoints: round trip, retention, corruption, mismatch, save faults."""

import errno
import functools
import logging
import os
import pickle
import re
import subprocess
import sys
import time

from flax import linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from mlheads import errors
from mlheads.state import checkpoints

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Tiny(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(nn.relu(nn.Dense(5)(x)))


def _state(seed=0, width=4):
  """A fresh dict (tests edit it) around the cached, immutable arrays."""
  return dict(_cached_state(seed, width))


@functools.cache
def _cached_state(seed, width):
  """A TrainState after one adam step (so mu/nu are non-zero) plus bf16 / int32 leaves."""
  model = _Tiny()
  params = model.init(jax.random.key(seed), jnp.ones((2, width)))
  st = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(1e-2))
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5 + seed), st.params)
  st = jax.jit(lambda s, g: s.apply_gradients(grads=g))(st, grads)  # as the trainer does.
  return {'train': st,
          'emb': jnp.arange(6, dtype=jnp.bfloat16).reshape(2, 3) * (seed + 1),
          'order': np.arange(4, dtype=np.int32) + seed}


def _leaves(tree):
  return jax.tree_util.tree_flatten_with_path(tree)[0]


def _assert_bit_equal(a, b):
  la, lb = _leaves(a), _leaves(b)
  assert [p for p, _ in la] == [p for p, _ in lb]
  for (path, x), (_, y) in zip(la, lb):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape, path
    assert x.tobytes() == y.tobytes(), jax.tree_util.keystr(path)


def _save(ckpt, step, seed=None, **kw):
  ckpt.save(step, _state(step if seed is None else seed), extras={'step': step}, **kw)


def _data_files(ckpt, step):
  """Array chunk files of a step (state/<leaf>/0.0 ...) with distinct contents, biggest first."""
  d = ckpt._step_dir(step)
  files = {}  # leaves of equal values have equal chunks; swapping those changes nothing.
  for f in checkpoints._list_files(d):
    if f.startswith('state/') and re.fullmatch(r'\d+(\.\d+)*', os.path.basename(f)):
      files.setdefault(checkpoints._sha256(os.path.join(d, f)), f)
  return sorted(files.values(), key=lambda f: -os.path.getsize(os.path.join(d, f)))


def test_round_trip_is_bit_exact(tmp_path):
  state = _state(3)
  extras = {'config': {'heads': {'main': {'weight': 1.0}}}, 'vocab': ['<pad>', 'a'], 'n': 3}
  with checkpoints.Checkpointer(str(tmp_path)) as ckpt:
    ckpt.save(7, state, extras=extras)
    target = _state(0)
    restored, got_extras, step = ckpt.restore(target)
  assert step == 7 and got_extras == extras
  assert isinstance(restored['train'], train_state.TrainState)
  assert restored['emb'].dtype == jnp.bfloat16 and restored['order'].dtype == np.int32
  _assert_bit_equal(restored, state)


def test_no_pickle_on_save_or_restore(tmp_path, monkeypatch):
  """B25: nothing in the save/restore path may (un)pickle, which could run code."""
  def refuse(*a, **k):
    raise AssertionError('pickle used')
  for name in ('load', 'loads', 'dump', 'dumps'):
    monkeypatch.setattr(pickle, name, refuse)
  monkeypatch.setattr(pickle, 'Unpickler', refuse)
  with checkpoints.Checkpointer(str(tmp_path)) as ckpt:
    ckpt.save(1, _state(1), extras={'a': [1]})
    _assert_bit_equal(ckpt.restore(_state())[0], _state(1))


def test_restore_into_abstract_target_and_fresh_python_int_step(tmp_path):
  state = _state(1)
  with checkpoints.Checkpointer(str(tmp_path)) as ckpt:
    ckpt.save(1, state, extras={})
    abstract = jax.eval_shape(lambda: _state(0))
    restored, _, _ = ckpt.restore(abstract)
    _assert_bit_equal(restored, state)
    # Abstract leaves come back as device arrays (orbax alone would hand back numpy).
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(restored))
    # The fresh TrainState holds step=0 as a Python int; it must match a saved int32 step.
    fresh = train_state.TrainState.create(
        apply_fn=None, params=state['train'].params, tx=optax.adam(1e-2))
    assert isinstance(fresh.step, int)
    restored, _, _ = ckpt.restore(dict(state, train=fresh))
    assert int(restored['train'].step) == 1


def test_keeps_latest_and_best(tmp_path):
  acc = {1: 0.1, 2: 0.9, 3: 0.3, 4: 0.2, 5: 0.4}
  ckpt = checkpoints.Checkpointer(str(tmp_path), max_to_keep=2, best_metric='acc')
  for step, a in acc.items():
    _save(ckpt, step, metrics={'acc': a, 'loss': 1 - a})
  assert ckpt.all_steps() == [2, 4, 5]
  assert sorted(os.listdir(ckpt.directory)) == ['2', '4', '5']
  assert ckpt.best_step() == 2 and ckpt.latest_step() == 5
  _, extras, step = ckpt.restore(_state(), step=ckpt.best_step())
  assert step == 2 and extras == {'step': 2}


def test_best_mode_min_and_nan_metric_is_never_best(tmp_path):
  ckpt = checkpoints.Checkpointer(str(tmp_path), max_to_keep=1, best_metric='loss',
                                  best_mode='min')
  _save(ckpt, 1, metrics={'loss': 0.5})
  _save(ckpt, 2, metrics={'loss': float('nan')})
  _save(ckpt, 3, metrics={'loss': 0.7})
  assert ckpt.best_step() == 1 and ckpt.all_steps() == [1, 3]
  with pytest.raises(ValueError, match="'loss'.*\\['acc'\\]"):
    _save(ckpt, 4, metrics={'acc': 1.0})


def test_b18_a_save_without_metrics_commits_and_is_never_best(tmp_path):
  """B18: a preemption save carries no validation metrics; with a best metric set it still
  commits, and the best step stays an evaluated one."""
  ckpt = checkpoints.Checkpointer(str(tmp_path), max_to_keep=3, best_metric='acc')
  _save(ckpt, 1, metrics={'acc': 0.5})
  _save(ckpt, 2)
  assert ckpt.all_steps() == [1, 2] and ckpt.best_step() == 1 and ckpt.latest_step() == 2


def _flip(path):
  with open(path, 'r+b') as f:
    f.seek(os.path.getsize(path) // 2)
    b = f.read(16)
    f.seek(-len(b), 1)
    f.write(bytes(x ^ 0xFF for x in b))


def _truncate(path):
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


def _swap(path, other):
  tmp = path + '.swap'
  os.rename(path, tmp)
  os.rename(other, path)
  os.rename(tmp, other)


@pytest.mark.parametrize('damage', ['flip', 'truncate', 'delete', 'swap', 'extra', 'manifest'])
def test_corrupt_latest_falls_back_with_warning(tmp_path, caplog, damage):
  """B20: a corrupt newest step falls back to the previous one, with a warning naming the file."""
  ckpt = checkpoints.Checkpointer(str(tmp_path), max_to_keep=3)
  for step in (1, 2):
    _save(ckpt, step)
  d = ckpt._step_dir(2)
  biggest, second = _data_files(ckpt, 2)[:2]
  path = os.path.join(d, biggest)
  if damage == 'flip':
    _flip(path)
  elif damage == 'truncate':
    _truncate(path)
  elif damage == 'delete':
    os.remove(path)
  elif damage == 'swap':
    _swap(path, os.path.join(d, second))
  elif damage == 'extra':
    path = os.path.join(d, 'state', 'injected')
    open(path, 'w').close()
  else:
    path = os.path.join(d, checkpoints.MANIFEST)
    _flip(path)
  with caplog.at_level(logging.WARNING):
    restored, extras, step = ckpt.restore(_state())
  assert step == 1 and extras == {'step': 1}
  _assert_bit_equal(restored, _state(1))
  warned = [r.getMessage() for r in caplog.records if 'step 2' in r.getMessage()]
  assert warned and path in warned[0]
  if damage == 'swap':
    assert os.path.join(d, second) in warned[0]


def test_only_step_corrupt_raises(tmp_path):
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  _save(ckpt, 1)
  _flip(os.path.join(ckpt._step_dir(1), _data_files(ckpt, 1)[0]))
  with pytest.raises(checkpoints.CheckpointError, match='no intact checkpoint.*step 1.*sha256'):
    ckpt.restore(_state())
  # An explicitly requested corrupt step is an error, not a silent fallback.
  _save(ckpt, 2)
  _flip(os.path.join(ckpt._step_dir(2), _data_files(ckpt, 2)[0]))
  with pytest.raises(checkpoints.CheckpointError, match='step 2'):
    ckpt.restore(_state(), step=2)


@pytest.fixture
def no_array_reads(monkeypatch):
  """Makes any orbax restore fail, to prove an error came before arrays were touched."""
  def fail(*a, **k):
    raise AssertionError('arrays were read')
  monkeypatch.setattr(ocp.Checkpointer, 'restore', fail)


def test_mismatched_target_is_refused_before_reading_arrays(tmp_path, no_array_reads):
  """B22: a restore into other shapes or dtypes is refused, listing them, before reading arrays."""
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  _save(ckpt, 1)
  wider = _state(width=6)  # Dense_1 (the first layer) [6, 5] instead of [4, 5], also mu / nu.
  with pytest.raises(errors.UsageError) as e:
    ckpt.restore(wider)
  msg = str(e.value)
  assert ("['train'].params['params']['Dense_1']['kernel']: saved (4, 5) float32, "
          "expected (6, 5) float32") in msg
  assert '\n' not in msg and ".opt_state[0].mu['params']['Dense_1']['kernel']" in msg

  extra = dict(_state(), new_head=jnp.zeros((2,)))
  with pytest.raises(errors.UsageError, match=r"\['new_head'\]: expected \(2,\) float32 but "):
    ckpt.restore(extra)
  missing = {k: v for k, v in _state().items() if k != 'order'}
  with pytest.raises(errors.UsageError, match=r"\['order'\]: saved \(4,\) int32 but not expected"):
    ckpt.restore(missing)
  recast = dict(_state(), emb=jnp.zeros((2, 3), jnp.float32))
  with pytest.raises(errors.UsageError, match=r"\['emb'\]: saved \(2, 3\) bfloat16, expected "
                     r"\(2, 3\) float32"):
    ckpt.restore(recast)


def test_no_committed_checkpoint(tmp_path):
  """B24: a path without a committed step is an error, never a fresh start."""
  missing = tmp_path / 'nope'
  for path in (missing, tmp_path):
    with pytest.raises(errors.UsageError, match='no committed checkpoint in'):
      checkpoints.Checkpointer(str(path)).restore(_state())
  assert not missing.exists()  # looking must not create the workdir.
  # A step dir orbax finished but whose manifest never got written (kill -9) is not committed.
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  _save(ckpt, 1)
  os.remove(os.path.join(ckpt._step_dir(1), checkpoints.MANIFEST))
  assert ckpt.latest_step() is None
  with pytest.raises(errors.UsageError, match='no committed checkpoint in'):
    ckpt.restore(_state())
  with pytest.raises(errors.UsageError, match='no committed checkpoint for step 9'):
    _save(ckpt, 2) or ckpt.restore(_state(), step=9)
  # ...and the next save removed the leftover.
  assert ckpt.all_steps() == [2] and sorted(os.listdir(ckpt.directory)) == ['2']


def test_non_finite_state_is_refused_and_nothing_written(tmp_path):
  """B21: a state holding NaN/Inf is never checkpointed."""
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  _save(ckpt, 1)
  bad = _state()
  bad['train'] = bad['train'].replace(params=jax.tree.map(
      lambda p: p.at[0].set(jnp.nan) if p.ndim == 2 else p, bad['train'].params))
  with pytest.raises(FloatingPointError, match=r"\['Dense_0'\]\['kernel'\]"):
    ckpt.save(2, bad, extras={})
  inf = dict(_state(), emb=jnp.full((2, 3), jnp.inf, jnp.bfloat16))
  with pytest.raises(FloatingPointError, match=r"\['emb'\]"):
    ckpt.save(2, inf, extras={})
  assert sorted(os.listdir(ckpt.directory)) == ['1']


def test_bad_extras_are_refused_naming_the_key(tmp_path):
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  with pytest.raises(TypeError, match=r"extras\['scale'\]\[1\]: ndarray"):
    ckpt.save(1, _state(), extras={'scale': [1.0, np.ones(2)]})
  with pytest.raises(TypeError, match=r"extras\['t'\]: nan"):
    ckpt.save(1, _state(), extras={'t': float('nan')})
  assert ckpt.latest_step() is None


@pytest.mark.parametrize('where', ['orbax', 'manifest'])
def test_failed_save_keeps_previous_step(tmp_path, monkeypatch, where):
  """B19: a save that fails (disk full in orbax, read-only at the manifest) is one line and leaves
  the previous step intact."""
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  _save(ckpt, 1)
  real_save = ocp.Checkpointer.save

  def partial_then_enospc(self, directory, *a, **k):
    # Leave what a dying write leaves: a half-written orbax temp dir.
    os.makedirs(f'{directory}.orbax-checkpoint-tmp-123/state')
    raise OSError(errno.ENOSPC, 'No space left on device')

  def full_at_manifest(*a, **k):
    raise OSError(errno.EROFS, 'Read-only file system')

  if where == 'orbax':
    monkeypatch.setattr(ocp.Checkpointer, 'save', partial_then_enospc)
  else:
    monkeypatch.setattr(ocp.Checkpointer, 'save', real_save)
    monkeypatch.setattr(checkpoints, '_write_manifest', full_at_manifest)
  with pytest.raises(checkpoints.CheckpointError) as e:
    _save(ckpt, 2)
  msg = str(e.value)
  assert str(tmp_path) in msg and 'step 2' in msg and '\n' not in msg
  assert ('No space' if where == 'orbax' else 'Read-only') in msg
  assert isinstance(e.value, errors.UsageError)
  assert sorted(os.listdir(ckpt.directory)) == ['1'] and ckpt.latest_step() == 1
  _, extras, step = ckpt.restore(_state())
  assert (step, extras) == (1, {'step': 1})


@pytest.fixture
def tiny_disk(tmp_path):
  """A real 300 KiB tmpfs, for true ENOSPC / EROFS; skipped where mounting is not allowed."""
  mnt = tmp_path / 'mnt'
  mnt.mkdir()
  if os.geteuid() != 0 or subprocess.run(
      ['mount', '-t', 'tmpfs', '-o', 'size=300k', 'tmpfs', str(mnt)],
      capture_output=True).returncode != 0:
    pytest.skip('cannot mount a tmpfs here')
  try:
    yield mnt
  finally:
    subprocess.run(['umount', '-l', str(mnt)], check=True)


@pytest.mark.slow
def test_real_disk_full_then_read_only(tiny_disk):
  """B19: a real full disk, then a read-only workdir."""
  ckpt = checkpoints.Checkpointer(str(tiny_disk / 'run'))
  rng = np.random.default_rng(0)
  big = lambda: {'w': jnp.asarray(rng.normal(size=40_000).astype(np.float32))}  # 160 KB.
  first = big()
  ckpt.save(1, first, extras={'a': 1})
  with pytest.raises(checkpoints.CheckpointError,
                     match=f'step 2 in {tiny_disk}/run: No space left on device'):
    ckpt.save(2, big(), extras={'a': 2})
  subprocess.run(['mount', '-o', 'remount,ro', str(tiny_disk)], check=True)
  with pytest.raises(checkpoints.CheckpointError, match='step 3 .*Read-only file system'):
    ckpt.save(3, big(), extras={'a': 3})
  restored, extras, step = ckpt.restore(first)
  assert (step, extras) == (1, {'a': 1})
  _assert_bit_equal(restored, first)


_SAVE_FOREVER = """
import sys, jax.numpy as jnp
from mlheads.state import checkpoints
ckpt = checkpoints.Checkpointer(sys.argv[1], max_to_keep=2)
for step in range(1, 10_000):
  ckpt.save(step, {'w': jnp.full((20_000,), step, jnp.float32)}, extras={'step': step})
  print(step, flush=True)
"""


@pytest.mark.slow
def test_kill_9_during_saves_leaves_a_restorable_step(tmp_path):
  """B17: whenever the saving process dies, the newest committed step restores intact."""
  env = dict(os.environ, PYTHONPATH=_REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  saver = subprocess.Popen([sys.executable, '-c', _SAVE_FOREVER, str(tmp_path)],
                           stdout=subprocess.PIPE, env=env, text=True)
  try:
    for _ in range(3):  # let a few saves commit, then kill it in the middle of the next ones.
      saver.stdout.readline()
    time.sleep(0.03)
  finally:
    saver.kill()
    saver.wait()
  ckpt = checkpoints.Checkpointer(str(tmp_path), max_to_keep=2)
  target = {'w': jnp.zeros((20_000,), jnp.float32)}
  restored, extras, step = ckpt.restore(target)
  assert step >= 3 and extras == {'step': step}
  np.testing.assert_array_equal(restored['w'], np.full((20_000,), step, np.float32))
  ckpt.save(step + 1, target, extras={})  # the resumed run saves over any half-written step.
  assert ckpt.latest_step() == step + 1
  assert not [n for n in os.listdir(ckpt.directory) if not n.isdigit()]


def test_resave_of_committed_step_is_a_no_op(tmp_path):
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  _save(ckpt, 1)
  before = open(os.path.join(ckpt._step_dir(1), checkpoints.MANIFEST)).read()
  _save(ckpt, 1, seed=5)
  assert open(os.path.join(ckpt._step_dir(1), checkpoints.MANIFEST)).read() == before
