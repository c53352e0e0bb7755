"""Reading a user's table: CSV, TSV or JSONL rows, each with the line it came from.

CSV/TSV cells are strings; JSONL cells are JSON values. Training (csv_data.py)
and predict both read files through here, so a bad file gets the same one-line
error (file, line) in both. `read_rows` holds the whole file; `scan` + `chunks`
stream it, a bounded number of rows at a time, for files larger than memory.
"""

import csv
import json
import os
from collections.abc import Iterator

import pandas as pd

from mlheads import errors


def read_rows(path: str) -> tuple[list[str], list[dict], list[int]]:
  """Returns (column names, rows as {column: cell}, each row's line number in the file).

  CSV/TSV cells are strings; JSONL cells are JSON values (a missing key reads
  as None). Blank lines are skipped. Raises UsageError for a missing, empty or
  unreadable file.
  """
  _check_exists(path)
  columns, rows, lines = [], [], []
  for columns, line, row in _records(path):
    rows.append(row)
    lines.append(line)
  if not rows:
    raise errors.UsageError(f'{path}: the file is empty (no data rows)')
  return list(columns), rows, lines


def scan(path: str) -> tuple[list[str], int]:
  """(column names, number of data rows), reading the file once and keeping no row.

  Raises what `read_rows` raises (a missing, empty or malformed file), so that a file
  read afterwards in `chunks` is known to be well-formed.
  """
  _check_exists(path)
  columns, n = [], 0
  for columns, _, _ in _records(path):
    n += 1
  if not n:
    raise errors.UsageError(f'{path}: the file is empty (no data rows)')
  return list(columns), n


def chunks(path: str, size: int) -> Iterator[tuple[list[dict], list[int]]]:
  """The data rows, at most `size` at a time, each chunk with its rows' line numbers."""
  rows, lines = [], []
  for _, line, row in _records(path):
    rows.append(row)
    lines.append(line)
    if len(rows) == size:
      yield rows, lines
      rows, lines = [], []
  if rows:
    yield rows, lines


def _check_exists(path: str) -> None:
  if not os.path.isfile(path):
    raise errors.UsageError(f'{path}: no such file')
  if os.path.getsize(path) == 0:
    raise errors.UsageError(f'{path}: the file is empty')


def _records(path: str) -> Iterator[tuple[list[str] | dict, int, dict]]:
  """Yields (the columns so far, line number, row) for every data row."""
  try:
    if path.lower().endswith(('.jsonl', '.ndjson', '.json')):
      yield from _read_jsonl(path)
    else:
      yield from _read_csv(path, '\t' if path.lower().endswith('.tsv') else ',')
  except UnicodeDecodeError as e:
    raise errors.UsageError(f'{path}: not UTF-8 text ({e.reason} at byte {e.start})') from None


def read_header(path: str) -> list[str]:
  """The column names: a CSV's header line, read without the rows; a JSONL file's keys over
  all its objects (a row may leave out a key). Raises as `read_rows` does for a missing or
  empty file."""
  if path.lower().endswith(('.jsonl', '.ndjson', '.json')):
    return read_rows(path)[0]
  if not os.path.isfile(path):
    raise errors.UsageError(f'{path}: no such file')
  if os.path.getsize(path) == 0:
    raise errors.UsageError(f'{path}: the file is empty')
  try:
    with open(path, newline='', encoding='utf-8-sig') as f:
      for header in csv.reader(f, delimiter='\t' if path.lower().endswith('.tsv') else ','):
        if any(c.strip() for c in header):
          return [c.strip() for c in header]
  except UnicodeDecodeError as e:
    raise errors.UsageError(f'{path}: not UTF-8 text ({e.reason} at byte {e.start})') from None
  except csv.Error as e:
    raise errors.UsageError(f'{path}, line 1: {e}') from None
  raise errors.UsageError(f'{path}: the file is empty')


def _read_csv(path, delimiter):
  with open(path, newline='', encoding='utf-8-sig') as f:
    reader = csv.reader(f, delimiter=delimiter)
    try:
      header = next(reader, None)
      while header is not None and not any(c.strip() for c in header):
        header = next(reader, None)  # leading blank lines
      if header is None:
        raise errors.UsageError(f'{path}: the file is empty')
      columns = [c.strip() for c in header]
      start = reader.line_num + 1
      for cells in reader:
        line, start = start, reader.line_num + 1
        if not any(c.strip() for c in cells):
          continue
        if len(cells) != len(columns):
          raise errors.UsageError(f'{path}, line {line}: {len(cells)} cells, but the header '
                                  f'has {len(columns)} columns')
        yield columns, line, dict(zip(columns, cells))
    except csv.Error as e:
      raise errors.UsageError(f'{path}, line {reader.line_num}: {e}') from None


def _read_jsonl(path):
  columns = {}
  with open(path, encoding='utf-8-sig') as f:
    for line, text in enumerate(f, start=1):
      if not text.strip():
        continue
      try:
        row = json.loads(text)
      except json.JSONDecodeError as e:
        raise errors.UsageError(f'{path}, line {line}: not JSON ({e.msg})') from None
      if not isinstance(row, dict):
        raise errors.UsageError(f'{path}, line {line}: expected a JSON object, got '
                                f'{type(row).__name__}')
      columns.update(dict.fromkeys(row))
      yield columns, line, row


def frame(columns: list[str], rows: list[dict], lines: list[int]) -> pd.DataFrame:
  """`read_rows`'s result as a table of the cells as read, indexed by line number."""
  columns = list(dict.fromkeys(columns))  # a repeated header name: its last cell, as in `rows`.
  return pd.DataFrame([[r.get(c) for c in columns] for r in rows], columns=columns,
                      index=pd.Index(lines, name='line'), dtype=object)
