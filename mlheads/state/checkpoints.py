"""Checkpoints that fail loudly: orbax storage guarded by a sha256 manifest.

Layout (the workdir's other files: workdir.py):

  WORKDIR/checkpoints/<step>/     one orbax checkpoint per step; orbax writes it into a
                                  `<step>.orbax-checkpoint-tmp-*` dir and renames it when done
    state/...                     args.StandardSave of the state pytree: one zarr array per
                                  leaf, in 8 MB chunks (array_storage.py)
    extras/metadata               args.JsonSave of `extras`
    metrics/metrics               the best metric, which orbax's CheckpointManager ranks
    _CHECKPOINT_METADATA, commit_success.txt, ...   orbax bookkeeping
    manifest.json                 ours, written last (manifest.py): size and sha256 of every
                                  other file, the saved tree's paths/shapes/dtypes, the metrics

Orbax's CheckpointManager does the storage: the saves, the metrics, the best step
(`best_fn`, `best_mode`), which steps to keep (its LatestN and BestN policies: the newest
`max_to_keep` and the best) and the deletions. On top of it, our manifest: a step is
*committed* only when its manifest.json exists and its self-hash is valid; a step directory
without one is a save that was killed (B17) and is ignored, then removed by the next save.
Steps beyond the kept ones are deleted only after the new step has committed, so a kill at
any moment leaves a committed step. Restore verifies every hash before reading arrays and
falls back to older steps (B20). Nothing here unpickles or evaluates code (B25): orbax
array/JSON handlers and json only.
"""

import datetime
import json
import os
import shutil
from typing import Any, NamedTuple

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from mlheads import errors
from mlheads.state import array_storage
from mlheads.state import host_memory
from mlheads.state import manifest as manifest_lib

MANIFEST = manifest_lib.MANIFEST
_FORMAT = manifest_lib.FORMAT
_EXTRAS_FILE = os.path.join('extras', 'metadata')  # where ocp.args.JsonSave puts `extras`
# Module-level names, so tests can fault-inject a failing manifest write.
_sha256 = manifest_lib.sha256
_list_files = manifest_lib.list_files
_write_manifest = manifest_lib.write
_read_manifest = manifest_lib.read
_verify_files = manifest_lib.verify_files
_MAX_DIFFS_SHOWN = 8


class CheckpointError(errors.UsageError):
  """A checkpoint cannot be written or no intact one can be read; one line, names the dir."""


class Checkpointer:
  """Saves and restores (state, extras) per step under WORKDIR/checkpoints.

  Saves are synchronous, so the manifest is the last thing written (the headline state, ~40 MB
  with its moments, takes well under a second; from_csv's bag model, ~0.5 GB, a few seconds).
  Constructing one creates nothing on disk: restoring from a wrong path leaves no directory.
  """

  def __init__(self, workdir: str, *, max_to_keep: int = 2, best_metric: str | None = None,
               best_mode: str = 'max'):
    if max_to_keep < 1:
      raise ValueError(f'max_to_keep must be >= 1, got {max_to_keep}')
    if best_mode not in ('max', 'min'):
      raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, 'checkpoints')
    self.max_to_keep = max_to_keep
    self.best_metric = best_metric
    self.best_mode = best_mode
    self._primary = jax.process_index() == 0
    policies = [ocp.checkpoint_managers.LatestN(n=max_to_keep)]
    if best_metric is not None:
      policies.append(ocp.checkpoint_managers.BestN(
          get_metric_fn=self._rank, reverse=best_mode == 'min', n=1,
          keep_checkpoints_without_metrics=False))
    self._keep = ocp.checkpoint_managers.AnyPreservationPolicy(policies)
    self._manager = None  # made on first use: it reads the step directories.

  def _rank(self, metrics) -> tuple[float, int]:
    """Orbax's `best_fn`: the best metric, then the earlier step on ties (either mode)."""
    sign = -1 if self.best_mode == 'max' else 1
    return metrics[self.best_metric], sign * metrics['step']

  @property
  def manager(self) -> ocp.CheckpointManager:
    if self._manager is None:
      self._manager = ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(
          create=False, enable_async_checkpointing=False,
          best_fn=self._rank if self.best_metric is not None else None, best_mode=self.best_mode,
          # Deletions wait until a new step has committed (`_apply_retention`).
          preservation_policy=ocp.checkpoint_managers.preservation_policy.PreserveAll()),
          item_handlers=array_storage.item_handlers())
    return self._manager

  # -- listing

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _all_steps(self) -> list[int]:
    """Every finished orbax step dir, committed or not, ascending. Orbax tmp dirs are skipped."""
    try:
      names = os.listdir(self.directory)
    except FileNotFoundError:
      return []
    return sorted(int(n) for n in names
                  if n.isdigit() and os.path.isdir(os.path.join(self.directory, n)))

  def _committed(self) -> dict[int, dict[str, Any]]:
    """step -> manifest for every step with a valid manifest (files not hashed here)."""
    out = {}
    for step in self._all_steps():
      manifest, _ = _read_manifest(self._step_dir(step))
      if manifest is not None:
        out[step] = manifest
    return out

  def all_steps(self) -> list[int]:
    """Committed steps, ascending."""
    return sorted(self._committed())

  def saved_steps(self) -> list[int]:
    """Steps with a manifest file, valid or not, ascending: what `restore` will look at.

    The trainer resumes when this is non-empty, so a workdir whose manifests are all damaged
    is an error from `restore` (B20/B24), never a silent fresh start.
    """
    return [s for s in self._all_steps()
            if os.path.exists(os.path.join(self._step_dir(s), MANIFEST))]

  def latest_step(self) -> int | None:
    """Newest committed step, or None. Its files are verified only by `restore`, which may fall
    back further: resume from the step `restore` returns, not from this one."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def best_step(self) -> int | None:
    """Committed step with the best `best_metric` (earliest on ties), or None; orbax's
    `best_step` over the steps whose best metric is defined."""
    if self.best_metric is None or not self._all_steps():
      return None
    self.manager.reload()
    return self.manager.best_step()

  # -- save

  def save(self, step: int, state: Any, *, extras: dict, metrics: dict | None = None) -> None:
    """Writes state + extras as `step`; returns once the step is committed.

    Args:
      step: training step; a step that is already committed is left as it is (resuming runs
        are deterministic, so re-saving it would write the same bits).
      state: pytree of arrays / Python scalars (e.g. a flax TrainState).
      extras: strict-JSON dict (config, vocab, scaling, thresholds, data order...).
      metrics: validation metrics; `best_metric` among them makes this step a best candidate.

    Raises:
      FloatingPointError: some inexact leaf holds NaN/Inf (B21); nothing is written.
      TypeError / ValueError: extras not JSON, bad metrics; nothing is written.
      CheckpointError: the write failed (disk full, read-only...); older steps are intact (B19).
    """
    step = int(step)
    if step < 0:
      raise ValueError(f'step must be >= 0, got {step}')
    if bad := manifest_lib.nonfinite_paths(state):
      raise FloatingPointError(
          f'refusing to checkpoint step {step}: non-finite values in {", ".join(bad)}')
    if (problem := manifest_lib.json_problem(extras)) is not None:
      raise TypeError(f'checkpoint extras must be strict JSON: {problem}')
    metrics = manifest_lib.plain_metrics(metrics, self.best_metric)
    tree = manifest_lib.tree_record(state)
    step_dir = self._step_dir(step)
    if (committed := self._committed().get(step)) is not None:
      # A resumed run re-trains the steps after the newest *intact* checkpoint, so this step
      # may be the corrupt one restore skipped (B20): rewrite it rather than keep bad files.
      if (damage := _verify_files(step_dir, committed)) is None:
        logging.info('checkpoint step %d already committed in %s; not saving it again',
                     step, self.directory)
        return
      logging.warning('checkpoint step %d is corrupt (%s); writing it again', step, damage)
      if self._primary:  # Drop the commit marker first, so a half-removed step never counts.
        os.remove(os.path.join(step_dir, MANIFEST))
    # No metrics (a preemption save, B18): never a best candidate.
    best = None if self.best_metric is None or metrics is None else metrics[self.best_metric]
    try:
      if self._primary:
        os.makedirs(self.directory, exist_ok=True)
        self._remove_uncommitted()  # and this very step's dir, if its manifest got damaged.
      self._sync('mlheads_ckpt_pre_save')
      self.manager.reload()
      self.manager.save(step, args=ocp.args.Composite(
          state=array_storage.save_args(state), extras=ocp.args.JsonSave(extras)),
          # Orbax ranks only steps with metrics: an undefined best metric is never best.
          metrics=None if best is None else {self.best_metric: best, 'step': step}, force=True)
      if self._primary:  # orbax has synced all processes: every file is in place.
        files = {rel: {'size': os.path.getsize(os.path.join(step_dir, rel)),
                       'sha256': _sha256(os.path.join(step_dir, rel))}
                 for rel in _list_files(step_dir)}
        _write_manifest(step_dir, {
            'format': _FORMAT, 'step': step,
            'created': datetime.datetime.now(datetime.timezone.utc).isoformat(),
            'metrics': metrics, 'tree': {p: [list(s), d] for p, (s, d) in tree.items()},
            'files': files})
      self._sync('mlheads_ckpt_committed')
    except Exception as e:  # pylint: disable=broad-except
      # Whatever failed (ENOSPC, EROFS, a tensorstore write error), this step is not committed:
      # remove its pieces so it cannot be mistaken for one, and say so in one line.
      if self._primary:
        self._remove_uncommitted()
      raise CheckpointError(f'cannot save checkpoint step {step} in {self.workdir}: '
                            f'{errors.os_reason(e)} (earlier checkpoints are untouched)') from e
    self._apply_retention()
    host_memory.release()  # orbax's serialized copies of the arrays
    logging.info('checkpoint step %d committed in %s', step, self.directory)

  def _sync(self, name: str) -> None:
    if jax.process_count() > 1:
      ocp.multihost.sync_global_processes(name)

  def _remove_uncommitted(self) -> None:
    """Deletes orbax tmp dirs and step dirs without a manifest: leftovers of killed saves.

    Safe because only the lock holder saves into this workdir (WorkdirLock).
    """
    try:
      names = os.listdir(self.directory)
    except FileNotFoundError:
      return
    for name in names:
      path = os.path.join(self.directory, name)
      uncommitted = name.isdigit() and _read_manifest(path) == (None, None)
      if '.orbax-checkpoint-tmp' in name or uncommitted:
        logging.warning('removing unfinished checkpoint %s', path)
        shutil.rmtree(path, ignore_errors=True)

  def _apply_retention(self) -> None:
    """Deletes, through orbax, the steps its policies do not keep: of the committed steps, the
    newest `max_to_keep` and the best stay. Step dirs whose manifest is damaged go once they
    fall out of that window: restore already skips them, and keeping them would only repeat
    the warning forever. Runs on every process (orbax's delete is collective)."""
    self.manager.reload()
    committed = self._committed()
    infos = [_Info(step=s, time=datetime.datetime.min, metrics=self.manager.metrics(s))
             for s in sorted(committed)]
    kept = {i.step for i, keep in zip(infos, self._keep.should_preserve(
        infos, context=ocp.checkpoint_managers.PreservationContext())) if keep}
    for step in self._all_steps():
      if step in kept:
        continue
      if self._primary:  # Drop the commit marker first so a half-deleted step never counts.
        try:
          os.remove(os.path.join(self._step_dir(step), MANIFEST))
        except FileNotFoundError:
          pass
      self.manager.delete(step)

  # -- restore

  def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict, int]:
    """Restores (state, extras, step) into the structure of `target`.

    Args:
      target: pytree of the expected structure: the fresh state, or `jax.eval_shape` of its
        init. Leaves keep the target's sharding; abstract leaves without one come back
        replicated over all devices.
      step: a committed step; None means the newest intact one, falling back past corrupted
        steps with a warning naming the bad file (B20).

    Raises:
      errors.UsageError: no committed step (B24), an unknown `step`, or the saved tree differs
        from `target` in paths, shapes or dtypes (B22; checked before any array is read).
      CheckpointError: every candidate step (or the requested one) is corrupted.
    """
    expected = manifest_lib.tree_record(target)

    def fits(s, manifest):
      saved = {p: (tuple(sh), d) for p, (sh, d) in manifest['tree'].items()}
      if diffs := manifest_lib.structure_diffs(saved, expected):
        more = len(diffs) - _MAX_DIFFS_SHOWN
        raise errors.UsageError(
            f'checkpoint step {s} in {self.directory} does not fit the model: '
            + '; '.join(diffs[:_MAX_DIFFS_SHOWN]) + (f'; ... {more} more' if more > 0 else ''))

    s = self._first_intact(step, fits)
    return self._restore_verified(s, target) + (s,)

  def restore_best(self, target: Any) -> tuple[Any, dict, int | None]:
    """(state, extras, step) of the best committed step, else the newest one; the target and
    `{}` when nothing is committed. A best step corrupted since it was written (B20) falls back
    to the newest intact one, with a warning."""
    best = self.best_step()
    step = best if best is not None else self.latest_step()
    if step is None:
      return target, {}, None
    try:
      return self.restore(target, step)
    except CheckpointError as e:
      logging.warning('cannot evaluate step %d (%s); using the newest intact checkpoint', step, e)
      return self.restore(target)

  def _candidates(self, step: int | None) -> list[int]:
    """Steps to try, newest first: `step` alone, or every step that has a manifest file.

    A manifest that exists but is damaged still makes its step a candidate: that is
    corruption to report (and fall back from), never a reason to start afresh.
    """
    marked = [s for s in self._all_steps()
              if os.path.exists(os.path.join(self._step_dir(s), MANIFEST))]
    if not marked:
      raise errors.UsageError(f'no committed checkpoint in {self.directory}')
    if step is not None and int(step) not in marked:
      raise errors.UsageError(
          f'no committed checkpoint for step {step} in {self.directory} (committed: {marked})')
    return [int(step)] if step is not None else marked[::-1]

  def read_extras(self, step: int | None = None) -> tuple[dict, int]:
    """(extras, step) of a committed step without reading arrays or needing a target.

    For predict, which rebuilds the model from the extras. The step's files are verified
    against its manifest first, as `restore` does; `step` None means the newest intact step.
    Raises like `restore`: UsageError (no committed / unknown step), CheckpointError (corrupt).
    """
    def has_extras(s, manifest):
      if _EXTRAS_FILE not in manifest['files']:
        return f'{os.path.join(self._step_dir(s), _EXTRAS_FILE)} is not in the manifest'

    s = self._first_intact(step, has_extras)
    # Hash-verified: plain JSON, read as such (orbax's JsonSave writes exactly this).
    with open(os.path.join(self._step_dir(s), _EXTRAS_FILE), encoding='utf-8') as f:
      return json.load(f), s

  def _first_intact(self, step: int | None, check) -> int:
    """The newest candidate step (`_candidates`) whose manifest is valid, passes
    `check(step, manifest) -> problem or None`, and whose files match it; each corrupt
    one is skipped with a warning naming the bad file (B20)."""
    problems = []
    for s in self._candidates(step):
      step_dir = self._step_dir(s)
      manifest, reason = _read_manifest(step_dir)
      if manifest is None:
        reason = reason or f'{os.path.join(step_dir, MANIFEST)} is missing'
      else:
        reason = check(s, manifest) or _verify_files(step_dir, manifest)
      if reason is None:
        return s
      problems.append(f'step {s}: {reason}')
      logging.warning('checkpoint step %d is corrupt, skipping it: %s', s, reason)
    raise CheckpointError(f'no intact checkpoint in {self.directory}: ' + '; '.join(problems))

  def _restore_verified(self, step: int, target: Any) -> tuple[Any, dict]:
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ('devices',))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    self.manager.reload()
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(array_storage.abstract(target, replicated)),
        extras=ocp.args.JsonRestore()))
    return restored.state, restored.extras

  def close(self) -> None:
    if self._manager is not None:
      self._manager.close()

  def __enter__(self) -> 'Checkpointer':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


class _Info(NamedTuple):
  """A step as orbax's preservation policies see it."""
  step: int
  time: datetime.datetime
  metrics: dict | None
