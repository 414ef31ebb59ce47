"""Giving memory that a burst of mail left free back to the system.

CPython hands the buffers it frees (message bodies, composed mail: anything over 512 bytes)
back to glibc's malloc, which keeps the pages for the next burst, in one arena per thread that
allocated, and the outbox's sending threads are several. After a backlog of 1,000 messages the
worker and its parse-ahead child held about 20 and 15 MB that nothing used
(benchmarks/README.md). ``malloc_trim`` gives the free pages back; it takes milliseconds (10 ms
for a 100 MB heap), so it is called only when the inbox has been emptied and the worker is
about to wait for mail. Written here because neither the standard library nor a well-kept
package exposes it; on a C library without it this does nothing.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return free heap pages to the system; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
