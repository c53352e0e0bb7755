"""Process faults end to end (RELIABILITY.md B17-B25): the real CLI in a subprocess, killed,
preempted, diverging, pointed at a locked, foreign or corrupted workdir.

Unit-level checks of the checkpointer and the lock live in test_checkpoints.py and
test_workdir.py; here the trainer and `python -m mlheads.main` must put them together:
the same command in the same workdir resumes, bit-identical (CPU) to an uninterrupted run.
"""

import hashlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT

# The real CLI in subprocesses: killed, preempted, diverging.
pytestmark = pytest.mark.slow

EPOCHS, SPE = 5, 24  # 240 rows -> 192 train examples -> 24 steps of 8 per epoch.
TOTAL = EPOCHS * SPE


def _args(tweets_dir, workdir, *overrides):
  return [sys.executable, '-m', 'mlheads.main', '--config=experiments/headline.py',
          f'--workdir={workdir}', f'--config.data.dir={tweets_dir}',
          '--config.data.max_rows=240', '--config.data.vocab_size=60',
          '--config.data.max_len=12', '--config.trunk.embed_dim=8',
          '--config.trunk.lstm_units=4', '--config.trunk.hidden=(8,)', '--config.batch_size=8',
          '--config.eval_batch_size=16', f'--config.epochs={EPOCHS}',
          '--config.checkpoint_every_epochs=1', '--config.log_every_steps=5',
          '--config.progress=False', *overrides]


_ENV = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu',
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')


@pytest.fixture(scope='module', autouse=True)
def _compilation_cache(tmp_path_factory):
  """One XLA compilation cache for this module's ~20 runs of the same tiny program: it halves
  their time, and a cached executable computes what a fresh compile of the same HLO does."""
  _ENV['JAX_COMPILATION_CACHE_DIR'] = str(tmp_path_factory.mktemp('xla_cache'))


def _run(tweets_dir, workdir, *overrides, timeout=180):
  return subprocess.run(_args(tweets_dir, workdir, *overrides), cwd=ROOT, env=_ENV,
                        capture_output=True, text=True, timeout=timeout, check=False)


def _start(tweets_dir, workdir, log):
  """The same command in the background; its stdout and stderr go to `log`."""
  return subprocess.Popen(_args(tweets_dir, workdir), cwd=ROOT, env=_ENV,
                          stdout=log, stderr=subprocess.STDOUT)


def _committed(workdir) -> list[int]:
  ck = pathlib.Path(workdir) / 'checkpoints'
  if not ck.is_dir():
    return []
  return sorted(int(p.name) for p in ck.iterdir()
                if p.name.isdigit() and (p / 'manifest.json').exists())


def _partial(workdir) -> list[str]:
  """Traces of a save in progress: an orbax tmp dir, or a step dir without our manifest."""
  ck = pathlib.Path(workdir) / 'checkpoints'
  try:
    names = os.listdir(ck)
  except FileNotFoundError:
    return []
  return [n for n in names if '.orbax-checkpoint-tmp' in n
          or (n.isdigit() and not (ck / n / 'manifest.json').exists())]


def _wait_for(pred, proc, timeout=120, poll=0.0005):
  t0 = time.time()
  while time.time() - t0 < timeout:
    if (v := pred()):
      return v
    if proc.poll() is not None:
      return None
    time.sleep(poll)
  return None


def _final_state(workdir) -> dict:
  """The state pytree of the workdir's last committed checkpoint, as host numpy arrays."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  step = _committed(workdir)[-1]
  tree = ocp.StandardCheckpointer().restore(pathlib.Path(workdir) / 'checkpoints' / str(step) /
                                            'state')
  return jax.tree.map(np.asarray, tree)


def _assert_bit_identical(a: dict, b: dict):
  import jax  # pylint: disable=g-import-not-at-top
  la, ta = jax.tree.flatten_with_path(a)
  lb, tb = jax.tree.flatten_with_path(b)
  assert ta == tb
  for (path, x), (_, y) in zip(la, lb):
    assert x.dtype == y.dtype and x.shape == y.shape, jax.tree_util.keystr(path)
    assert x.tobytes() == y.tobytes(), f'{jax.tree_util.keystr(path)} differs'


def _tree_digest(workdir) -> dict[str, str]:
  """sha256 of every file under workdir: to prove a refused run left it as it was."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      p = os.path.join(root, name)
      out[os.path.relpath(p, workdir)] = hashlib.sha256(pathlib.Path(p).read_bytes()).hexdigest()
  return out


def _error_lines(r) -> list[str]:
  return [l for l in r.stderr.splitlines() if l.startswith('error:')]


def _flip_byte(path: pathlib.Path):
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0xFF
  path.write_bytes(bytes(data))


def _largest_state_file(step_dir: pathlib.Path) -> pathlib.Path:
  files = [p for p in (step_dir / 'state').rglob('*') if p.is_file()]
  return max(files, key=lambda p: p.stat().st_size)


@pytest.fixture(scope='module')
def reference(tweets_dir, tmp_path_factory):
  """An uninterrupted run: (workdir, final state, metrics.json)."""
  workdir = tmp_path_factory.mktemp('faults') / 'reference'
  r = _run(tweets_dir, workdir)
  assert r.returncode == 0, r.stderr[-3000:]
  assert _committed(workdir)[-1] == TOTAL
  return workdir, _final_state(workdir), json.loads((workdir / 'metrics.json').read_text())


@pytest.fixture
def ref_copy(reference, tmp_path):
  dst = tmp_path / 'copy'
  shutil.copytree(reference[0], dst)
  return dst


def _assert_same_results(workdir, reference):
  _, ref_state, ref_metrics = reference
  _assert_bit_identical(_final_state(workdir), ref_state)
  metrics = json.loads((pathlib.Path(workdir) / 'metrics.json').read_text())
  for key in ('steps', 'evaluated_step', 'validation', 'test', 'test_tuned', 'thresholds'):
    assert metrics[key] == ref_metrics[key], key


# ----------------------------------------------------------------------------- B17, B23 stale


def test_kill_9_during_a_save_and_mid_step_then_the_same_command_resumes_bit_identical(
    tweets_dir, tmp_path, reference):
  """B17, B23: kill -9 during a save and mid-step; the same command takes over the stale lock,
  resumes and finishes bit-identical."""
  workdir = tmp_path / 'run'
  # 1) kill -9 while a later checkpoint is being written (an orbax tmp dir or a step dir
  #    without its manifest is on disk), after a first one is committed.
  with open(tmp_path / 'log1', 'w') as log:
    p = _start(tweets_dir, workdir, log)
    seen = _wait_for(lambda: _committed(workdir) and _partial(workdir), p)
    p.send_signal(signal.SIGKILL)
    p.wait()
  assert seen, (tmp_path / 'log1').read_text()[-3000:]
  assert p.returncode == -signal.SIGKILL
  first = _committed(workdir)
  assert first and first[-1] < TOTAL and not (workdir / 'metrics.json').exists()
  assert (workdir / '.lock').exists()  # left behind by the killed run.

  # 2) the same command, killed again during steps once it has committed a newer step.
  with open(tmp_path / 'log2', 'w') as log:
    p = _start(tweets_dir, workdir, log)
    ok = _wait_for(lambda: _committed(workdir)[-1] > first[-1], p)
    p.send_signal(signal.SIGKILL)
    p.wait()
  log2 = (tmp_path / 'log2').read_text()
  assert ok and p.returncode == -signal.SIGKILL, log2[-3000:]
  assert f'Resuming from step {first[-1]} of {TOTAL}' in log2
  assert 'taking over stale lock' in log2
  assert _committed(workdir)[-1] < TOTAL

  # 3) the same command again finishes; the result is the uninterrupted run's, bit for bit.
  resumed_from = _committed(workdir)[-1]
  r = _run(tweets_dir, workdir)
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'taking over stale lock' in r.stderr
  assert f'Resuming from step {resumed_from} of {TOTAL}' in r.stderr
  _assert_same_results(workdir, reference)
  assert not _partial(workdir) and not (workdir / '.lock').exists()
  # metrics.jsonl: what the killed runs logged past their checkpoint is not there twice.
  records = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  keys = [(r['step'], r['split']) for r in records]
  assert len(keys) == len(set(keys))
  assert {s for s, split in keys if split == 'validation/main'} == {
      SPE * e for e in range(1, EPOCHS + 1)}


# ----------------------------------------------------------------------------- B18


def test_sigterm_saves_at_the_next_step_exits_143_and_the_rerun_is_bit_identical(
    tweets_dir, tmp_path, reference):
  """B18: SIGTERM saves at the next step boundary and exits 143; the rerun is bit-identical."""
  workdir = tmp_path / 'run'
  with open(tmp_path / 'log', 'w') as log:
    p = _start(tweets_dir, workdir, log)
    assert _wait_for(lambda: _committed(workdir), p)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
  out = (tmp_path / 'log').read_text()
  assert p.returncode == 143, out[-3000:]
  saved = _committed(workdir)[-1]
  assert f'SIGTERM: saved step {saved}; exiting with 143' in out
  assert saved < TOTAL and 'Traceback' not in out
  manifest = json.loads((workdir / 'checkpoints' / str(saved) / 'manifest.json').read_text())
  if saved % SPE:  # a mid-epoch save has no validation metrics: never the best step.
    assert manifest['metrics'] is None

  r = _run(tweets_dir, workdir)
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'Resuming from step {saved} of {TOTAL}' in r.stderr
  _assert_same_results(workdir, reference)
  metrics = json.loads((workdir / 'metrics.json').read_text())
  assert metrics['evaluated_step'] % SPE == 0 and metrics['thresholds']


# ----------------------------------------------------------------------------- finished run


def test_rerunning_a_finished_run_trains_nothing_and_rewrites_the_same_metrics(
    tweets_dir, ref_copy, reference):
  before = {p: h for p, h in _tree_digest(ref_copy).items() if p.startswith('checkpoints')}
  (ref_copy / 'metrics.json').unlink()
  r = _run(tweets_dir, ref_copy)
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'Training already finished (step {TOTAL}); evaluating again' in r.stderr
  assert json.loads((ref_copy / 'metrics.json').read_text()) == reference[2]
  after = {p: h for p, h in _tree_digest(ref_copy).items() if p.startswith('checkpoints')}
  assert after == before


# ----------------------------------------------------------------------------- B21


def test_a_diverging_loss_stops_within_the_logging_interval_exit_3_without_a_checkpoint(
    tweets_dir, tmp_path):
  """B21: a NaN loss stops within the logging interval naming the steps and the output, exit 3, no
  checkpoint."""
  workdir = tmp_path / 'run'
  r = _run(tweets_dir, workdir, '--config.optimizer=sgd', '--config.learning_rate=1e30')
  assert r.returncode == 3, r.stderr[-3000:]
  assert 'Traceback' not in r.stderr
  (line,) = _error_lines(r)
  assert 'training diverged at step' in line and '(steps 0-4 checked)' in line
  assert "output 'main' loss is nan" in line or "output 'main' loss is inf" in line
  assert not (workdir / 'checkpoints').exists()


# ----------------------------------------------------------------------------- B22


@pytest.mark.parametrize('override,difference', [
    ('--config.trunk.lstm_units=8', 'trunk.lstm_units: checkpoints have 4, this run 8'),
    ('--config.data.vocab_size=70', 'data.vocab_size: checkpoints have 60, this run 70'),
    ('--config.heads.aux.kind=binary_softmax',
     "heads.aux.kind: checkpoints have 'sigmoid', this run 'binary_softmax'"),
])
def test_a_different_model_config_is_refused_before_reading_data_and_damages_nothing(
    tweets_dir, ref_copy, override, difference):
  """B22: a different model config is refused naming each setting, before any data is read."""
  before = _tree_digest(ref_copy)
  r = _run(tweets_dir, ref_copy, override)
  assert r.returncode == 2, r.stderr[-3000:]
  (line,) = _error_lines(r)
  assert 'holds checkpoints of a different config' in line and difference in line
  assert 'Train 192 examples' not in r.stderr  # refused before reading data or compiling.
  assert _tree_digest(ref_copy) == before


def test_without_config_json_the_checkpoint_shapes_still_refuse_a_different_model(
    tweets_dir, ref_copy):
  """B22: without config.json, the checkpoint's recorded shapes refuse a different model."""
  (ref_copy / 'config.json').unlink()
  before = _tree_digest(ref_copy)
  r = _run(tweets_dir, ref_copy, '--config.trunk.lstm_units=8')
  assert r.returncode == 2, r.stderr[-3000:]
  (line,) = _error_lines(r)
  assert 'does not fit the model' in line and "['lstm']['bias']: saved (16,)" in line
  assert _tree_digest(ref_copy) == before


# ----------------------------------------------------------------------------- B23


def test_a_workdir_locked_by_a_live_run_is_refused_at_once_naming_host_and_pid(
    tweets_dir, tmp_path):
  """B23: a workdir locked by a live run is refused at once, naming host and pid."""
  workdir = tmp_path / 'run'
  workdir.mkdir()
  holder = subprocess.Popen(['sleep', '120'])
  try:
    with open(f'/proc/{holder.pid}/stat') as f:
      proc_start = f.read().rsplit(')', 1)[1].split()[19]
    lock = {'host': socket.gethostname(), 'pid': holder.pid, 'started': 'earlier',
            'proc_start': proc_start}
    (workdir / '.lock').write_text(json.dumps(lock))
    t0 = time.time()
    r = _run(tweets_dir, workdir)
    took = time.time() - t0
  finally:
    holder.kill()
    holder.wait()
  assert r.returncode == 2, r.stderr[-3000:]
  (line,) = _error_lines(r)
  assert f'in use by pid {holder.pid} on host {socket.gethostname()}' in line
  assert 'Train 192 examples' not in r.stderr, took
  assert sorted(os.listdir(workdir)) == ['.lock']
  assert json.loads((workdir / '.lock').read_text()) == lock


# ----------------------------------------------------------------------------- B20, B24


def test_a_corrupt_latest_step_falls_back_to_the_previous_one_and_training_redoes_it(
    tweets_dir, ref_copy, reference):
  """B20: a flipped byte in the newest step is detected by the manifest; the previous step is used,
  with a warning naming the file."""
  bad = _largest_state_file(ref_copy / 'checkpoints' / str(TOTAL))
  _flip_byte(bad)
  r = _run(tweets_dir, ref_copy)
  assert r.returncode == 0, r.stderr[-3000:]
  warning = [l for l in r.stderr.splitlines() if f'checkpoint step {TOTAL} is corrupt' in l]
  assert warning and str(bad) in warning[0]
  assert f'Resuming from step {TOTAL - SPE} of {TOTAL}' in r.stderr
  _assert_same_results(ref_copy, reference)  # the rewritten last step is intact and identical.


def test_every_step_corrupt_is_an_error_never_a_fresh_start(tweets_dir, ref_copy):
  """B20, B24: with no intact step left, the run is an error, never a silent fresh start."""
  for step in _committed(ref_copy):
    _flip_byte(_largest_state_file(ref_copy / 'checkpoints' / str(step)))
  before = _tree_digest(ref_copy)
  r = _run(tweets_dir, ref_copy)
  assert r.returncode == 2, r.stderr[-3000:]
  (line,) = _error_lines(r)
  assert 'no intact checkpoint in' in line and 'does not match its sha256' in line
  assert _tree_digest(ref_copy) == before


def test_every_manifest_damaged_is_an_error_never_a_fresh_start(tweets_dir, ref_copy):
  """B20, B24: damaged manifests everywhere: an error, never a fresh start."""
  for step in _committed(ref_copy):
    (ref_copy / 'checkpoints' / str(step) / 'manifest.json').write_text('{"not": "ours"}')
  before = _tree_digest(ref_copy)
  r = _run(tweets_dir, ref_copy)
  assert r.returncode == 2, r.stderr[-3000:]
  (line,) = _error_lines(r)
  assert 'no intact checkpoint in' in line and 'fails its self-hash' in line
  assert _tree_digest(ref_copy) == before


# ----------------------------------------------------------------------------- conventions


def test_a_data_error_on_a_fresh_workdir_writes_nothing(tweets_dir, tmp_path):
  """B11: a split smaller than a batch exits 2 and writes nothing, not even the workdir."""
  workdir = tmp_path / 'run'
  r = _run(tweets_dir, workdir, '--config.batch_size=400')
  assert r.returncode == 2, r.stderr[-3000:]
  assert len(_error_lines(r)) == 1 and 'Traceback' not in r.stderr
  assert not workdir.exists()
