"""Make glibc's ``malloc`` keep freed memory for reuse in processes that run a model batch after
batch.

Inference allocates and frees the same large buffers (audio, activations) for every batch. By
default glibc serves each block of ≥ 128 KiB (a threshold it raises by itself, up to 32 MiB,
as blocks are freed) with a fresh ``mmap`` and unmaps it on ``free``, and it returns the free
top of the heap to the system above 128 KiB. Every batch then pays page faults to get the same
memory back: the naive per-clip loop with the eager FCN tagger on 2 cores took 14.7 s for 414
clips with glibc's defaults and 9.7 s with the settings below (``benchmarks/RESULTS.md``).
Turning ``mmap`` allocation off and trimming only above 1 GiB keeps the memory in the process;
the peak stays what the batches need, it is just not given back in between.

This changes a process-wide setting, so east applies it only in processes it owns: extraction
workers and the ``east extract`` command.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1  # from glibc's <malloc.h>
_M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Apply the settings above; ``False`` where the C library is not glibc (nothing changed)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
