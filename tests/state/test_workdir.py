"""Tests for mlheads.state.workdir: the workdir lock (B23) and the SIGTERM flag (B18)."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys

import pytest

from mlheads import errors
from mlheads.state import workdir

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _write_lock(path, **info):
  """Writes a lock file as another run would have left it."""
  with open(os.path.join(path, '.lock'), 'w') as f:
    json.dump(dict({'host': socket.gethostname(), 'started': 'earlier'}, **info), f)


def test_lock_refuses_second_holder(tmp_path):
  host = socket.gethostname()
  with workdir.WorkdirLock(str(tmp_path)):
    info = json.load(open(tmp_path / '.lock'))
    assert info['pid'] == os.getpid() and info['host'] == host
    with pytest.raises(errors.UsageError,
                       match=f'in use by pid {os.getpid()} on host {host} \\(since '):
      workdir.WorkdirLock(str(tmp_path)).acquire()
  assert not (tmp_path / '.lock').exists()


def test_lock_refuses_other_live_pid_and_other_host(tmp_path):
  _write_lock(tmp_path, pid=os.getppid())
  with pytest.raises(errors.UsageError, match=f'pid {os.getppid()} on host '):
    workdir.WorkdirLock(str(tmp_path)).acquire()
  _write_lock(tmp_path, pid=1, host='elsewhere')
  with pytest.raises(errors.UsageError, match='pid 1 on host elsewhere.*remove'):
    workdir.WorkdirLock(str(tmp_path)).acquire()
  assert json.load(open(tmp_path / '.lock'))['host'] == 'elsewhere'  # untouched.


def test_stale_lock_is_taken_over(tmp_path, caplog):
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()  # reaped: the pid is gone (or at worst reused, which proc_start catches).
  _write_lock(tmp_path, pid=dead.pid)
  with caplog.at_level(logging.WARNING):
    with workdir.WorkdirLock(str(tmp_path)):
      assert json.load(open(tmp_path / '.lock'))['pid'] == os.getpid()
  assert any('stale lock' in r.getMessage() and str(dead.pid) in r.getMessage()
             for r in caplog.records)
  # A live pid whose start time differs is a reused pid: the lock is stale too.
  _write_lock(tmp_path, pid=os.getppid(), proc_start='1')
  with workdir.WorkdirLock(str(tmp_path)):
    pass
  assert not (tmp_path / '.lock').exists()


def test_unreadable_lock_is_refused_while_fresh_and_taken_over_when_old(tmp_path):
  (tmp_path / '.lock').write_text('{"ho')  # a writer killed mid-write, or still writing.
  with pytest.raises(errors.UsageError, match='unreadable'):
    workdir.WorkdirLock(str(tmp_path)).acquire()
  os.utime(tmp_path / '.lock', (1, 1))
  with workdir.WorkdirLock(str(tmp_path)):
    assert json.load(open(tmp_path / '.lock'))['pid'] == os.getpid()


@pytest.mark.slow
def test_lock_of_killed_run_is_refused_then_taken_over(tmp_path):
  """The real B23 sequence: a live holder is refused; after kill -9 the lock is reclaimed."""
  code = ('import sys, time; from mlheads.state import workdir; '
          'workdir.WorkdirLock(sys.argv[1]).acquire(); print("locked", flush=True); time.sleep(60)')
  env = dict(os.environ, PYTHONPATH=_REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  holder = subprocess.Popen([sys.executable, '-c', code, str(tmp_path)], stdout=subprocess.PIPE,
                            env=env, text=True)
  try:
    assert holder.stdout.readline().strip() == 'locked'
    with pytest.raises(errors.UsageError, match=f'in use by pid {holder.pid} on host '):
      workdir.WorkdirLock(str(tmp_path)).acquire()
  finally:
    holder.kill()
    holder.wait()
  with workdir.WorkdirLock(str(tmp_path)):
    assert json.load(open(tmp_path / '.lock'))['pid'] == os.getpid()


# ----------------------------------------------------------------------------- preemption


def test_sigterm_sets_flag_and_restores_handler():
  """B18: SIGTERM becomes a flag the trainer polls; the previous handler comes back."""
  before = signal.getsignal(signal.SIGTERM)
  with workdir.PreemptionFlag() as flag:
    assert not flag.requested
    os.kill(os.getpid(), signal.SIGTERM)
    assert flag.requested
  assert signal.getsignal(signal.SIGTERM) is before
  assert workdir.PREEMPTED_EXIT_CODE == 143
