"""What a data set's content is, in a few hashes: so that a run never resumes over other data.

A fingerprint is JSON, saved with every checkpoint (state/extras.py) and compared when a
workdir is resumed (B28):
  rows     {split: number of examples}
  records  {split: sha256 of the split's prepared files} (or of its arrays, for a data set
           mapped in memory): any edited cell, any other vocabulary or split changes them
  meta     {metadata key: sha256 of its JSON}: the tokenizer, the feature scaling, the class
           list, the categories, the split rule, ...
Where the files lie (`data.dir`, an absolute path in the metadata) is not part of it: moving
the data is not changing it. Hashing the prepared files reads each once per run, at disk
speed (~0.1 s for the packaged data sets).
"""

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

# Metadata that names where the data lies, not what it holds.
_WHERE = ('file', 'source')
_WORDS = {'tokenizer': 'the tokenizer (vocabulary)', 'scaling': 'the feature scaling',
          'classes': 'the class list', 'categories': 'the categories', 'columns': 'the columns',
          'split_rule': 'the split rule'}


def _json_digest(value: Any) -> str:
  return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _meta(meta: Mapping[str, Any]) -> dict[str, str]:
  return {k: _json_digest(v) for k, v in sorted(meta.items()) if k not in _WHERE}


def of_files(files: Mapping[str, list[str]], rows: Mapping[str, int],
             meta: Mapping[str, Any], digests: Mapping[str, str] | None = None) -> dict:
  """The fingerprint of prepared splits: `files` {split: its files}, in order. `digests`: file
  name -> sha256 (hex) already verified (data/records.py, B12), read instead of the file."""
  records = {}
  for split, paths in files.items():
    h = hashlib.sha256()
    for path in paths:
      known = (digests or {}).get(os.path.basename(path))
      if known is not None:
        h.update(bytes.fromhex(known))
        continue
      with open(path, 'rb') as f:
        h.update(hashlib.file_digest(f, 'sha256').digest())
    records[split] = h.hexdigest()
  return {'rows': dict(rows), 'records': records, 'meta': _meta(meta)}


def of_arrays(splits: Mapping[str, Mapping[str, np.ndarray]], meta: Mapping[str, Any]) -> dict:
  """The fingerprint of splits held in memory: {split: {key: [n, ...]}}."""
  records, rows = {}, {}
  for split, arrays in splits.items():
    h = hashlib.sha256()
    for key in sorted(arrays):
      a = np.ascontiguousarray(arrays[key])
      h.update(f'{key}:{a.dtype.str}:{a.shape}'.encode())
      h.update(a.tobytes())
    records[split] = h.hexdigest()
    rows[split] = len(next(iter(arrays.values()))) if arrays else 0
  return {'rows': rows, 'records': records, 'meta': _meta(meta)}


def _order(keys) -> list[str]:
  known = ('train', 'validation', 'test')
  return [k for k in known if k in keys] + sorted(k for k in keys if k not in known)


def differences(then: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
  """What differs between two fingerprints, in words ([] if nothing does)."""
  out = []
  rows_then, rows_now = then.get('rows', {}), now.get('rows', {})
  rows = [f'{s} {rows_now.get(s, 0):,} (checkpoints {rows_then.get(s, 0):,})'
          for s in _order(set(rows_then) | set(rows_now)) if rows_then.get(s) != rows_now.get(s)]
  if rows:
    out.append('examples ' + ', '.join(rows))
  rec_then, rec_now = then.get('records', {}), now.get('records', {})
  changed = [s for s in _order(set(rec_then) | set(rec_now))
             if rec_then.get(s) != rec_now.get(s) and rows_then.get(s) == rows_now.get(s)]
  if changed:
    out.append(f'the {", ".join(changed)} records differ')
  meta_then, meta_now = then.get('meta', {}), now.get('meta', {})
  keys = [k for k in sorted(set(meta_then) | set(meta_now)) if meta_then.get(k) != meta_now.get(k)]
  # Bookkeeping (counts, line numbers) follows the records; name it only if nothing else differs.
  named = [_WORDS[k] for k in keys if k in _WORDS] or (
      [f'the metadata ({", ".join(keys)})'] if keys and not out else [])
  if named:
    out.append(' and '.join(named) + (' differ' if len(named) > 1 else ' differs'))
  return out
