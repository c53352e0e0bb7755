"""Two processes on 127.0.0.1 (CPU collectives through gloo) run the whole experiment:
preparing the data, training, evaluating, checkpointing, reporting (B29, B30).

Each process is the real `python -m mlheads.main ... --coordinator_address=127.0.0.1:PORT
--num_processes=2 --process_id=I`, both on one workdir, as on a cluster with a shared
filesystem.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT

# Four processes of the real CLI, two at a time.
pytestmark = pytest.mark.slow

EPOCHS, SPE = 4, 24  # 240 rows -> 192 train examples -> 24 steps of 8 per epoch.
TOTAL = EPOCHS * SPE
# conftest's session compilation cache is in os.environ: the processes share it.
_ENV = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu',
            XLA_FLAGS='--xla_force_host_platform_device_count=1')


def _args(data_dir, workdir, *extra):
  return [sys.executable, '-m', 'mlheads.main', '--config=experiments/headline.py',
          f'--workdir={workdir}', f'--config.data.dir={data_dir}',
          '--config.data.max_rows=240', '--config.data.vocab_size=60',
          '--config.data.max_len=12', '--config.trunk.embed_dim=8',
          '--config.trunk.lstm_units=4', '--config.trunk.hidden=(8,)', '--config.batch_size=8',
          '--config.eval_batch_size=16', f'--config.epochs={EPOCHS}',
          '--config.log_every_steps=5', '--config.progress=False', *extra]


def _port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start_pair(data_dir, workdir, logs: pathlib.Path) -> list[subprocess.Popen]:
  port = _port()
  procs = []
  for i in range(2):
    log = open(logs / f'process{i}.log', 'w', encoding='utf-8')  # pylint: disable=consider-using-with
    procs.append(subprocess.Popen(
        _args(data_dir, workdir, f'--coordinator_address=127.0.0.1:{port}',
              '--num_processes=2', f'--process_id={i}'),
        cwd=ROOT, env=_ENV, stdout=log, stderr=subprocess.STDOUT))
  return procs


def _finish(procs, logs: pathlib.Path, timeout=300) -> tuple[list[int], list[str]]:
  try:
    codes = [p.wait(timeout=timeout) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  return codes, [(logs / f'process{i}.log').read_text() for i in range(2)]


def _sha(log: str) -> str:
  (line,) = [l for l in log.splitlines() if 'params_sha256' in l]
  return line.split('params_sha256 ')[1].strip()


def _committed(workdir) -> list[int]:
  ck = pathlib.Path(workdir) / 'checkpoints'
  return sorted(int(p.name) for p in ck.iterdir()
                if p.name.isdigit() and (p / 'manifest.json').exists()) if ck.is_dir() else []


@pytest.fixture(scope='module')
def pair(tmp_path_factory):
  """An uninterrupted two-process run on a fresh data dir: (data dir, workdir, exit codes,
  logs). Both processes load the data set; process 0 prepares it first."""
  root = tmp_path_factory.mktemp('pair')
  data_dir, workdir = root / 'tfds', root / 'run'
  codes, logs = _finish(_start_pair(data_dir, workdir, root), root)
  return data_dir, workdir, codes, logs


def test_b30_two_processes_run_the_whole_experiment_and_only_process_0_writes_files(
    pair, tmp_path):
  """B30: both processes finish with the same parameters; metrics.jsonl, TensorBoard, config,
  metrics.json and the report are written once, by process 0; the results are one
  process' (same global batches, same devices) within float32 tolerance."""
  data_dir, workdir, codes, logs = pair
  assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
  for log in logs:
    assert 'devices: 2, processes: 2, local devices: 1, platform: cpu' in log
  assert _sha(logs[0]) == _sha(logs[1])
  metrics = json.loads((workdir / 'metrics.json').read_text())
  assert metrics['params_sha256'] == _sha(logs[0]) and metrics['steps'] == TOTAL
  records = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  keys = [(r['step'], r['split']) for r in records]
  assert len(keys) == len(set(keys)) and ('validation/main' in {s for _, s in keys})
  assert len(list((workdir / 'tensorboard').iterdir())) == 1  # one writer, one event file
  assert (workdir / 'report.md').exists() and (workdir / 'config.json').exists()

  # One process over 2 devices: the same program; the collectives sum in another order.
  single = tmp_path / 'single'
  r = subprocess.run(_args(data_dir, single), cwd=ROOT, capture_output=True, text=True,
                     timeout=300, check=False,
                     env=dict(_ENV, XLA_FLAGS='--xla_force_host_platform_device_count=2'))
  assert r.returncode == 0, r.stderr[-3000:]
  one = json.loads((single / 'metrics.json').read_text())
  for out in ('main', 'aux'):
    assert metrics['test'][out]['loss'] == pytest.approx(one['test'][out]['loss'], rel=1e-3)


def test_b29_sigterm_to_one_process_saves_the_same_step_on_both_exits_143_and_resumes(
    pair, tmp_path):
  """B29: SIGTERM reaches process 1 only, mid-training: both agree on one step, save it
  together and exit 143; the same two commands resume and end with the uninterrupted run's
  parameters, bit for bit."""
  data_dir, _, codes, logs = pair
  assert codes == [0, 0]
  workdir = tmp_path / 'run'
  procs = _start_pair(data_dir, workdir, tmp_path)
  t0 = time.time()
  while not _committed(workdir) and time.time() - t0 < 240 and procs[1].poll() is None:
    time.sleep(0.001)
  procs[1].send_signal(signal.SIGTERM)
  codes, killed = _finish(procs, tmp_path)
  assert codes == [143, 143], killed[0][-3000:] + killed[1][-3000:]
  saved = {l.split('saved step ')[1].split(';')[0] for log in killed for l in log.splitlines()
           if 'SIGTERM: saved step' in l}
  assert len(saved) == 1, saved
  step = int(saved.pop())
  assert SPE <= step < TOTAL and step in _committed(workdir)
  assert 'Traceback' not in killed[0] + killed[1]

  codes, resumed = _finish(_start_pair(data_dir, workdir, tmp_path), tmp_path)
  assert codes == [0, 0], resumed[0][-3000:] + resumed[1][-3000:]
  for log in resumed:
    assert f'Resuming from step {step} of {TOTAL}' in log
    assert _sha(log) == _sha(logs[0])
