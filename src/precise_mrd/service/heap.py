"""Where a server process's memory is: Python's objects and the C allocator's books.

Resident memory (RSS) alone cannot tell a leak from an allocator that keeps what it was given:
when RSS grows while Python's allocated blocks and the C allocator's bytes in use stay flat, the
growth is freed memory the allocator holds (``free``), not objects anyone still references.
``/metrics`` exports these as ``precise_mrd_python_allocated_blocks`` and
``precise_mrd_malloc_bytes{kind}``; the soak run (``benchmarks/soak_api.py``) records them.

The C allocator's figures come from glibc's ``mallinfo2`` (glibc 2.33 or later; all arenas
summed) and are absent elsewhere (musl, macOS). :func:`limit_malloc_arenas` is what the soak
found keeps that ``free`` from growing.

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
import os
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
def _libc_function(name: str) -> Any:
    """The C library's function ``name``, or None (no C library found, or not glibc, or a glibc
    without it)."""
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    try:
        return getattr(ctypes.CDLL(library), name)
    except (OSError, AttributeError):
        return None


@functools.cache
def _mallinfo2() -> Any:
    function = _libc_function("mallinfo2")  # NB: glibc 2.33 or later
    if function is not None:
        function.restype = _MallInfo2
        function.argtypes = []
    return function


#: mallopt's parameter number for the most arenas glibc makes (malloc.h: M_ARENA_MAX)
_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int) -> bool:
    """Let glibc make at most ``arenas`` malloc arenas in this process (``mallopt(M_ARENA_MAX)``;
    the same as ``MALLOC_ARENA_MAX`` in its environment, which wins when set). True when the
    limit is in force (this one or the environment's); False where there is no glibc or
    ``arenas`` is 0 (glibc's default).

    By default glibc gives threads arenas of their own, up to eight per core. In an API process
    the worker threads free in one arena what they allocated in another, and each arena keeps
    its freed chunks, too small and scattered for ``malloc_trim`` to return: resident memory
    creeps up with nothing alive to show for it (docs/performance.md, the soak). Call it early:
    the limit holds for arenas made after it, before the process has more than eight."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return True  # NB: glibc read it when the process started
    if arenas <= 0:
        return False
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.restype = ctypes.c_int
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_ARENA_MAX, arenas))


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
