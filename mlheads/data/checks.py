"""Input checks run once per split before anything compiles (RELIABILITY.md B01-B11).

Each failure is one line naming the data set and split, the row, the key and
column, and the bad value.
"""

import numpy as np

from mlheads import errors
from mlheads.data import base
from mlheads.data import pipeline


def _first_bad(bad: np.ndarray):
  """(row, column) of the first True in a `[n, ...]` boolean array."""
  idx = np.argwhere(bad)[0]
  return int(idx[0]), (int(idx[1]) if len(idx) > 1 else 0)


def check_split(ds: base.Dataset, split: str, arrays: dict[str, np.ndarray]) -> None:
  """Raises UsageError at the first bad value in one split's arrays."""
  where = f'data set {ds.name}, split {split}'
  n = len(next(iter(arrays.values()))) if arrays else 0
  if n == 0:
    raise errors.UsageError(f'{where}: the split is empty')
  for key, f in {**ds.inputs, **ds.targets}.items():
    if key not in arrays:
      raise errors.UsageError(f'{where}: missing key {key!r}')
    if f.sparse:
      _check_sparse(where, key, f, arrays, n)
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
        raise errors.UsageError(f'{where}, row {r}: key {key!r} position {c}: {what} '
                                f'{a.reshape(n, -1)[r, c]} outside [0, {f.vocab_size})')
      continue
    flat = a.reshape(n, -1).astype(np.float64)
    mask = arrays.get(f'{key}_mask')
    known = np.ones_like(flat, bool) if mask is None else mask.reshape(n, -1) > 0
    if mask is not None and not np.isin(mask, (0.0, 1.0)).all():
      r, c = _first_bad(~np.isin(mask.reshape(n, -1), (0.0, 1.0)))
      raise errors.UsageError(f'{where}, row {r}: {key}_mask column {col(c)} is '
                              f'{float(mask.reshape(n, -1)[r, c])}, not 0 or 1')
    bad = ~np.isfinite(flat) & known
    if bad.any():
      r, c = _first_bad(bad)
      raise errors.UsageError(f'{where}, row {r}: key {key!r} column {col(c)} is '
                              f'{float(flat[r, c])}; values must be finite')
    if f.kind == 'binary':
      bad = ~np.isin(flat, (0.0, 1.0)) & known
      if bad.any():
        r, c = _first_bad(bad)
        raise errors.UsageError(f'{where}, row {r}: label {key!r} column {col(c)} is '
                                f'{float(flat[r, c])}, not 0 or 1')


def _check_sparse(where: str, key: str, f: base.Field, arrays, n: int) -> None:
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
    raise errors.UsageError(f'{where}, row {r}: key {key!r} slot {c}: class index {idx[r, c]} '
                            f'outside [0, {k})')
  slots = np.arange(idx.shape[1])[None, :]
  bad = (idx >= 0) != (slots < count[:, None])
  if bad.any():
    r, _ = _first_bad(bad)
    raise errors.UsageError(f'{where}, row {r}: key {key!r} holds {int((idx[r] >= 0).sum())} '
                            f'class indices before its padding, {key}_count says {count[r]}')
  mask = arrays.get(f'{key}_mask')
  if mask is not None and not np.isin(mask, (0.0, 1.0)).all():
    r = int(np.flatnonzero(~np.isin(mask, (0.0, 1.0)))[0])
    raise errors.UsageError(f'{where}, row {r}: {key}_mask is {float(mask[r])}, not 0 or 1')


def check_batch_size(ds: base.Dataset, split: str, n: int, batch_size: int) -> None:
  if n < batch_size:
    raise errors.UsageError(f'data set {ds.name}, split {split}: {n} examples, fewer than '
                            f'one batch of {batch_size}')


def label_summary(ds: base.Dataset, arrays: dict[str, np.ndarray]) -> dict[str, dict]:
  """Per binary target: positives per class, all-negative rows, classes with no positive (B05)."""
  out = {}
  for key, f in ds.targets.items():
    if f.kind != 'binary':
      continue
    pos, _ = pipeline.positives(ds, arrays, key)
    if f.sparse:
      known = arrays.get(f'{key}_mask')
      known = np.ones(len(arrays[key]), bool) if known is None else known > 0
      negative_rows = int((known & (arrays[f'{key}_count'] == 0)).sum())
    else:
      y, m = f.densify(arrays, key)
      negative_rows = int((np.where(m > 0, y, 0).reshape(len(y), -1).sum(1) == 0).sum())
    absent = np.flatnonzero(pos == 0)
    name = lambda c: f.names[c] if c < len(f.names) else int(c)  # pylint: disable=cell-var-from-loop
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
