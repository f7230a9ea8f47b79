"""Where a server process's memory is: Python's objects and the C allocator's books.

Resident memory (RSS) alone cannot tell a leak from an allocator that keeps what it was given:
when RSS grows while Python's allocated blocks and the C allocator's bytes in use stay flat, the
growth is freed memory the allocator holds (``free``), not objects anyone still references.
``/metrics`` exports these as ``precise_mrd_python_allocated_blocks`` and
``precise_mrd_malloc_bytes{kind}``; the soak run (``benchmarks/soak_api.py``) records them.

The C allocator's figures come from glibc's ``mallinfo2`` (glibc 2.33 or later; all arenas
summed) and are absent elsewhere (musl, macOS).

>>> python_allocated_blocks() > 0
True
>>> stats = malloc_stats()
>>> stats is None or stats.in_use_bytes > 0
True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MallocStats:
    """The C allocator's books, in bytes."""

    in_use_bytes: int  # handed out by malloc and not yet freed (uordblks + hblkhd)
    free_bytes: int  # freed but kept in the allocator's arenas (fordblks)
    mmap_bytes: int  # large blocks mapped one by one (hblkhd), part of in_use_bytes


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@functools.cache
def _mallinfo2() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function = ctypes.CDLL(name).mallinfo2
    except (OSError, AttributeError):  # NB: not glibc, or glibc older than 2.33
        return None
    function.restype = _MallInfo2
    function.argtypes = []
    return function


def python_allocated_blocks() -> int:
    """Memory blocks Python's allocator has handed out and not freed (objects, mostly)."""
    return sys.getallocatedblocks()


def malloc_stats() -> MallocStats | None:
    """The C allocator's books, or None where glibc's ``mallinfo2`` is not available."""
    function = _mallinfo2()
    if function is None:
        return None
    info = function()
    return MallocStats(
        in_use_bytes=int(info.uordblks + info.hblkhd),
        free_bytes=int(info.fordblks),
        mmap_bytes=int(info.hblkhd),
    )
