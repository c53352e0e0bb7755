"""Checkpoints that fail loudly: orbax storage guarded by a sha256 manifest.

Layout (the workdir's other files: workdir.py):

  WORKDIR/checkpoints/<step>/     one orbax checkpoint per step; orbax writes it into a
                                  `<step>.orbax-checkpoint-tmp-*` dir and renames it when done
    state/...                     args.StandardSave of the state pytree (OCDBT files, _METADATA)
    extras/metadata               args.JsonSave of `extras`
    _CHECKPOINT_METADATA, commit_success.txt, ...   orbax bookkeeping
    manifest.json                 ours, written last (temp file + os.replace): size and sha256 of
                                  every other file, the saved tree's paths/shapes/dtypes, metrics

A step is *committed* only when its manifest.json exists and its self-hash is valid; a step
directory without one is a save that was killed (B17) and is ignored, then removed by the next
save. Restore verifies every hash before reading arrays and falls back to older steps (B20).
Nothing here unpickles or evaluates code (B25): orbax array/JSON handlers and json only.

We drive `ocp.Checkpointer` rather than `ocp.CheckpointManager` because what counts as a step,
which steps are kept (latest N *and* the best) and which are good is defined by our manifest;
the manager keeps its own cached view of steps that would disagree with it.
"""

import datetime
import json
import math
import os
import re
import shutil
from typing import Any

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from mlheads import errors
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


# ----------------------------------------------------------------------------- pytree records


def _leaf_record(x: Any) -> tuple[tuple[int, ...], str]:
  """(shape, dtype) of a leaf; Python scalars get 'py:<type>' since they carry no width."""
  if isinstance(x, bool):
    return (), 'py:bool'
  if isinstance(x, int):
    return (), 'py:int'
  if isinstance(x, float):
    return (), 'py:float'
  if hasattr(x, 'shape') and hasattr(x, 'dtype'):
    return tuple(int(d) for d in x.shape), str(x.dtype)
  raise TypeError(f'checkpoint leaves must be arrays or Python scalars, got {type(x).__name__}')


def _tree_record(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  """Maps each leaf's key path (as jax.tree_util.keystr prints it) to (shape, dtype)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): _leaf_record(x) for path, x in leaves}


def _dtypes_agree(saved: str, expected: str) -> bool:
  """Exact dtype match, except that a Python scalar matches any dtype of its kind.

  A fresh TrainState holds `step=0` (a Python int) while a trained one holds an int32 array;
  both are the same value with no width to lose, so neither side is a silent cast.
  """
  if saved == expected:
    return True
  kinds = {'py:bool': 'b', 'py:int': 'iu', 'py:float': 'f'}
  for py, other in ((saved, expected), (expected, saved)):
    if py in kinds and not other.startswith('py:'):
      return np.dtype(other).kind in kinds[py]
  return False


def _structure_diffs(saved: dict[str, Any], expected: dict[str, Any]) -> list[str]:
  """Human-readable differences between a saved and an expected tree record."""
  diffs = []
  for path in expected:
    if path not in saved:
      diffs.append(f'{path}: expected {_fmt(expected[path])} but not in checkpoint')
      continue
    (s_shape, s_dtype), (e_shape, e_dtype) = saved[path], expected[path]
    if tuple(s_shape) != tuple(e_shape) or not _dtypes_agree(s_dtype, e_dtype):
      diffs.append(f'{path}: saved {_fmt(saved[path])}, expected {_fmt(expected[path])}')
  diffs += [f'{p}: saved {_fmt(saved[p])} but not expected' for p in saved if p not in expected]
  return diffs


def _fmt(record) -> str:
  shape, dtype = record
  return f'{tuple(shape)} {dtype}'


def _nonfinite_paths(tree: Any) -> list[str]:
  """Key paths of inexact leaves holding NaN or Inf; one device->host transfer for all of them."""
  paths, checks = [], []
  for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if isinstance(x, float):
      if not math.isfinite(x):
        paths.append(jax.tree_util.keystr(path))
    elif hasattr(x, 'dtype') and jax.numpy.issubdtype(x.dtype, jax.numpy.inexact):  # bf16 too.
      xp = jax.numpy if isinstance(x, jax.Array) else np
      checks.append((jax.tree_util.keystr(path), xp.all(xp.isfinite(x))))
  flags = jax.device_get([c for _, c in checks])
  return paths + [p for (p, _), ok in zip(checks, flags) if not ok]


def _restore_target(x: Any, default_sharding) -> Any:
  """What orbax restores into: arrays become abstract with the target's own sharding."""
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  if isinstance(x, jax.ShapeDtypeStruct) and x.sharding is None:
    # Without a sharding orbax hands back numpy; replicated matches how the trainer holds params.
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=default_sharding)
  return x  # ShapeDtypeStruct with sharding, numpy arrays, Python scalars: orbax knows these.


def _json_problem(obj: Any, path: str = 'extras') -> str | None:
  """Where `obj` stops being strict JSON (no NaN, str keys), or None if it is fine."""
  if isinstance(obj, dict):
    for k, v in obj.items():
      if not isinstance(k, str):
        return f'{path}: key {k!r} is not a string'
      if (p := _json_problem(v, f'{path}[{k!r}]')) is not None:
        return p
    return None
  if isinstance(obj, (list, tuple)):
    return next((p for i, v in enumerate(obj) if (p := _json_problem(v, f'{path}[{i}]'))), None)
  if isinstance(obj, float) and not math.isfinite(obj):
    return f'{path}: {obj} is not valid JSON'
  if obj is None or isinstance(obj, (str, int, float)):
    return None
  return f'{path}: {type(obj).__name__} is not JSON-serialisable (convert it to list/float first)'


def _short_reason(e: Exception) -> str:
  """'No space left on device' rather than a page of tensorstore spec; else the first line."""
  code = getattr(e, 'errno', None)
  if code is None and (m := re.search(r"os_error_code='(\d+)'", str(e))):
    code = int(m.group(1))  # tensorstore reports OS errors as ValueError with this tag.
  if code:
    return f'{os.strerror(code)} ({type(e).__name__})'
  first = (str(e).strip().splitlines() or [''])[0]
  return f'{type(e).__name__}: {first[:300]}'


# ----------------------------------------------------------------------------- Checkpointer


class Checkpointer:
  """Saves and restores (state, extras) per step under WORKDIR/checkpoints.

  Saves are synchronous: a 5M-parameter state is ~20 MB, written and hashed in well under a
  second, and a synchronous save lets the manifest be the last thing written. Constructing a
  Checkpointer creates nothing on disk, so restoring from a wrong path cannot leave a directory.
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
    self._ckptr = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    self._primary = jax.process_index() == 0

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
    """Committed step with the best `best_metric` (earliest on ties), or None."""
    if self.best_metric is None:
      return None
    scored = [(m['metrics'][self.best_metric], s) for s, m in self._committed().items()
              if (m.get('metrics') or {}).get(self.best_metric) is not None]
    if not scored:
      return None
    sign = 1 if self.best_mode == 'max' else -1
    return max(scored, key=lambda vs: (sign * vs[0], -vs[1]))[1]

  # -- save

  def _check_metrics(self, metrics: dict | None) -> dict[str, float | None] | None:
    """Metrics as plain floats; NaN/Inf become null (undefined, never best)."""
    if metrics is None:
      return None
    out = {}
    for k, v in metrics.items():
      try:
        v = float(np.asarray(v))
      except (TypeError, ValueError) as e:
        raise TypeError(f'metric {k!r} must be a scalar number, got {type(v).__name__}') from e
      out[str(k)] = v if math.isfinite(v) else None
    if self.best_metric is not None and self.best_metric not in out:
      raise ValueError(f'best_metric {self.best_metric!r} is not among the metrics passed to '
                       f'save: {sorted(out)}')
    return out

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
    if bad := _nonfinite_paths(state):
      raise FloatingPointError(
          f'refusing to checkpoint step {step}: non-finite values in {", ".join(bad)}')
    if (problem := _json_problem(extras)) is not None:
      raise TypeError(f'checkpoint extras must be strict JSON: {problem}')
    metrics = self._check_metrics(metrics)
    tree = _tree_record(state)
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
    try:
      if self._primary:
        os.makedirs(self.directory, exist_ok=True)
        self._remove_uncommitted()
        # An uncommitted dir of this very step (e.g. its manifest got damaged) would block orbax.
        shutil.rmtree(step_dir, ignore_errors=True)
      self._sync('mlheads_ckpt_pre_save')
      self._ckptr.save(step_dir, ocp.args.Composite(
          state=ocp.args.StandardSave(state), extras=ocp.args.JsonSave(extras)))
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
                            f'{_short_reason(e)} (earlier checkpoints are untouched)') from e
    if self._primary:
      self._apply_retention()
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
    """Keeps the newest `max_to_keep` committed steps and the best one; deletes the rest.

    Step dirs whose manifest is damaged go too once they fall out of that window: restore
    already skips them, and keeping them would only repeat the warning forever.
    """
    steps = self.all_steps()
    keep = set(steps[-self.max_to_keep:])
    if (best := self.best_step()) is not None:
      keep.add(best)
    for step in self._all_steps():
      if step not in keep:
        # Drop the commit marker first so a half-deleted step never looks committed.
        try:
          os.remove(os.path.join(self._step_dir(step), MANIFEST))
        except FileNotFoundError:
          pass
        shutil.rmtree(self._step_dir(step), ignore_errors=True)

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
    candidates = self._candidates(step)
    expected = _tree_record(target)
    problems = []
    for s in candidates:
      step_dir = self._step_dir(s)
      manifest, reason = _read_manifest(step_dir)
      if manifest is None:
        reason = reason or f'{os.path.join(step_dir, MANIFEST)} is missing'
      else:
        saved = {p: (tuple(sh), d) for p, (sh, d) in manifest['tree'].items()}
        if diffs := _structure_diffs(saved, expected):
          more = len(diffs) - _MAX_DIFFS_SHOWN
          raise errors.UsageError(
              f'checkpoint step {s} in {self.directory} does not fit the model: '
              + '; '.join(diffs[:_MAX_DIFFS_SHOWN]) + (f'; ... {more} more' if more > 0 else ''))
        reason = _verify_files(step_dir, manifest)
      if reason is not None:
        problems.append(f'step {s}: {reason}')
        logging.warning('checkpoint step %d is corrupt, skipping it: %s', s, reason)
        continue
      return self._restore_verified(step_dir, target) + (s,)
    raise CheckpointError(f'no intact checkpoint in {self.directory}: ' + '; '.join(problems))

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
    problems = []
    for s in self._candidates(step):
      step_dir = self._step_dir(s)
      manifest, reason = _read_manifest(step_dir)
      if manifest is None:
        reason = reason or f'{os.path.join(step_dir, MANIFEST)} is missing'
      elif _EXTRAS_FILE not in manifest['files']:
        reason = f'{os.path.join(step_dir, _EXTRAS_FILE)} is not in the manifest'
      else:
        reason = _verify_files(step_dir, manifest)
      if reason is None:
        # Hash-verified above: plain JSON, read as such (orbax's JsonSave writes exactly this).
        with open(os.path.join(step_dir, _EXTRAS_FILE), encoding='utf-8') as f:
          return json.load(f), s
      problems.append(f'step {s}: {reason}')
      logging.warning('checkpoint step %d is corrupt, skipping it: %s', s, reason)
    raise CheckpointError(f'no intact checkpoint in {self.directory}: ' + '; '.join(problems))

  def _restore_verified(self, step_dir: str, target: Any) -> tuple[Any, dict]:
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ('devices',))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    abstract = jax.tree.map(lambda x: _restore_target(x, replicated), target)
    restored = self._ckptr.restore(step_dir, ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), extras=ocp.args.JsonRestore()))
    return restored.state, restored.extras

  def wait(self) -> None:
    """Saves are synchronous, so there is nothing to wait for; kept for the trainer's API."""

  def close(self) -> None:
    self._ckptr.close()

  def __enter__(self) -> 'Checkpointer':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def restore_from(path: str, target: Any, step: int | None = None) -> tuple[Any, dict, int]:
  """Restores from a workdir, WORKDIR/checkpoints, or one step dir WORKDIR/checkpoints/<step>.

  Raises errors.UsageError if PATH holds no committed checkpoint (B24), never starting fresh.
  """
  path = os.path.abspath(path)
  parent, base = os.path.split(path)
  if base.isdigit() and os.path.basename(parent) == 'checkpoints' and step is None:
    path, step = os.path.dirname(parent), int(base)
  elif base == 'checkpoints' and not os.path.isdir(os.path.join(path, 'checkpoints')):
    path = parent
  with Checkpointer(path) as ckpt:
    return ckpt.restore(target, step=step)
