"""What each process `tokenmeter up` starts imports before it does anything (docs/rounds/testing.md, seventh round): a
role imports the heavy libraries it uses and no others. A stage package imports its public names on first use, so
importing one of its modules does not load the whole stage (polars, pyarrow, Dash, httpx, tiktoken)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("polars", "pyarrow", "numpy", "chdb", "clickhouse_connect", "dash", "flask", "plotly", "aiohttp", "faust",
         "httpx", "tiktoken", "aiokafka")
# floor28: what the CLI root and the settings (every `tokenmeter` child's floor) imported and no command needs before
# its work: pydantic-settings (~0.04 CPU-s, for an env source of a few lines), asyncio with ssl and subprocess (~0.04,
# pydantic-settings' and `run_service`'s; a one-shot `report`, `close` or `status` runs no event loop) and PyYAML
# (~0.01, read only when TOKENMETER_CONFIG names a file)
FLOOR = ("pydantic_settings", "asyncio", "yaml")

# (what runs, the modules it imports before its work starts, heavy libraries it must not import)
ROLES = [
    # the `up` process: supervisor, the login file, the budgets it restores, the demo's inbox URL and finance file
    ("up", ["app.cli", "app.supervisor", "dashboards.users", "streams.budgets", "streams.budgets.service",
            "collectors.demo_inbox", "warehouse.demo_history"],
     {"polars", "pyarrow", "numpy", "chdb", "dash", "flask", "plotly", "aiohttp", "httpx", "tiktoken"}),
    # `tokenmeter status` reads the status file `up` writes: no Kafka client (aiokafka was ~0.05 of ~0.35 CPU-s)
    # ... nor an event loop's modules (floor28: asyncio with ssl and subprocess, app.broker's at module level)
    ("status", ["app.cli", "app.supervisor"], set(HEAVY) | {"asyncio"}),
    ("alerts dispatch", ["app.cli", "streams.alerts.cli", "streams.alerts.dispatcher"],
     {"polars", "pyarrow", "chdb", "dash", "httpx", "tiktoken"}),
    ("anomalies run", ["app.cli", "streams.anomalies.cli", "streams.anomalies.runner"],
     {"polars", "pyarrow", "chdb", "dash", "aiohttp", "httpx", "tiktoken"}),
    ("budget rebuild", ["app.cli", "streams.budgets.cli", "streams.budgets.rebuild"],
     {"polars", "pyarrow", "dash", "aiohttp", "httpx", "tiktoken"}),
    ("finance-watch", ["app.cli", "warehouse.finance_watch"], {"polars", "pyarrow", "chdb", "dash", "httpx"}),
    ("worker", ["app.cli", "streams.worker"], {"pyarrow", "chdb", "dash", "httpx"}),
    ("the stage packages alone", ["streams", "warehouse", "dashboards", "collectors"], set(HEAVY)),
    # `tokenmeter report --help`, and what every command imports before its own modules: the CLI root, the settings,
    # the helpers every stage CLI shares
    ("the CLI root and the settings", ["app.cli", "tokenmeter.settings", "tokenmeter.cli_support",
                                       "tokenmeter.heartbeat"], set(HEAVY) | set(FLOOR)),
]


# One child Python imports the CLI root once and forks a process per role, which imports that role's modules and
# reports the heavy libraries in sys.modules and the scrypt hashes made (a fresh interpreter per role cost ~0.5 CPU-s more each).
_PROBE = """
import json, os, sys
import app.cli
for name, modules in json.loads(sys.argv[1]):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        import hashlib
        hashes, scrypt = [], hashlib.scrypt
        hashlib.scrypt = lambda *a, **k: hashes.append(1) or scrypt(*a, **k)
        try:
            for module in modules:
                __import__(module)
            found = {"heavy": [m for m in json.loads(sys.argv[2]) if m in sys.modules], "hashes": len(hashes)}
        except BaseException as exc:
            found = {"error": repr(exc)}
        os.write(w, json.dumps(found).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    print(json.dumps([name, json.loads(data)]))
"""


@pytest.fixture(scope="module")
def probed() -> dict[str, dict]:
    roles = [[role, modules] for role, modules, _ in ROLES]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(roles), json.dumps(HEAVY + FLOOR)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    found = dict(json.loads(line) for line in out.stdout.splitlines() if line.startswith("["))
    errors = {role: f["error"] for role, f in found.items() if "error" in f}
    assert not errors, errors
    return found


@pytest.mark.parametrize("role, modules, unused", ROLES, ids=[r[0] for r in ROLES])
def test_a_role_imports_no_heavy_library_it_does_not_use(probed, role, modules, unused):
    needless = set(probed[role]["heavy"]) & unused
    assert not needless, f"{role} ({', '.join(modules)}) imports {sorted(needless)}, which it does not use"


def test_no_role_hashes_a_password_at_import(probed):
    """dashboards.users made a scrypt hash at import (~0.1 CPU-s) for every process reading the login file."""
    hashing = {role: found["hashes"] for role, found in probed.items() if found["hashes"]}
    assert not hashing, hashing


def test_the_lazy_package_names_are_the_modules_names():
    """`from streams import process_batch` and friends still give the defining module's objects."""
    code = """
import streams, warehouse, dashboards
from streams import BatchResult, RawRecord, price_event, process_batch
from warehouse import DIMENSIONS, RepriceReport, Warehouse, WarehouseError, WarehouseLocked, open_warehouse, render_report
from dashboards import create_app, run_dashboard
import streams.batch, streams.enrich, warehouse.backends, warehouse.queries, warehouse.report, warehouse.reprice
import warehouse.store, dashboards.app
assert process_batch is streams.batch.process_batch and RawRecord is streams.batch.RawRecord
assert BatchResult is streams.batch.BatchResult and price_event is streams.enrich.price_event
assert WarehouseError is warehouse.backends.WarehouseError and WarehouseLocked is warehouse.backends.WarehouseLocked
assert DIMENSIONS is warehouse.queries.DIMENSIONS and render_report is warehouse.report.render_report
assert RepriceReport is warehouse.reprice.RepriceReport and Warehouse is warehouse.store.Warehouse
assert open_warehouse is warehouse.store.open_warehouse and create_app is dashboards.app.create_app
assert run_dashboard is dashboards.app.run_dashboard
for package in (streams, warehouse, dashboards):
    assert set(package.__all__) <= set(dir(package)), package
    try:
        package.no_such_name
    except AttributeError:
        pass
    else:
        raise AssertionError(package)
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
