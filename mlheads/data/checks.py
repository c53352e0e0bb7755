"""Input checks (RELIABILITY.md B01-B11), run once per split on the arrays a data set is
prepared from, before anything is written (base.ArrayBuilder), or at load for data sets
mapped in memory (catalog.py).

Each failure is one line naming the data set and split, the row, the key and
column, and the bad value. What the checks counted (`check_splits`) is recorded in the
data set's metadata; a run reads it back (`check_recorded`) instead of the whole splits.

`ds` below is a base.Dataset (or anything with its `name`, `inputs` and `targets`).
"""

from collections.abc import Mapping

import numpy as np

from mlheads import errors


def _first_bad(bad: np.ndarray):
  """(row, column) of the first True in a `[n, ...]` boolean array."""
  idx = np.argwhere(bad)[0]
  return int(idx[0]), (int(idx[1]) if len(idx) > 1 else 0)


def check_split(ds, split: str, arrays: dict[str, np.ndarray], first_row: int = 0) -> None:
  """Raises UsageError at the first bad value in one split's arrays (or a chunk of them
  whose first row is the split's row `first_row`)."""
  where = f'data set {ds.name}, split {split}'
  n = len(next(iter(arrays.values()))) if arrays else 0
  if n == 0:
    raise errors.UsageError(f'{where}: the split is empty')
  for key, f in {**ds.inputs, **ds.targets}.items():
    if key not in arrays:
      raise errors.UsageError(f'{where}: missing key {key!r}')
    if f.sparse:
      _check_sparse(where, key, f, arrays, first_row)
      continue
    a = arrays[key]
    if a.shape[1:] != f.shape:
      raise errors.UsageError(f'{where}: key {key!r} has shape {a.shape[1:]}, expected {f.shape}')
    col = lambda c: f.names[c] if c < len(f.names) else c  # pylint: disable=cell-var-from-loop
    if f.kind in ('tokens', 'hashed', 'categories'):
      bad = (a < 0) | (a >= f.vocab_size)
      if bad.any():
        r, c = _first_bad(bad.reshape(n, -1))
        what = 'token id' if f.kind == 'tokens' else f'category id (column {col(c)})'
        raise errors.UsageError(f'{where}, row {first_row + r}: key {key!r} position {c}: '
                                f'{what} {a.reshape(n, -1)[r, c]} outside [0, {f.vocab_size})')
      continue
    flat = a.reshape(n, -1).astype(np.float64)
    mask = arrays.get(f'{key}_mask')
    known = np.ones_like(flat, bool) if mask is None else mask.reshape(n, -1) > 0
    if mask is not None and not np.isin(mask, (0.0, 1.0)).all():
      r, c = _first_bad(~np.isin(mask.reshape(n, -1), (0.0, 1.0)))
      raise errors.UsageError(f'{where}, row {first_row + r}: {key}_mask column {col(c)} is '
                              f'{float(mask.reshape(n, -1)[r, c])}, not 0 or 1')
    bad = ~np.isfinite(flat) & known
    if bad.any():
      r, c = _first_bad(bad)
      raise errors.UsageError(f'{where}, row {first_row + r}: key {key!r} column {col(c)} is '
                              f'{float(flat[r, c])}; values must be finite')
    if f.kind == 'binary':
      bad = ~np.isin(flat, (0.0, 1.0)) & known
      if bad.any():
        r, c = _first_bad(bad)
        raise errors.UsageError(f'{where}, row {first_row + r}: label {key!r} column '
                                f'{col(c)} is {float(flat[r, c])}, not 0 or 1')


def _check_sparse(where: str, key: str, f, arrays, first_row: int) -> None:
  """A sparse target: indices in [0, K) first, -1 padding after, as many as the count says."""
  for k, (shape, _) in f.stored(key).items():
    if k not in arrays:
      raise errors.UsageError(f'{where}: missing key {k!r}')
    if arrays[k].shape[1:] != shape:
      raise errors.UsageError(f'{where}: key {k!r} has shape {arrays[k].shape[1:]}, '
                              f'expected {shape}')
  idx, count = arrays[key], arrays[f'{key}_count']
  k = f.shape[-1]
  bad = (idx < -1) | (idx >= k)
  if bad.any():
    r, c = _first_bad(bad)
    raise errors.UsageError(f'{where}, row {first_row + r}: key {key!r} slot {c}: class index '
                            f'{idx[r, c]} '
                            f'outside [0, {k})')
  slots = np.arange(idx.shape[1])[None, :]
  bad = (idx >= 0) != (slots < count[:, None])
  if bad.any():
    r, _ = _first_bad(bad)
    raise errors.UsageError(f'{where}, row {first_row + r}: key {key!r} holds '
                            f'{int((idx[r] >= 0).sum())} '
                            f'class indices before its padding, {key}_count says {count[r]}')
  mask = arrays.get(f'{key}_mask')
  if mask is not None and not np.isin(mask, (0.0, 1.0)).all():
    r = int(np.flatnonzero(~np.isin(mask, (0.0, 1.0)))[0])
    raise errors.UsageError(f'{where}, row {first_row + r}: {key}_mask is {float(mask[r])}, '
                            'not 0 or 1')


def check_batch_size(ds, split: str, n: int, batch_size: int) -> None:
  if n < batch_size:
    raise errors.UsageError(f'data set {ds.name}, split {split}: {n} examples, fewer than '
                            f'one batch of {batch_size}')


def positives(ds, arrays: Mapping[str, np.ndarray], key: str) -> tuple[np.ndarray, int]:
  """Target `key`'s known positives per class `[K]` int64 over a split, and the number of
  rows with a known label (without densifying a sparse target)."""
  f = ds.targets[key]
  k = int(np.prod(f.shape))
  if f.sparse:
    idx = np.asarray(arrays[key])
    known = np.ones(len(idx), bool) if f'{key}_mask' not in arrays else (
        np.asarray(arrays[f'{key}_mask']).reshape(len(idx)) > 0)
    hits = idx[known]
    return np.bincount(hits[hits >= 0], minlength=k).astype(np.int64), int(known.sum())
  y, m = f.densify(arrays, key)
  y, m = y.reshape(len(y), -1), m.reshape(len(m), -1) > 0
  return np.where(m, y, 0).sum(0).astype(np.int64), int(m.any(1).sum())


def label_counts(ds, arrays: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, int]]:
  """Per binary target: (positives per class `[K]`, all-negative rows); parts of a split add
  up (`merge_counts`)."""
  out = {}
  for key, f in ds.targets.items():
    if f.kind != 'binary':
      continue
    pos, _ = positives(ds, arrays, key)
    if f.sparse:
      known = arrays.get(f'{key}_mask')
      known = np.ones(len(arrays[key]), bool) if known is None else known > 0
      negative_rows = int((known & (arrays[f'{key}_count'] == 0)).sum())
    else:
      y, m = f.densify(arrays, key)
      negative_rows = int((np.where(m > 0, y, 0).reshape(len(y), -1).sum(1) == 0).sum())
    out[key] = (pos, negative_rows)
  return out


def merge_counts(a: dict | None, b: dict) -> dict:
  """The label counts of two parts of a split (`a` None: `b` alone)."""
  return b if a is None else {k: (a[k][0] + b[k][0], a[k][1] + b[k][1]) for k in a}


def summarize_labels(ds, counts: dict[str, tuple[np.ndarray, int]]) -> dict[str, dict]:
  """Per binary target: positives per class, all-negative rows, classes with no positive (B05),
  from `label_counts`."""
  out = {}
  for key, (pos, negative_rows) in counts.items():
    f = ds.targets[key]
    absent = np.flatnonzero(pos == 0)
    name = lambda c, f=f: f.names[c] if c < len(f.names) else int(c)
    out[key] = {
        # Thousands of classes: the counts' spread, not every count, and the first absent ones.
        'positives': pos.tolist() if len(pos) <= 50 else {
            'classes': len(pos), 'min': int(pos.min()), 'median': float(np.median(pos)),
            'max': int(pos.max())},
        'all_negative_rows': negative_rows,
        'classes_without_positive': ([name(c) for c in absent] if len(absent) <= 20 else
                                     f'{len(absent)} classes, e.g. '
                                     f'{[name(c) for c in absent[:5]]}'),
    }
  return out


def label_summary(ds, arrays: dict[str, np.ndarray]) -> dict[str, dict]:
  """`summarize_labels` of one split's arrays."""
  return summarize_labels(ds, label_counts(ds, arrays))


def check_splits(ds, splits: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
  """Checks every split (raising at the first bad value) and returns what to record in the
  metadata: `{split: {'examples': n, 'labels': label_summary}}`."""
  out = {}
  for split, arrays in splits.items():
    check_split(ds, split, arrays)
    out[split] = {'examples': len(next(iter(arrays.values()))),
                  'labels': label_summary(ds, arrays)}
  return out


def check_recorded(ds, recorded: Mapping, sizes: Mapping[str, int], batch_size: int) -> None:
  """A prepared data set's recorded checks against its splits as read now (`sizes`: split
  -> examples), and the train split against one batch (B11)."""
  for split in sizes:
    want = recorded.get(split, {}).get('examples')
    if want != sizes.get(split):
      raise errors.UsageError(f'data set {ds.name}, split {split}: {sizes.get(split)} examples, '
                              f'but {want} were checked when it was prepared; prepare it again')
  check_batch_size(ds, 'train', sizes['train'], batch_size)
