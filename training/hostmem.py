"""Hand freed host memory back to the operating system while a model is built (glibc's malloc).

Building a model under ZeRO-3 allocates and frees one full module at a time: each module's
parameters are gathered to draw or load its weights, then re-partitioned. glibc serves a freed
block above its mmap threshold from `mmap` and returns it to the kernel at `free`, but the
threshold is dynamic: `__libc_free` (malloc/malloc.c) raises it to the size of every mmapped
block it frees, up to `DEFAULT_MMAP_THRESHOLD_MAX` (32 MiB on 64-bit), so after the first few
modules the gathered buffers come from the heap, where freed holes stay resident. Measured with
`bench/init_memory.py` (llama-350m, 2 CPU ranks, bf16): a rank grew by 800 MB while building a
model whose bf16 partition is 310 MB; with a fixed 1 MiB threshold it grew by 333 MB.

`mallopt(M_MMAP_THRESHOLD, n)` fixes the threshold (and turns the dynamic adjustment off, see
mallopt(3)); the same tuning Lighthouse ships (`malloc_utils`) and the `MALLOC_MMAP_THRESHOLD_`
environment variable does. After construction the thresholds go back to `steady_allocation`'s (the
worker's setting from its start), so the loop's buffers come from the heap and are reused step
after step; `malloc_trim` returns what the heap still holds. On a
libc without `mallopt` (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

M_TRIM_THRESHOLD = -1  # malloc.h
M_MMAP_THRESHOLD = -3
CONSTRUCTION_THRESHOLD = 1 << 20
STEADY_THRESHOLD = 32 << 20  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: where the dynamic rule ends up


@cache
def _glibc() -> ctypes.CDLL | None:
    """glibc, when this process runs on it (the functions below are glibc extensions)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        name = ctypes.util.find_library("c")  # runs `ldconfig -p`: only when the usual name is absent
        try:
            libc = ctypes.CDLL(name) if name else None
        except OSError:
            return None
        if libc is None:
            return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def set_mmap_threshold(size: int) -> bool:
    """Serve every allocation of `size` bytes or more from mmap; True when glibc took the setting."""
    libc = _glibc()
    return bool(libc and libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(size)) == 1)


def set_trim_threshold(size: int) -> bool:
    """Keep up to `size` free bytes at the top of the heap before giving them back to the kernel."""
    libc = _glibc()
    return bool(libc and libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(size)) == 1)


def trim() -> None:
    """Return the free memory at the top of glibc's heaps to the kernel."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(ctypes.c_size_t(0))


def steady_allocation() -> bool:
    """Serve a training step's buffers from the heap and keep them there between steps.

    Sets the mmap threshold to the ceiling glibc's dynamic rule climbs to (32 MiB) and the trim
    threshold to twice that, the pair the rule sets (setting one by hand turns the rule off for
    both). With glibc's defaults, a buffer at least as large as the largest one freed so far (the
    logits, say) is mmapped afresh every step, and freed heap space above the trim threshold goes
    back to the kernel, so a step can fault its memory in again every time. `bench/loop_overhead.py`'s
    job (llama-tiny, 8 x 128 tokens per rank), three runs with the defaults: 1,361 and 3,054 minor
    page faults per step in two (766 and 816 ms of CPU per step, against 697 and 762 ms with this
    setting in the runs beside them), 1 in the third; with this setting 1 in every run. The worker
    sets it when it starts (`training.context.make_context`). True when glibc took the setting.
    """
    applied = set_mmap_threshold(STEADY_THRESHOLD)
    if applied:
        set_trim_threshold(2 * STEADY_THRESHOLD)
    return applied


@contextmanager
def memory_returned_to_os() -> Iterator[None]:
    """Inside the block, every freed block of 1 MiB or more leaves the process's resident memory."""
    applied = set_mmap_threshold(CONSTRUCTION_THRESHOLD)
    try:
        yield
    finally:
        if applied:
            steady_allocation()
            trim()
