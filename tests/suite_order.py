"""The order in which `scripts/test` hands test files to its pytest-xdist workers (imported by tests/conftest.py).

Files that start several processes (marked `slow`) go first: a long file that starts last stretches the whole
run. xdist's own default (`--dist loadfile` with `--loadscope-reorder`) re-sorts files by their number of tests,
most first, which sent the longest single-test files (the bench, the soak) to the very end; so it is turned off
here and the order below is kept."""

from __future__ import annotations


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist installed
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    """Slow files first, the longest of them (`pytest.mark.slow(seconds=...)`, a rough figure: about half the
    file's time in a loaded 4-worker run of the whole suite, docs/rounds/testing.md) before the rest. The sort is
    stable, so tests keep their order within a file."""
    def key(item) -> tuple[int, float]:
        slow = item.get_closest_marker("slow")
        return (0, -float(slow.kwargs.get("seconds", 0))) if slow else (1, 0.0)

    items.sort(key=key)
