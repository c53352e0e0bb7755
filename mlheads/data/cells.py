"""Raw table cells -> checked values: each data module's `encode(table, meta, source)` reads
its raw rows with these (its builder and predict both call it).

`table.index` names the rows in messages: predict puts each row's line number in the input
file there. Cells may be typed (a packaged table) or strings and JSON values (a user's CSV /
JSONL file); a cell that is not what its column needs is one UsageError naming the source, the
line, the column and the value.
"""

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mlheads import errors


def require_columns(table: pd.DataFrame, columns: Sequence[str], source: str) -> None:
  """UsageError naming the first of `columns` that `table` lacks."""
  for col in columns:
    if col not in table.columns:
      raise errors.UsageError(f'{source}, line 1: no column {col!r}; the columns are '
                              f'{list(table.columns)}')


def cell_where(source: str, line, col: str) -> str:
  return f'{source}, line {line}, column {col!r}'


def blank(cell) -> bool:
  """An empty cell: None, NaN (pandas' missing) or a string of only spaces."""
  if cell is None or (isinstance(cell, float) and math.isnan(cell)):
    return True
  return isinstance(cell, str) and not cell.strip()


def number(cell, where: str, what: str = 'features') -> float:
  """A finite number from a cell (number, bool or numeric string), else UsageError at `where`."""
  if isinstance(cell, (bool, np.bool_)):
    return float(cell)
  if isinstance(cell, (int, float, np.integer, np.floating)) and not blank(cell):
    v = float(cell)
  elif isinstance(cell, str) and cell.strip():
    try:
      v = float(cell.strip())
    except ValueError:
      raise errors.UsageError(f'{where} is {cell!r}, not a number') from None
  else:
    raise errors.UsageError(f'{where} is {"empty" if blank(cell) else repr(cell)}; '
                            f'{what} must be numbers')
  if not math.isfinite(v):
    raise errors.UsageError(f'{where} is {cell!r}; {what} must be finite')
  return v


def numbers(table: pd.DataFrame, col: str, source: str, *, blank_ok: bool = False,
            low: float | None = None, high: float | None = None,
            what: str = 'features') -> np.ndarray:
  """Column `col` as finite float64 `[n]`; blank cells are NaN where `blank_ok`.

  Any other cell that is not a finite number in [low, high] is a UsageError
  naming the source, the row's line and the column (and `what` must be numbers).
  """
  values = table[col]
  if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
    out = values.to_numpy(np.float64)  # a typed table: fast path, same numbers.
    bad = ~np.isfinite(out)
    if blank_ok:
      bad &= ~np.isnan(out)
    if bad.any():
      i = int(np.flatnonzero(bad)[0])
      number(values.iloc[i], cell_where(source, table.index[i], col), what)  # raises
  else:
    out = np.array([np.nan if blank_ok and blank(c) else
                    number(c, cell_where(source, line, col), what)
                    for line, c in zip(table.index, values)], np.float64).reshape(len(table))
  for bound, side, bad in ((low, 'below', lambda: out < low), (high, 'above', lambda: out > high)):
    if bound is not None and (b := bad()).any():
      i = int(np.flatnonzero(b)[0])
      raise errors.UsageError(f'{cell_where(source, table.index[i], col)} is '
                              f'{values.iloc[i]!r}, {side} {bound:g}')
  return out


def texts(table: pd.DataFrame, col: str) -> list[str]:
  """Column `col` as strings; a blank cell is the empty text."""
  return ['' if blank(c) else str(c) for c in table[col]]


def joined_texts(table: pd.DataFrame, cols: Sequence[str]) -> list[str]:
  """Columns `cols` as one string per row, joined by a space (no columns: empty strings)."""
  parts = [texts(table, c) for c in cols]
  return [' '.join(cells) for cells in zip(*parts)] if parts else [''] * len(table)


def timestamps(table: pd.DataFrame, col: str, source: str) -> pd.Series:
  """Column `col` of ISO 8601 times as UTC timestamps (no zone: read as UTC)."""
  cells = pd.Series(['' if blank(c) else str(c).strip() for c in table[col]], index=table.index)
  t = pd.to_datetime(cells, utc=True, format='ISO8601', errors='coerce')
  if t.isna().any():
    i = int(np.flatnonzero(t.isna().to_numpy())[0])
    cell = table[col].iloc[i]
    raise errors.UsageError(f'{cell_where(source, table.index[i], col)} is '
                            f'{"empty" if blank(cell) else repr(cell)}; expected an ISO 8601 '
                            'time such as 2016-11-08T15:04:05Z')
  return t
