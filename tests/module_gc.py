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
file creates is frozen before the file has ended."""

from __future__ import annotations

import gc

import pytest


@pytest.fixture(scope="module", autouse=True)
def _collect_then_freeze_before_each_file():
    gc.collect()
    gc.freeze()
    yield
