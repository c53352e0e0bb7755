"""Process-level guards of a workdir: one run at a time (B23), SIGTERM as a flag agreed by
every process (B18, B29), and what a run resuming it must agree with: the config (B22) and
the data (B28).

  WORKDIR/.lock         JSON {host, pid, started, proc_start} of the run that holds the workdir
  WORKDIR/config.json   the config of the run whose checkpoints the workdir holds
"""

import datetime
import json
import os
import signal
import socket
from typing import Any

from absl import logging
from flax import traverse_util
import jax
from jax.experimental import multihost_utils

from mlheads import errors
from mlheads.data import fingerprint
from mlheads.state import checkpoints
from mlheads.state import writers

# SIGTERM's conventional shell status (128 + 15): what a preempted run exits with after saving.
PREEMPTED_EXIT_CODE = 143


def _proc_start(pid: int) -> str | None:
  """Kernel start time of `pid` (Linux), to tell a live owner from a reused pid; else None."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      fields = f.read().rsplit(')', 1)[1].split()
  except (OSError, IndexError):
    return None
  if fields[0] in ('Z', 'X'):  # a zombie has exited; only its exit status is left.
    return 'dead'
  return fields[19]  # field 22 of stat; fields[0] is field 3.


def _pid_alive(pid: int, proc_start: str | None) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # exists, owned by another user.
  now = _proc_start(pid)
  if now == 'dead':
    return False
  return proc_start is None or now is None or now == proc_start


class WorkdirLock:
  """Context manager: one run per workdir (B23).

  Acquiring creates WORKDIR/.lock with O_CREAT|O_EXCL holding JSON {host, pid, started,
  proc_start}. A lock of a live process (or of another host, whose processes we cannot see)
  raises errors.UsageError naming host and pid; a lock left on this host by a dead process
  (kill -9) is taken over with a warning. In multi-process runs let only process 0 lock
  (`enabled=jax.process_index() == 0`).
  """

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.path = os.path.join(self.workdir, '.lock')
    self.enabled = enabled
    self._info: dict[str, Any] | None = None

  def _in_use(self, info: dict[str, Any]) -> errors.UsageError:
    msg = (f"workdir {self.workdir} is in use by pid {info.get('pid')} on host "
           f"{info.get('host')} (since {info.get('started')})")
    if info.get('host') != socket.gethostname():
      msg += f'; if that run is dead, remove {self.path}'
    return errors.UsageError(msg)

  def _read(self, path: str) -> dict[str, Any] | None:
    try:
      with open(path) as f:
        info = json.load(f)
      return info if isinstance(info, dict) else None
    except (OSError, ValueError):
      return None

  def _is_stale(self, info: dict[str, Any] | None) -> bool:
    if info is None:
      # Unreadable: a writer between O_EXCL and write, or a crash right there; wait it out.
      try:
        return os.path.getmtime(self.path) < datetime.datetime.now().timestamp() - 30
      except FileNotFoundError:
        return True
    if info.get('host') != socket.gethostname() or not isinstance(info.get('pid'), int):
      return False
    return not _pid_alive(info['pid'], info.get('proc_start'))

  def check(self) -> None:
    """Raises errors.UsageError naming host and pid if a live run holds the lock; writes nothing.

    Lets a second run refuse at once (B23), before it spends time reading data and compiling,
    without creating the workdir. Only a hint: `acquire` is what actually excludes.
    """
    if not self.enabled or self._info is not None or not os.path.exists(self.path):
      return
    held = self._read(self.path)
    if held is not None and not self._is_stale(held):
      raise self._in_use(held)

  def acquire(self) -> None:
    """Takes the lock or raises errors.UsageError naming the holder; creates WORKDIR."""
    if not self.enabled:
      return
    if self._info is not None:
      raise self._in_use(self._info)
    os.makedirs(self.workdir, exist_ok=True)
    info = {'host': socket.gethostname(), 'pid': os.getpid(),
            'started': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
            'proc_start': _proc_start(os.getpid())}
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        held = self._read(self.path)
        if not self._is_stale(held):
          if held is None:
            raise errors.UsageError(
                f'workdir {self.workdir} is locked by {self.path}, which is unreadable (being '
                'written?); remove it if no run is using the workdir') from None
          raise self._in_use(held) from None
        self._take_over(held)
        continue
      with os.fdopen(fd, 'w') as f:
        json.dump(info, f)
        f.flush()
        os.fsync(f.fileno())
      self._info = info
      return
    raise errors.UsageError(f'could not lock workdir {self.workdir}: {self.path} keeps changing')

  def _take_over(self, stale: dict[str, Any] | None) -> None:
    """Removes a stale lock without ever removing a fresh one another process just created."""
    # Renaming is atomic, so of two processes taking over the same stale lock only one gets it;
    # the content check catches having renamed a lock that someone created in between.
    aside = f'{self.path}.stale.{os.getpid()}'
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return
    if self._read(aside) != stale:
      try:
        os.link(aside, self.path)
      except FileExistsError:
        pass
      os.remove(aside)
      raise self._in_use(self._read(self.path) or {})
    os.remove(aside)
    logging.warning('taking over stale lock %s of dead pid %s on %s (since %s)', self.path,
                    (stale or {}).get('pid'), (stale or {}).get('host'),
                    (stale or {}).get('started'))

  def release(self) -> None:
    """Removes the lock if it is still ours; a no-op otherwise."""
    if self._info is None:
      return
    if self._read(self.path) == self._info:  # never remove a lock we no longer own.
      os.remove(self.path)
    self._info = None

  def __enter__(self) -> 'WorkdirLock':
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()


# ----------------------------------------------------------------------------- preemption


class PreemptionFlag:
  """Context manager: has a SIGTERM asked this run to stop? The trainer asks `reached(n)`
  after its n-th step of this process' life and, when True, saves and exits with
  PREEMPTED_EXIT_CODE (B18).

  One process: SIGTERM sets a flag (a Python handler, entered in the main thread, where
  Python delivers signals), so the next step boundary saves. Several processes (B29): the
  signal may reach one of them, or each at a different step, and a save is collective, so
  they must agree on the step. JAX's preemption service does that: since
  `jax.distributed.initialize` it catches SIGTERM itself, tells every process, and
  `multihost_utils.reached_preemption_sync_point(n)` turns True on all of them at the same
  n (one past the furthest any had reached). No Python handler is installed then, as it
  would replace the service's. `n` counts this life's steps, not global steps, so a notice
  that arrives before the loop (while data loads) is agreed at step 1 of the loop.

  143 = 128 + SIGTERM, what a shell reports for a SIGTERM'd process, so schedulers see a
  preemption, not a crash; rerunning the same command resumes. The previous handler comes
  back on exit.
  """

  def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
    self.signals = signals
    self._requested = False
    self._previous: dict[int, Any] = {}

  @property
  def requested(self) -> bool:
    """This process received the signal (single-process runs only)."""
    return self._requested

  def reached(self, steps_run: int) -> bool:
    """Whether to save and stop after this life's `steps_run`-th step (1, 2, ...); with
    several processes, True on all of them at the same `steps_run`."""
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(steps_run)
    return self._requested

  def _handle(self, signum, frame) -> None:
    del frame
    self._requested = True
    logging.warning('received %s: will checkpoint at the next step boundary and exit %d',
                    signal.Signals(signum).name, PREEMPTED_EXIT_CODE)

  def __enter__(self) -> 'PreemptionFlag':
    if jax.process_count() == 1:
      self._previous = {s: signal.signal(s, self._handle) for s in self.signals}
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}


# ----------------------------------------------------------------------------- resuming

# What must match between a workdir's checkpoints and a run resuming them (B22): the model
# (trunk, heads), the data and its order (data, seed, batch_size: step s's batch is a function
# of them) and the optimizer state's structure. epochs, learning_rate, logging and evaluation
# cadence may change, e.g. to extend a finished run with more epochs. data.dir may move.
RESUME_KEYS = ('trunk', 'heads', 'data', 'seed', 'batch_size', 'optimizer')
RESUME_FREE = ('data.dir',)


def _resume_settings(config_dict: dict) -> dict:
  return traverse_util.flatten_dict(
      {k: v for k, v in config_dict.items() if k in RESUME_KEYS}, sep='.')


def check_resumable(config, workdir: str) -> None:
  """Refuses at once, before data is read and writing nothing, a workdir this run cannot use.

  B23: a live run holds its lock. B22: it holds checkpoints of a run whose config.json differs
  from this config in a key of RESUME_KEYS (restore would also refuse their shapes, but later
  and in terms of arrays; this names the settings).
  """
  WorkdirLock(workdir, enabled=jax.process_index() == 0).check()
  saved_path = os.path.join(workdir, 'config.json')
  with checkpoints.Checkpointer(workdir) as ckpt:
    resuming = bool(ckpt.saved_steps())
  if not resuming or not os.path.exists(saved_path):
    return
  try:
    with open(saved_path, encoding='utf-8') as f:
      saved = _resume_settings(json.load(f))
  except (OSError, ValueError, AttributeError) as e:  # AttributeError: JSON but not an object.
    logging.warning('cannot read %s (%s); relying on the checkpoint shape check', saved_path, e)
    return
  now = _resume_settings(json.loads(config.to_json_best_effort()))
  diffs = [f'{k}: checkpoints have {saved.get(k, "(unset)")!r}, this run {now.get(k, "(unset)")!r}'
           for k in sorted(set(saved) | set(now))
           if k not in RESUME_FREE and saved.get(k) != now.get(k)]
  if diffs:
    raise errors.UsageError(
        f'workdir {workdir} holds checkpoints of a different config ({saved_path}): '
        + '; '.join(diffs) + '; use a new --workdir, or the settings it was trained with')


def data_trained_on(workdir: str) -> dict | None:
  """The data fingerprint (data/fingerprint.py) the workdir's newest intact checkpoint was
  trained on; None when there is nothing to resume, or its checkpoints predate fingerprints."""
  with checkpoints.Checkpointer(workdir) as ckpt:
    if not ckpt.saved_steps():
      return None
    extras, step = ckpt.read_extras()
  found = (extras.get('data') or {}).get('fingerprint')
  if not found:
    logging.warning('checkpoint step %d of %s records no data fingerprint (an older mlheads): '
                    'cannot check that this run reads the data it was trained on', step, workdir)
  return found or None


def check_same_data(workdir: str, trained_on: dict | None, now: dict) -> None:
  """B28: refuses to resume checkpoints trained on other data than this run reads, naming
  what differs, before the splits are read or anything in the workdir changes."""
  if not trained_on or not now:
    return
  diffs = fingerprint.differences(trained_on, now)
  if diffs:
    raise errors.UsageError(
        f'workdir {workdir} holds checkpoints trained on other data than this run reads: '
        + '; '.join(diffs) + '. Resuming would train and evaluate the old model on new data: '
        'start a new run with a new --workdir, or give it the data it was trained on')


def drop_records_after(workdir: str, step: int) -> None:
  """On resume, forgets metrics.jsonl lines of steps after `step`: a killed run logged them,
  and the resumed run logs them again (same values), which would double the learning curves."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return
  with open(path, encoding='utf-8') as f:
    lines = f.readlines()
  keep = []
  for line in lines:
    try:
      if json.loads(line)['step'] > step:
        continue
    except (ValueError, KeyError, TypeError):
      continue  # a line cut short by the kill.
    keep.append(line)
  if len(keep) != len(lines):
    writers.atomic_write(path, ''.join(keep))
