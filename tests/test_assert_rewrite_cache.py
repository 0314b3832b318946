"""scripts/test writes pytest's cache of rewritten test modules before the workers start (tests/assert_rewrite_cache.py):
the cached code must be exactly what pytest itself would compile under this run's configuration, or a worker would
load test modules whose assertions behave differently."""

from __future__ import annotations

from pathlib import Path

from _pytest.assertion import rewrite

from assert_rewrite_cache import ROOT, rewrites_like_pytest, write_cache

MODULE = '''
def test_sums():
    values = [1, 2, 3]
    assert sum(values) == 6, values
'''


def test_the_cache_holds_what_pytest_compiles_and_is_read_back(tmp_path, request):
    tests = tmp_path / "tests"
    (tests / "deep").mkdir(parents=True)
    for path in (tests / "test_one.py", tests / "deep" / "test_two.py", tests / "conftest.py"):
        path.write_text(MODULE)
    (tests / "support.py").write_text(MODULE)  # not a test module: pytest imports it without rewriting
    assert rewrites_like_pytest()
    assert write_cache([tests]) == 3
    for path in (tests / "test_one.py", tests / "deep" / "test_two.py", tests / "conftest.py"):
        cached = rewrite._read_pyc(path, path.parent / "__pycache__" / (path.stem + rewrite.PYC_TAIL))
        assert cached is not None, path
        _, compiled = rewrite._rewrite_test(path, request.config)  # as a worker of this run compiles it
        assert cached == compiled  # code objects compare by bytecode, constants (nested code too) and names
    assert not list((tests / "__pycache__").glob("support.*"))
    assert write_cache([tests]) == 0  # valid files are left alone


def test_scripts_test_writes_the_cache_before_the_workers_start():
    script = (ROOT / "scripts" / "test").read_text()
    assert script.index("tests/assert_rewrite_cache.py") < script.index("-m pytest")
    assert Path(ROOT / "tests" / "assert_rewrite_cache.py").exists()
