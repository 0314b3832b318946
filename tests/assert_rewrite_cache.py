"""Write pytest's cache of rewritten test modules once, before `scripts/test` starts its xdist workers.

pytest compiles every test module with its assertions rewritten and caches the result next to it
(`__pycache__/<name>.cpython-311-pytest-<version>.pyc`, checked by a hash of the source, not by its mtime). In a fresh
clone no such file exists, and the six workers start together: each collects the whole suite, so each rewrote and
compiled all ~210 test modules itself (1.5-2 CPU-s a worker, docs/rounds/testing.md "suite3"). This does it once, with
pytest's own rewriter, without importing the modules; a worker then finds a valid file and only loads it.

Best effort: a file it cannot write, or a pytest whose internals moved, leaves the workers to rewrite as before."""

from __future__ import annotations

import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_FILES = ("test_*.py", "*_test.py", "conftest.py")  # pytest's default python_files, and every conftest


def rewrites_like_pytest() -> bool:
    """The rewriter below runs without pytest's config, i.e. with the assertion pass hook off: right only while
    pyproject.toml does not turn it on (or change which files are test files)."""
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text()).get("tool", {}).get("pytest", {}).get("ini_options", {})
    return not ini.get("enable_assertion_pass_hook") and "python_files" not in ini


def write_cache(paths: list[Path]) -> int:
    """Rewrite and cache every test module under `paths` whose cache is missing or stale; returns files written."""
    from _pytest.assertion import rewrite

    written = 0
    for top in paths:
        for fn in sorted(top.resolve().rglob("*.py")):
            if not any(fnmatch(fn.name, pattern) for pattern in TEST_FILES):
                continue
            cache_dir = rewrite.get_cache_dir(fn)
            pyc = cache_dir / (fn.name[:-3] + rewrite.PYC_TAIL)
            if rewrite._read_pyc(fn, pyc, lambda message: None) is not None:  # noqa: SLF001 - valid already
                continue
            source_hash, code = rewrite._rewrite_test(fn, None)  # noqa: SLF001 - pytest's own rewrite, no config
            if rewrite.try_makedirs(cache_dir) and rewrite._write_pyc(_Quiet(), code, source_hash, pyc):  # noqa: SLF001
                written += 1
    return written


class _Quiet:
    """The little of pytest's AssertionState that `_write_pyc` uses: a trace that says nothing."""

    @staticmethod
    def trace(message: str) -> None:
        pass


def main(argv: list[str]) -> int:
    if sys.dont_write_bytecode or not rewrites_like_pytest():
        return 0
    try:
        write_cache([Path(arg) for arg in argv] or [ROOT / "tests"])
    except (ImportError, AttributeError, TypeError, OSError, SyntaxError) as exc:  # pytest moved: workers rewrite
        print(f"assert_rewrite_cache: skipped ({exc})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
