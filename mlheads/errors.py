"""User-facing errors: one line on stderr, exit code 2, no traceback."""

import sys


class UsageError(Exception):
  """One-line user error: the CLI prints it and exits 2."""


def run_main(main) -> None:
  """`absl.app.run(main)`, but a UsageError or a bad flag is one line, exit 2.

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

  app.run(wrapped, flags_parser=parse_flags)


def _exit_one_line(message) -> None:
  print('error: ' + ' '.join(str(message).split()), file=sys.stderr)
  sys.exit(2)
