"""User-facing errors: one line on stderr, a documented exit code, no traceback.

Exit codes of `python -m mlheads.main` (docs/faults.md): 0 done; 2 usage, data, config or
checkpoint error (UsageError); 3 the training loss or gradient went NaN/Inf (FloatingPointError,
B21); 143 preempted by SIGTERM after saving (workdir.PREEMPTED_EXIT_CODE, B18).

Also the two helpers every settings check shares: `Range`, a setting's allowed numbers (B26),
and `flag_error`, which says in words what ml_collections' config flags reject (B27).
"""

import dataclasses
import difflib
import importlib.util
import math
import os
import re
import sys

USAGE_EXIT_CODE = 2
# Distinct from 2 so that a scheduler or sweep can tell "diverged, change the learning rate"
# from "the command is wrong"; rerunning the same command would diverge again.
NONFINITE_EXIT_CODE = 3


class UsageError(Exception):
  """One-line user error: the CLI prints it and exits 2."""


def run_main(main) -> None:
  """`absl.app.run(main)`, but a UsageError or a bad flag is one line, exit 2.

  A FloatingPointError (non-finite loss or gradient, B21; or a checkpoint refused for holding
  NaN/Inf) is one line too, exit NONFINITE_EXIT_CODE: its message already names the steps and
  the output, and a traceback into the train loop would only hide that line.

  absl itself prints flag errors on two lines and exits 1, and ml_collections'
  config flags raise plain exceptions for a misspelt key or a wrong type; data
  and usage errors in mlheads must read as one line naming the culprit.

  Args:
    main: the usual absl main, `main(argv)`.
  """
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top

  def parse_flags(argv):
    try:
      return flags.FLAGS(argv)
    except (flags.Error, ValueError, KeyError, AttributeError, TypeError) as e:
      _exit_one_line(flag_error(e, argv))

  def wrapped(argv):
    try:
      return main(argv)
    except UsageError as e:
      _exit_one_line(str(e))
    except FloatingPointError as e:
      _exit_one_line(str(e), NONFINITE_EXIT_CODE)

  app.run(wrapped, flags_parser=parse_flags)


def _exit_one_line(message, code: int = USAGE_EXIT_CODE) -> None:
  print('error: ' + ' '.join(str(message).split()), file=sys.stderr)
  sys.exit(code)


def os_reason(e: Exception) -> str:
  """'No space left on device' rather than a page of tensorstore spec; else the first line."""
  code = getattr(e, 'errno', None)
  if code is None and (m := re.search(r"os_error_code='(\d+)'", str(e))):
    code = int(m.group(1))  # tensorstore reports OS errors as ValueError with this tag.
  if code:
    return f'{os.strerror(code)} ({type(e).__name__})'
  first = (str(e).strip().splitlines() or [''])[0]
  return f'{type(e).__name__}: {first[:300]}'


# ----------------------------------------------------------------------------- ranges (B26)


def _number(v: float) -> str:
  if isinstance(v, int) or float(v).is_integer() and abs(v) >= 1e4:
    return f'{int(v):,}'
  return f'{v:g}'


@dataclasses.dataclass(frozen=True)
class Range:
  """The numbers a setting may hold: `low <= v <= high` (`low < v` if `low_open`), an integer
  if `integer`; `each`: the setting is a tuple of such numbers (layer widths).

  `check(flag, value)` raises UsageError naming the flag, the value and the range, so that a
  value valid as a type but not as a value (`lstm_units=0`) stops before anything runs.
  """
  low: float | None = None
  high: float | None = None
  integer: bool = False
  low_open: bool = False
  each: bool = False

  def describe(self) -> str:
    kind = 'an integer' if self.integer else 'a number'
    lo = None if self.low is None else _number(self.low)
    hi = None if self.high is None else _number(self.high)
    if lo is not None and hi is not None:
      text = (f'{kind} in ({lo}, {hi}]' if self.low_open else f'{kind} from {lo} to {hi}')
    elif lo is not None:
      text = f'{kind} {">" if self.low_open else ">="} {lo}'
    elif hi is not None:
      text = f'{kind} <= {hi}'
    else:
      text = f'a finite {kind[2:] if kind.startswith("a ") else kind}'
    return ('a tuple of ' + text.replace('an integer', 'integers').replace('a number', 'numbers')
            if self.each else text)

  def ok(self, v) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
      return False
    if self.integer and not (isinstance(v, int) or float(v).is_integer()):
      return False
    if not math.isfinite(v):
      return False
    if self.low is not None and (v <= self.low if self.low_open else v < self.low):
      return False
    return self.high is None or v <= self.high

  def check(self, flag: str, value) -> None:
    values = tuple(value) if self.each and isinstance(value, (tuple, list)) else (
        None if self.each else (value,))
    if values is None or not all(self.ok(v) for v in values):
      raise UsageError(f'{flag} must be {self.describe()}, got {value!r}')


# ----------------------------------------------------------------------------- flags in words (B27)

_KEY = re.compile(r"""^['"]*(?P<key>[^'"\n]+)['"]*(?:\s+Did you mean ['"](?P<hint>[^'"]+)['"])?""")


def _load_config_file(argv):
  """The ConfigDict of `--config=FILE` in argv (for listing keys in a message), else None."""
  path = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
  if not path or not os.path.isfile(path):
    return None
  try:
    spec = importlib.util.spec_from_file_location('_mlheads_config_for_message', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()
  except Exception:  # pylint: disable=broad-except; only a better message was at stake.
    return None


def flag_error(e: Exception, argv, config=None) -> str:
  """One line in words for an exception that parsing `--config.KEY=VALUE` flags raised.

  ml_collections says a misspelt key as `'\\'seperator\\'\\nDid you mean "separator"...'` and
  an unknown output as `"'genres'"`; this says `--config.data.seperator=x: unknown key
  'seperator'; did you mean 'separator'?` and `--config.heads.genres.weight=1: no output
  'genres'; the outputs are 'aux', 'main'`. `config` (else the `--config=FILE` in argv, loaded
  again) lists the keys that do exist.
  """
  inner = e.args[0] if isinstance(e, (KeyError, AttributeError)) and e.args else e
  if isinstance(inner, KeyError) and inner.args:
    inner = inner.args[0]
  text = str(inner).strip()
  if isinstance(e, (KeyError, AttributeError)) and (m := _KEY.match(text)):
    return _unknown_key(m.group('key'), m.group('hint'), argv, config)
  first = text.splitlines()[0] if text else type(e).__name__
  m = re.match(r'flag (--config\.[^=\s]+=\S*): (.*)', first)
  if m:
    why = m.group(2)
    if why.startswith('could not convert string to float'):
      why = 'not a number'
    elif why.startswith('invalid literal for int()'):
      why = 'not an integer'
    elif why.startswith('Failed to parse') and 'is not a dict' in why:
      why = 'that key holds a group of settings; set one of them, --config.KEY.NAME=VALUE'
    return f'{m.group(1)}: {why}'
  if isinstance(e, TypeError) and 'tuple indices' in text:
    arg = next((a for a in argv if a.startswith('--config.')), '--config...')
    return f'{arg}: that key holds a tuple, not settings; give the whole tuple, e.g. (8, 8)'
  return first


def _unknown_key(key: str, hint: str | None, argv, config) -> str:
  args = [a for a in argv if a.startswith('--config.')]
  arg = next((a for a in args if key in a.split('=', 1)[0].split('.')[1:]), None)
  path = arg.split('=', 1)[0].split('.')[1:] if arg else [key]
  parent = path[:path.index(key)] if key in path else []
  where = f'{arg}: ' if arg else ''
  if config is None:
    config = _load_config_file(argv)
  siblings = None
  if config is not None:
    node = config
    try:
      for part in parent:
        node = node[part]
      siblings = sorted(node.keys())
    except (KeyError, AttributeError, TypeError):
      siblings = None
  if parent == ['heads']:
    known = f"; the outputs are {', '.join(repr(s) for s in siblings)}" if siblings else ''
    return f'{where}no output {key!r}{known}'
  if not hint and siblings:
    close = difflib.get_close_matches(key, siblings, n=1)
    hint = close[0] if close else None
  scope = f" in config.{'.'.join(parent)}" if parent else ''
  if hint:
    return f'{where}unknown key {key!r}{scope}; did you mean {hint!r}?'
  known = f"; its keys are {', '.join(repr(s) for s in siblings)}" if siblings else ''
  return f'{where}unknown key {key!r}{scope}{known}'
