"""Several processes, one program: JAX's multi-controller runtime, and what the processes
must agree on beyond the collectives XLA places in the steps.

Every process runs the same command; `jax.distributed.initialize` connects them (given
the coordinator's address, or detected on SLURM, TPU VMs and other clusters JAX knows),
and from then on `jax.devices()` spans all hosts. Per-step agreement (the gradient mean)
is in the jitted step; this module covers the rest:
  * `describe()`            the line a run logs about where it runs;
  * `is_primary()`          process 0, the one that writes files other than checkpoints;
  * `first_on_process_0(f)` f on process 0, then on the others (preparing a shared data
                            dir once), failing together if process 0 fails.
Preemption (a SIGTERM that reaches one process) is agreed through JAX's preemption
service: state/workdir.PreemptionFlag.
"""

from collections.abc import Callable
from typing import TypeVar

import jax
from jax.experimental import multihost_utils
import numpy as np

from mlheads import errors

T = TypeVar('T')


def initialize(coordinator_address: str | None, num_processes: int | None,
               process_id: int | None) -> None:
  """Joins this process to the others (`jax.distributed.initialize`); all None: detect the
  cluster (SLURM, a TPU VM, Open MPI, ...)."""
  # CPU processes need a collectives backend to all-reduce gradients; GPUs/TPUs ignore it.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  except (ValueError, RuntimeError) as e:
    raise errors.UsageError(f'cannot join the other processes (--coordinator_address='
                            f'{coordinator_address}, --num_processes={num_processes}, '
                            f'--process_id={process_id}): {str(e).strip().splitlines()[0]}'
                            ) from None


def describe() -> str:
  """'devices: 8, processes: 2, local devices: 4, platform: gpu'."""
  return (f'devices: {jax.device_count()}, processes: {jax.process_count()}, '
          f'local devices: {jax.local_device_count()}, platform: {jax.default_backend()}')


def is_primary() -> bool:
  return jax.process_index() == 0


def any_process(flag: bool) -> bool:
  """True on every process if `flag` is True on any (a collective: all must call it)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def first_on_process_0(fn: Callable[[], T], what: str) -> T:
  """`fn()` on process 0, then on the others once it has returned.

  For work that must not run on several processes at once but whose result each needs:
  preparing a data set into a data dir they share (the others then find it prepared;
  with host-local dirs each prepares its own). If it raises on process 0, it raises
  there and the others stop too, with a UsageError saying so, rather than waiting.
  """
  if jax.process_count() == 1:
    return fn()
  result, failed = None, False
  if is_primary():
    try:
      result = fn()
    except BaseException:  # pylint: disable=broad-except  (re-raised after telling the others)
      failed = True
      any_process(True)
      raise
  if any_process(failed):
    raise errors.UsageError(f'process 0 failed {what}; its log says why')
  return result if is_primary() else fn()
