"""Handing freed host memory back to the OS, so that a run's resident memory follows what it holds.

glibc's malloc keeps what is freed for reuse: a thread's arena is shrunk only by `malloc_trim`,
and a freed block below a live one is never returned by itself. XLA's CPU buffers and the
decoded records come from those arenas, so the temporaries of each phase (the init program's
random bits, an evaluation's sorted keys, a checkpoint's serialized arrays) would stay resident
after it, and the next phase would peak on top of them. Measured on 2,000,000 rows with from_csv's
45M-parameter bag model: -0.19 GB kept after the state's init, -0.26 GB after an evaluation
(notes/perf.md, "The default model's memory").
"""

import ctypes

try:
  _LIBC = ctypes.CDLL('libc.so.6')
  _TRIM = _LIBC.malloc_trim
except (OSError, AttributeError):  # not glibc (macOS, musl): their allocators return on their own
  _TRIM = None


def release() -> bool:
  """Returns the free memory the allocator holds to the OS; False where that is not possible.

  Costs a pass over the allocator's free lists (well under a millisecond to a few ms), so it
  is called between phases (after set-up, an evaluation, a checkpoint save), not per step.
  """
  if _TRIM is None:
    return False
  _TRIM(0)
  return True
