"""host_memory.release gives the allocator's free memory back to the OS."""

import sys
import threading

import pytest

from mlheads.state import host_memory


def _rss_mb() -> float:
  with open('/proc/self/status', encoding='ascii') as f:
    return int(f.read().split('VmRSS:')[1].split()[0]) / 1024


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc; glibc only')
def test_freed_memory_of_a_threads_arena_is_returned():
  kept = []

  def fragment():  # 200 MB from a thread's arena, one block in 100 kept: nothing shrinks alone
    blocks = [bytearray(64 * 1024) for _ in range(3200)]
    kept.extend(blocks[::100])

  thread = threading.Thread(target=fragment)
  thread.start()
  thread.join()
  before = _rss_mb()
  assert host_memory.release()
  assert before - _rss_mb() > 100, (before, _rss_mb())
  assert len(kept) == 32
