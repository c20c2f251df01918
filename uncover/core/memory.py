"""Keep freed activation memory inside the process (glibc only).

A cache of every activation holds hundreds of MiB per forward. With glibc's defaults, large tensors are
mmapped and freeing them hands the pages back to the kernel, so the next forward faults them back in
(on a 2-core VM, about 4 us per 4 KiB page: run_with_cache of every name went from 1.02x to 1.2-1.5x a
plain forward). Once per process, uncover raises glibc's mmap threshold to 256 MiB and its trim threshold
to 1 GiB, so freed memory is reused; the process may keep up to about 1 GiB of freed memory.
Set ``UNCOVER_MALLOC_TUNING=0`` to keep glibc's defaults; ``keep_no_freed_memory()`` restores them for the
rest of a process (the report does: its steps are unlike one another).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
MMAP_THRESHOLD = 256 * 2**20
TRIM_THRESHOLD = 2**30
DEFAULT_THRESHOLD = 128 * 2**10  # glibc's initial mmap and trim thresholds
_tuned: bool | None = None


def tune_allocator() -> bool:
    """Apply the thresholds above once; True when glibc accepted them (False elsewhere or when disabled)."""
    global _tuned
    if _tuned is None:
        _tuned = False
        if sys.platform.startswith("linux") and os.environ.get("UNCOVER_MALLOC_TUNING", "1") != "0":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):  # not glibc (musl has no mallopt)
                return False
            _tuned = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _tuned


def keep_no_freed_memory() -> bool:
    """glibc's default thresholds (128 KiB) again, for the rest of the process: freed tensors go back to the
    system at once. For long runs of unlike steps (the report), where the ~1 GiB the tuning keeps is never
    the size the next step needs: gemma3-270m's pruning section peaked at 5.26 GB tuned, 4.02 GB untuned,
    in the same time. Later models do not re-apply the tuning. True when glibc accepted the thresholds."""
    global _tuned
    _tuned = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, DEFAULT_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, DEFAULT_THRESHOLD))


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system (glibc's malloc_trim; elsewhere only the
    collection). The tuning above keeps freed memory for reuse within a step; between the independent steps
    of a long run (report sections and their parts) it is ~1 GB of resident memory nothing uses."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass
