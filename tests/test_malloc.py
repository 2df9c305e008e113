"""east.malloc: large blocks come from the heap (and stay there) instead of fresh mmaps."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

# A fresh interpreter allocates a 64 MiB array, frees it, and reports glibc's counters:
# bytes in mmapped blocks while the array lived, and heap bytes kept after it was freed.
PROBE = """
import ctypes, sys
import numpy as np
from east.malloc import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
applied = keep_freed_memory() if sys.argv[1] == "on" else None
block = np.ones(64 << 20, np.uint8)
mmapped = libc.mallinfo2().hblkhd
del block
print(applied, mmapped, libc.mallinfo2().arena)
"""


def _glibc_with_mallinfo2() -> bool:
    try:
        return sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2)")
def test_large_blocks_stay_in_the_heap() -> None:
    def probe(mode: str) -> tuple[str, int, int]:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True,
                             text=True, check=True).stdout.split()  # fmt: skip
        return out[0], int(out[1]), int(out[2])

    applied, mmapped, _ = probe("off")
    assert mmapped >= 64 << 20  # glibc's default: a block this large is its own mmap
    applied, mmapped, kept = probe("on")
    assert applied == "True"
    assert mmapped < 64 << 20  # now it came from the heap...
    assert kept >= 64 << 20  # ...and the heap kept it after the free, for the next batch
