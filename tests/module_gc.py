"""Python's garbage collector at test-file boundaries (imported by tests/conftest.py).

A full collection (generation 2) walks every object the process tracks. An xdist worker runs dozens of files in
one process, and what they leave behind stays: imported modules, collected test items, and the module-level caches
of heavy files (a month of priced demo history per start time, two weeks of backfill usage, price books). Every
full collection of every later file walked all of it again: in `test_demo_history.py` run alone, 13 full
collections took 2.3 of its 25.8 CPU-s, and a worker's heap only grows from file to file.

So before each test file: collect once (the previous files' cyclic garbage goes, finalizers run as before), then
`gc.freeze()` what is left, which moves it to the permanent generation that collections no longer walk. A file's
own objects are collected as usual; what outlives its file is walked once more, at the next boundary, and then
never again. Live objects stay alive and garbage without cycles is still freed by reference counting; only a
frozen object that later becomes part of a garbage cycle is not reclaimed (memory, not behaviour), and nothing a
file creates is frozen before the file has ended.

Within a file, a test that builds much (a month of events, a detector's state for every scope) started a young
collection every 700 allocations, and every tenth of every tenth of those was a full one while the heap grew:
the young threshold is 10,000 in the test processes (the children a test starts keep Python's defaults). Ten heavy
in-process files in one process: 10.9 CPU-s in the collector before, 5.8 with the freeze, 2.1 with both
(docs/rounds/testing.md, eleventh round)."""

from __future__ import annotations

import gc

import pytest

from tokenmeter.cli_support import YOUNG_GC_THRESHOLD  # allocations between young collections, as every command


@pytest.fixture(scope="module", autouse=True)
def _collect_then_freeze_before_each_file():
    gc.collect()
    gc.freeze()
    # set per file: a file may run code that sets its own (the worker's freeze_startup_heap, in-process)
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
    yield
