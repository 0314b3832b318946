"""A test warehouse that starts empty, as a copy of one freshly migrated warehouse built once per test run.

Creating a chDB warehouse runs every migration (~40 tables and views, ~76 statements): ~0.55 CPU-s in a process that
has chDB loaded already. Opening a copy of a closed, freshly migrated warehouse costs ~0.25 (docs/rounds/testing.md,
suite30): `open_warehouse` still runs everything it runs on any start (the migrations check, retention, the heals);
only the CREATE statements are done once. The template is built in a child process by `open_warehouse` itself, with
this run's migrations, so the copies are what a new warehouse is. chDB's tables are UUID-named directories behind
relative symlinks (an Atomic database), so a copy with its symlinks kept opens at its new path; two copies share
their tables' UUIDs, which is harmless because chDB opens one path per process.

tests/warehouse/test_warehouse_schema.py keeps creating its warehouse with the migrations (it tests them)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_BUILD = ("import sys; from tokenmeter.settings import Settings; from warehouse import open_warehouse; "
          "open_warehouse(Settings(data_dir=sys.argv[1]), writer=True, serve=False).close()")
_template: Path | None = None


def _run_root(tmp_path_factory) -> Path:
    """A directory of this test run that every xdist worker of it shares (a worker's basetemp is
    `<the run's>/popen-gwN`), or the process's own basetemp without xdist (checked by the name, not by the worker's
    variable alone, which a pytest started by a test inherits)."""
    base = Path(tmp_path_factory.getbasetemp())
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return base.parent if worker and base.name == f"popen-{worker}" else base


def template_dir(tmp_path_factory) -> Path:
    """The run's freshly migrated, closed warehouse directory (built by the first process that asks)."""
    global _template
    if _template is None:
        root = _run_root(tmp_path_factory)
        data_dir = root / "warehouse-template"
        ready = root / "warehouse-template.ready"
        with open(root / "warehouse-template.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # other workers wait for the one building it
            if not ready.exists():
                shutil.rmtree(data_dir, ignore_errors=True)  # a build that died half-way
                subprocess.run([sys.executable, "-c", _BUILD, str(data_dir)], cwd=REPO, check=True, timeout=120)
                ready.touch()
        _template = data_dir / "warehouse"
    return _template


def empty_warehouse_in(data_dir: Path | str, tmp_path_factory) -> Path:
    """Put a new, empty warehouse at `data_dir`/warehouse (where `Settings(data_dir=...)` puts it); returns
    `data_dir`. The directory must not hold a warehouse yet."""
    data_dir = Path(data_dir)
    shutil.copytree(template_dir(tmp_path_factory), data_dir.resolve() / "warehouse", symlinks=True)
    return data_dir
