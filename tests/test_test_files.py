"""The test tree itself: pytest imports test files by their base name (rootdir conftest, no __init__.py packages),
so two files of one name in different folders cannot both run: the second is an "import file mismatch" ERROR, and
its tests never run (walk30's tests/warehouse/test_finance_watch.py beside tests/streams/test_finance_watch.py, CI
2026-12-07). Caught here, in the file that adds the second, not only in a whole-suite run."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_no_two_test_files_share_a_name():
    by_name: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        by_name[path.name].append(str(path.relative_to(TESTS)))
    assert not {name: paths for name, paths in by_name.items() if len(paths) > 1}


def test_every_file_that_drives_chromium_is_marked_browser():
    """`-m "not browser"` is how a machine without Chromium runs the rest (docs/testing.md); a file using dash's
    `dash_duo` without the mark (test_shared_browser.py did) was still run there, and failed."""
    unmarked = [str(path.relative_to(TESTS)) for path in TESTS.rglob("test_*.py")
                if "dash_duo" in (text := path.read_text()) and "mark.browser" not in text]
    assert unmarked == []


def test_no_test_imports_a_dashboard_page_module_by_its_package_name():
    """Dash loads the pages as `pages.<name>`; a test importing `dashboards.pages.<name>` registers the page's path a
    second time, and the next app in that xdist worker answers 500 ("duplicate paths"): a failure that depends on
    which files share a worker (walk31's mute-state test, 2026-12-07). Use `sys.modules["pages.<name>"]` after
    `create_app`, or tests/dash_pages.py's `page_modules_alone`."""
    import re

    direct = re.compile(r"^\s*(from dashboards\.pages\.\w+ import|from dashboards\.pages import|import dashboards\.pages\.)", re.M)
    found = [str(path.relative_to(TESTS)) for path in TESTS.rglob("*.py")
             if path.name != "dash_pages.py" and direct.search(path.read_text())]
    assert found == []
