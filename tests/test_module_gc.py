"""tests/module_gc.py: before each test file the collector walks what earlier files left once, then never again."""

from __future__ import annotations

import gc
import weakref


class _Node:
    def __init__(self):
        self.me = self  # a reference cycle: only the collector can free it


BEFORE_THIS_FILE = _Node()  # made at collection, before this file's boundary
_garbage = _Node()
GARBAGE_BEFORE_THIS_FILE = weakref.ref(_garbage)
del _garbage  # cyclic garbage from before the boundary


def _tracked(obj) -> bool:
    """Whether a collection would walk `obj` (gc.get_objects() lists generations 0-2, not the frozen one)."""
    return any(o is obj for o in gc.get_objects())


def test_what_existed_before_the_file_is_frozen_and_the_files_own_objects_are_not():
    assert gc.get_freeze_count() > 0
    assert not _tracked(BEFORE_THIS_FILE)
    assert _tracked(_Node())


def test_garbage_from_before_the_file_was_collected_not_frozen():
    assert GARBAGE_BEFORE_THIS_FILE() is None


def test_the_test_process_collects_its_young_objects_less_often():
    from module_gc import YOUNG_GC_THRESHOLD

    assert gc.get_threshold()[0] == YOUNG_GC_THRESHOLD > 700
