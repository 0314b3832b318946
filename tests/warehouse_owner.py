"""A second process that owns a chDB warehouse, as the loader does under `tokenmeter up`: it opens the warehouse as
writer (so it serves the endpoint other processes query and re-price through, warehouse/endpoint.py), inserts the
priced events given to it, prints how many it stored, and closes cleanly when its stdin closes. Shared by the
endpoint, re-price and `reprice` CLI tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]

OWNER = """
import sys, json
from tokenmeter.settings import Settings
from warehouse import open_warehouse
wh = open_warehouse(Settings(data_dir=sys.argv[1], raw_retention_days=3650), writer=True)
print(wh.insert_priced(json.loads(sys.argv[2])), flush=True)
sys.stdin.read()
wh.close()
"""


@contextmanager
def warehouse_owner(data_dir: Path, events: list[dict[str, Any]],
                    env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen, int]]:
    """Yields (the owner process, how many events it stored) once it stored them; stopped afterwards (stdin
    closed, killed after 20 s), unless the test stopped it already."""
    environ = dict(env if env is not None else os.environ)
    environ["PYTHONPATH"] = str(REPO) + os.pathsep + environ.get("PYTHONPATH", "")
    process = subprocess.Popen([sys.executable, "-c", OWNER, str(data_dir), json.dumps(events)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=environ)
    try:
        stored = process.stdout.readline().strip()
        assert stored.isdigit(), f"the owner did not start (printed {stored!r})"
        yield process, int(stored)
    finally:
        if process.poll() is None:
            process.stdin.close()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
