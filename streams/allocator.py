"""Keep the pages of freed large blocks in the worker process (glibc's malloc: Python's bytes, orjson, aiokafka).

A batch allocates blocks of 100 KB to a few MB again and again: a priced message (~300 KB, `streams.batch._frame`),
an input message sliced or joined, aiokafka's record batches and requests. glibc serves a block above its mmap
threshold (128 KB at first, raised on the fly up to the largest block freed so far) with a fresh mmap, and gives
the top of the heap back to the kernel once more than twice that is free (trim): so the same sizes kept arriving
as fresh pages, each touched page a minor fault in the kernel. Measured on `python -m app.bench_worker
--in-process` traffic (one ~4 MB chunk, 14,000 events): framing its priced messages took ~2,000 faults and
0.39 us per event, 0.15 us without them; the whole pricing step ~780 faults per chunk, ~40 with this setting.

polars' own allocator (jemalloc) is set in streams/worker.py (`_RJEM_MALLOC_CONF`) for the same reason.
`keep_freed_memory()` sets a fixed mmap threshold of 32 MB (glibc's largest dynamic value) and keeps up to
128 MB free at the top of a heap before trimming: a worker's resident size can stay that much above its live
data after a large batch. An operator's glibc setting (`glibc.malloc.*` in `GLIBC_TUNABLES`, or `MALLOC_*_THRESHOLD_`) wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 128 * 1024 * 1024
OPERATOR_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
# polars' jemalloc keeps freed pages 30 s instead of its 0.5-1 s (polars appends this to its own setting on import)
POLARS_DECAY = "dirty_decay_ms:30000,muzzy_decay_ms:30000"
# pyarrow's mimalloc likewise keeps freed pages 30 s instead of its 10 ms (its segments are transparent huge pages
# here: each purged 2 MB faulted in again was zeroed by the kernel, a third of the loader build's CPU; load26)
ARROW_PURGE_DELAY_MS = "30000"


def keep_freed_memory() -> bool:
    """Set glibc's thresholds in this process (see the module's docstring); False where this is not glibc or an
    operator set the allocator (then nothing changes)."""
    if any(name in os.environ for name in OPERATOR_SETTINGS) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def keep_freed_pages() -> None:
    """The allocators keep freed pages in this process: polars' jemalloc (`_RJEM_MALLOC_CONF`, read when polars is
    imported, so call this first; an operator's value wins), pyarrow's mimalloc (`MIMALLOC_PURGE_DELAY`, read when
    pyarrow loads: load26, docs/rounds/warehouse.md) and glibc's (`keep_freed_memory`). For the loader's process (fast23):
    each 100,000-row window's build gave its pages back and faulted them in again (polars' threads 0.8-1.0 -> 0.5-0.6
    µs per row, the loader path a median 1.09x per CPU second; docs/rounds/warehouse.md, fast23). The
    worker calls it at the top of streams/worker.py (pyarrow's side since inproc34: an Arrow worker's chunks)."""
    os.environ.setdefault("_RJEM_MALLOC_CONF", POLARS_DECAY)
    os.environ.setdefault("MIMALLOC_PURGE_DELAY", ARROW_PURGE_DELAY_MS)
    keep_freed_memory()


__all__ = ["ARROW_PURGE_DELAY_MS", "POLARS_DECAY", "keep_freed_memory", "keep_freed_pages"]
