"""Numbers, names and tables as report.md and compare.md print them."""

import math

import numpy as np

# Unbounded values print with significant digits; the rest with 3 decimals.
UNBOUNDED = ('loss', 'mse', 'mae', 'coverage_error')


def fmt(v, key='') -> str:
  """A number as printed in report.md; None / NaN / inf -> 'n/a'."""
  if v is None or isinstance(v, str):
    return 'n/a' if v is None else v
  if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
    return str(int(v))  # Counts and steps; a float 1.0 still prints 1.000.
  v = float(v)
  if not math.isfinite(v):
    return 'n/a'
  return f'{v:.4g}' if key in UNBOUNDED else f'{v:.3f}'


def esc(name) -> str:
  """A class name safe inside a markdown table cell."""
  return str(name).replace('|', r'\|').replace('\n', ' ')


def table(header, rows) -> list[str]:
  """Markdown lines of a table whose first column is left-aligned, the rest right-aligned."""
  return (['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join(['---'] + ['--:'] * (len(header) - 1)) + '|']
          + ['| ' + ' | '.join(r) + ' |' for r in rows] + [''])
