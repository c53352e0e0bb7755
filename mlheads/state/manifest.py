"""The sha256 manifest that makes a checkpoint step count as committed (B17, B20).

`<step>/manifest.json` holds every other file's size and sha256, the saved tree's
paths / shapes / dtypes and the step's metrics, plus a hash of itself. It is
written last, atomically (temp file, fsync, os.replace), so a step whose
manifest is missing was never committed, and one whose files disagree with it
is corrupt.
"""

import hashlib
import json
import os
from typing import Any

from mlheads.state import writers

MANIFEST = 'manifest.json'
FORMAT = 1


def sha256(path: str) -> str:
  with open(path, 'rb') as f:
    return hashlib.file_digest(f, 'sha256').hexdigest()


def list_files(step_dir: str) -> list[str]:
  """Relative paths of all files under step_dir except our manifest, sorted."""
  out = []
  for root, _, files in os.walk(step_dir):
    for name in files:
      rel = os.path.relpath(os.path.join(root, name), step_dir)
      if rel not in (MANIFEST, MANIFEST + '.tmp'):
        out.append(rel)
  return sorted(out)


def self_hash(manifest: dict[str, Any]) -> str:
  body = {k: v for k, v in manifest.items() if k != 'selfsha256'}
  return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def fsync_dir(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def write(step_dir: str, manifest: dict[str, Any]) -> None:
  """Writes manifest.json atomically: it is the commit marker, so it must never be half there."""
  manifest = dict(manifest, selfsha256=self_hash(manifest))
  writers.atomic_write(os.path.join(step_dir, MANIFEST), json.dumps(manifest, indent=1),
                       fsync=True)
  fsync_dir(step_dir)


def read(step_dir: str) -> tuple[dict[str, Any] | None, str | None]:
  """(manifest, None) if valid; (None, reason) otherwise; reason None means 'not committed'."""
  path = os.path.join(step_dir, MANIFEST)
  try:
    with open(path, 'rb') as f:
      manifest = json.loads(f.read().decode('utf-8'))
  except FileNotFoundError:
    return None, None
  except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors.
    return None, f'{path} is unreadable ({e})'
  if not isinstance(manifest, dict) or manifest.get('selfsha256') != self_hash(manifest):
    return None, f'{path} fails its self-hash'
  if manifest.get('format') != FORMAT:
    return None, f'{path} has format {manifest.get("format")!r}, this code reads {FORMAT}'
  return manifest, None


def verify_files(step_dir: str, manifest: dict[str, Any]) -> str | None:
  """What differs between step_dir and its manifest, naming every bad file; None if nothing."""
  expected = manifest['files']
  actual = set(list_files(step_dir))
  problems = []
  for rel in sorted(expected):
    path = os.path.join(step_dir, rel)
    if rel not in actual:
      problems.append(f'{path} is missing')
    elif (size := os.path.getsize(path)) != expected[rel]['size']:
      problems.append(f'{path} has {size} bytes, manifest says {expected[rel]["size"]}')
    elif sha256(path) != expected[rel]['sha256']:
      problems.append(f'{path} does not match its sha256 (corrupted or swapped)')
  problems += [f'{os.path.join(step_dir, rel)} is not in the manifest'
               for rel in sorted(actual - set(expected))]
  return '; '.join(problems) or None
