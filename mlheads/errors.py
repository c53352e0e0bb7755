"""User-facing errors: one line on stderr, exit code 2, no traceback."""


class UsageError(Exception):
  """One-line user error: the CLI prints it and exits 2."""
