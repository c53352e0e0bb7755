"""User-facing errors: one line on stderr, exit code 2, no traceback."""


class UsageError(Exception):
  """One-line user error: the CLI prints it and exits 2."""


def run_app(main) -> None:
  """absl.app.run, but a UsageError or a bad flag is one line on stderr and exit 2."""
  import sys  # pylint: disable=g-import-not-at-top
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top

  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except (flags.Error, ValueError, KeyError, AttributeError, TypeError) as e:
      msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      print(f'error: {msg}', file=sys.stderr)
      sys.exit(2)

  def wrapped(argv):
    try:
      return main(argv)
    except UsageError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)

  app.run(wrapped, flags_parser=parse)
