"""`scripts/test` runs files on pytest-xdist workers (`--dist loadfile`); files marked `slow` must be handed out
first, or a long single-test file (the bench, the soak) starts last and stretches the whole run. xdist by default
re-sorts files by their number of tests (most first), which put exactly those files at the very end.
(tests/suite_order.py holds the hooks tests/conftest.py uses.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

USES_OUR_ORDER = "from suite_order import pytest_collection_modifyitems, pytest_configure  # noqa: F401\n"


def _file_logging_its_name(name: str, tests: int, slow: bool, seconds: float | None = None) -> str:
    mark = ("import pytest\npytestmark = pytest.mark.slow" + (f"(seconds={seconds})" if seconds else "") + "\n"
            if slow else "")
    body = "".join(f"def test_{i}():\n    _log()\n\n" for i in range(tests))
    return (f"import os\n{mark}\ndef _log():\n"
            f"    with open(os.environ['ORDER_LOG'], 'a') as f:\n        f.write({name!r} + '\\n')\n\n{body}")


def test_slow_files_are_handed_to_xdist_workers_first(tmp_path):
    (tmp_path / "conftest.py").write_text(USES_OUR_ORDER)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: starts several processes\n")
    (tmp_path / "test_many_quick.py").write_text(_file_logging_its_name("many_quick", 6, slow=False))
    (tmp_path / "test_few_quick.py").write_text(_file_logging_its_name("few_quick", 3, slow=False))
    (tmp_path / "test_one_slow.py").write_text(_file_logging_its_name("one_slow", 1, slow=True))
    (tmp_path / "test_one_slowest.py").write_text(_file_logging_its_name("one_slowest", 1, slow=True, seconds=90))
    log = tmp_path / "order.log"
    # Only xdist as a plugin (dash's, loaded by default, costs seconds of imports in both processes).
    env = dict(os.environ, ORDER_LOG=str(log), PYTHONPATH=str(ROOT / "tests"), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "xdist.plugin", "-n", "1", "--dist", "loadfile",
                          "-p", "no:cacheprovider", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    order = list(dict.fromkeys(log.read_text().split()))
    assert order[:2] == ["one_slowest", "one_slow"], order
