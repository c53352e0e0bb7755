"""User-facing errors: one line on stderr, a documented exit code, no traceback.

Exit codes of `python -m mlheads.main` (docs/faults.md): 0 done; 2 usage, data, config or
checkpoint error (UsageError); 3 the training loss or gradient went NaN/Inf (FloatingPointError,
B21); 143 preempted by SIGTERM after saving (workdir.PREEMPTED_EXIT_CODE, B18).
"""

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
      _exit_one_line(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)

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
