"""Keep freed buffers in the process instead of handing them back to the kernel (glibc only).

By default glibc serves every allocation above a (dynamic) threshold with a fresh mmap and unmaps it
on free, and trims the heap top; torch's CPU allocator goes through malloc, so the multi-MB activation
buffers of each training step or encoded batch are faulted in page by page, every time: about 13,000
minor faults per β-VAE step at batch 64 and a sixth of the CPU time in the kernel (bench/bench_train.py
compares both settings). onnxruntime has its own arena and is unaffected.
"""

from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
_SAFE_MMAP_THRESHOLD = 32 << 20  # the largest value every 64-bit glibc accepts


def keep_freed_memory(limit_bytes: int = 1 << 30) -> bool:
    """Serve allocations up to ``limit_bytes`` from the heap and keep up to that much freed heap.

    Process-wide and lasting. Returns True when applied; False where the C library is not glibc.
    Older glibc refuses an mmap threshold above 32 MiB, which is then used instead.
    """
    # The process's own symbols: no ctypes.util.find_library, which runs ldconfig (no exec in the sandbox).
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallopt"):
        return False
    limit = int(limit_bytes)
    mmap_ok = libc.mallopt(_M_MMAP_THRESHOLD, limit) or libc.mallopt(_M_MMAP_THRESHOLD, min(limit, _SAFE_MMAP_THRESHOLD))
    return bool(mmap_ok and libc.mallopt(_M_TRIM_THRESHOLD, limit))
