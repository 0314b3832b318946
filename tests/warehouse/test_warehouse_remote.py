"""Single owner per chDB path: a subprocess owns a warehouse and this process reads it over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest

from tokenmeter.settings import Settings
from warehouse import WarehouseError, WarehouseLocked, open_warehouse
from warehouse.endpoint import ENDPOINT_FILE, check_select_only, read_endpoint_secret, read_live_endpoint
from warehouse_owner import warehouse_owner
from warehouse_template import empty_warehouse_in

pytestmark = pytest.mark.slow(seconds=30)  # rough seconds: longest files first (tests/suite_order.py)


def auth(settings) -> dict:
    return {"authorization": f"Bearer {read_endpoint_secret(settings.data_dir)}"}


@contextlib.contextmanager
def running_owner(data_dir: Path, make_event):
    events = [make_event(f"r{i}", "remote-org", team=f"t{i % 2}", cost="0.000000000333") for i in range(30)]
    events.append(make_event("r0", "remote-org"))  # a duplicate
    with warehouse_owner(data_dir, events) as (process, stored):
        assert stored == 30
        yield Settings(data_dir=data_dir), process


@pytest.fixture
def owner(tmp_path, tmp_path_factory, make_event):
    """An owner for a test that stops it or writes through it."""
    with running_owner(empty_warehouse_in(tmp_path, tmp_path_factory), make_event) as running:
        yield running


@pytest.fixture(scope="module")
def reading_owner(tmp_path_factory, make_event):
    """One owner for the tests that only read through it or are refused (each owner start costs 2-4 s)."""
    with running_owner(empty_warehouse_in(tmp_path_factory.mktemp("remote-owner"), tmp_path_factory), make_event) as running:
        yield running


def test_reader_queries_the_owner_over_http(reading_owner):
    settings, process = reading_owner
    info = orjson.loads((settings.data_dir / ENDPOINT_FILE).read_bytes())
    assert info["pid"] == process.pid and info["url"].startswith("http://127.0.0.1:")

    reader = open_warehouse(settings)
    try:
        assert reader.kind == "remote"
        result = reader.spend(["team"], filters={"org": ["remote-org"], "team": ["t1", "x' OR 1=1 --"]})
        assert result.to_dicts()[0]["team"] == "t1"
        assert result["events"].to_list() == [15]
        assert result["cost_usd"].to_list() == [Decimal("0.000000004995")]
        assert reader.freshness()["events"] == 30
        assert reader.distinct_values("team") == ["t0", "t1"]
        with pytest.raises(WarehouseError, match="read-only"):
            reader.insert_priced([])  # nothing to insert is still a write attempt on a reader
    finally:
        reader.close()

    with pytest.raises(WarehouseLocked, match="owned by another process"):
        open_warehouse(settings, writer=True, wait_seconds=0.5)


def test_writer_waits_for_a_short_lived_owner_to_let_go(owner):
    """`tokenmeter report` run while the loader starts can own chDB for a moment: the loader waits, not dies."""
    settings, process = owner
    assert read_live_endpoint(settings.data_dir)
    import threading

    threading.Timer(1.0, process.stdin.close).start()  # the "report" finishes a second later
    writer = open_warehouse(settings, writer=True, wait_seconds=30)
    try:
        assert writer.kind == "chdb" and process.wait(20) == 0  # it let go, then the writer got the lock
        assert writer.spend(["team"], filters={"org": ["remote-org"]})["events"].sum() == 30
    finally:
        writer.close()


def test_endpoint_accepts_only_single_selects(reading_owner):
    settings, _ = reading_owner
    url = read_live_endpoint(settings.data_dir)
    for sql in ("DROP TABLE priced_events", "SELECT 1; DROP TABLE priced_events", "INSERT INTO priced_events SELECT *",
                "SELECT 1 SETTINGS readonly=0", "SELECT * FROM url('http://127.0.0.1:1/', CSV, 'a String')",
                "SELECT * FROM file('/etc/passwd', 'LineAsString')"):
        response = httpx.post(f"{url}/query", json={"sql": sql, "params": {}}, headers=auth(settings), timeout=30)
        assert response.status_code == 400, sql
        assert response.json()["error"]
    # Still intact, and parameters still work over the wire.
    response = httpx.post(f"{url}/query", json={"sql": "SELECT count() AS n FROM priced_events WHERE team = {t:String}",
                                               "params": {"t": "t0"}}, headers=auth(settings), timeout=30)
    assert response.status_code == 200
    assert httpx.get(f"{url}/health", headers=auth(settings)).json()["pid"] != os.getpid()


def test_endpoint_files_are_private_and_every_request_needs_the_secret(reading_owner):
    """Issue 11 item 9: any local user could read the world-readable URL file and query every team's data."""
    settings, _ = reading_owner
    url_file = settings.data_dir / ENDPOINT_FILE
    secret_file = settings.data_dir / (ENDPOINT_FILE + ".secret")
    assert secret_file.exists(), "no secret next to the URL file"
    assert oct(url_file.stat().st_mode & 0o777) == oct(0o600) and oct(secret_file.stat().st_mode & 0o777) == oct(0o600)
    url = read_live_endpoint(settings.data_dir)
    query = {"sql": "SELECT team, sum(cost_usd) AS c FROM priced_events GROUP BY team", "params": {}}
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic " + "x" * 20}):
        assert httpx.post(f"{url}/query", json=query, headers=headers, timeout=30).status_code == 401
        assert httpx.get(f"{url}/health", headers=headers, timeout=30).status_code == 401
        assert httpx.post(f"{url}/reprice", json={"events": []}, headers=headers, timeout=30).status_code == 401
    assert httpx.post(f"{url}/query", json=query, headers=auth(settings), timeout=30).status_code == 200


def test_reprice_never_takes_a_cost_from_the_caller(owner, make_event):
    """Issue 11 item 9: `POST /reprice` with a priced event rewrote a team's total to the caller's cost."""
    settings, _ = owner
    reader = open_warehouse(settings)
    try:
        before = reader.spend(["team"], filters={"org": ["remote-org"]})["cost_usd"].to_list()
        forged = make_event("r1", "remote-org", team="t1", cost="0.000000000001")
        url = read_live_endpoint(settings.data_dir)
        response = httpx.post(f"{url}/reprice", json={"events": [forged]}, headers=auth(settings), timeout=30)
        assert response.status_code == 400 and "never taken from a caller" in response.json()["error"]
        # Naming a stored event is allowed: the owner prices it with its own catalog (the bundled catalog prices
        # the test model differently from the made-up cost, so it changes, to the catalog's price, not ours).
        named = {"event_id": forged["event_id"], "ts": forged["ts"], "cost_usd": "0"}
        assert httpx.post(f"{url}/reprice", json={"events": [named]}, headers=auth(settings),
                          timeout=30).status_code == 400
        assert reader.spend(["team"], filters={"org": ["remote-org"]})["cost_usd"].to_list() == before
        # Naming stored events is the documented request: the owner prices them with its own catalog.
        from warehouse.reprice import owner_reprice_fn, stored_row_to_event

        row = reader.query("SELECT * FROM priced_events WHERE event_id = 'r1'").to_dicts()[0]
        expected = Decimal(str(owner_reprice_fn(settings)(stored_row_to_event(row)).cost_usd))
        assert expected != Decimal("0.000000000333")
        response = httpx.post(f"{url}/reprice", json={"events": [{"event_id": "r1", "ts": forged["ts"]}]},
                              headers=auth(settings), timeout=30)
        assert response.status_code == 200 and response.json() == {"applied": 1}
        after = reader.query("SELECT cost_usd FROM priced_events FINAL WHERE event_id = 'r1'").to_dicts()
        assert [Decimal(str(r["cost_usd"])) for r in after] == [expected]
    finally:
        reader.close()


def test_owner_removes_endpoint_on_close_and_stale_files_are_ignored(owner):
    settings, process = owner
    endpoint = settings.data_dir / ENDPOINT_FILE
    assert read_live_endpoint(settings.data_dir)
    process.stdin.close()
    process.wait(timeout=20)
    assert not endpoint.exists()
    # A file left by a process that died (pid gone) is ignored.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    endpoint.write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": dead.pid}))
    assert read_live_endpoint(settings.data_dir) is None


def test_an_owner_lets_go_of_the_warehouse_at_once_when_closed(tmp_path):
    """Closing stops the endpoint's serving thread, which looked for the stop request only between its select()
    timeouts (0.5 s by default): every close (a loader's stop, each test's warehouse) took half a second. Checked by
    the thread's own poll interval, not by timing the close (that measured the machine's load: 0.50 s once at load
    ~20, as the old code)."""
    from warehouse.endpoint import STOP_POLL_SECONDS

    warehouse = open_warehouse(Settings(data_dir=tmp_path, raw_retention_days=3650), writer=True)
    assert (tmp_path / ENDPOINT_FILE).exists()  # it serves other processes
    from warehouse import store

    [serving] = [owned.endpoint._thread for owned in store._owned.values()
                 if owned.endpoint is not None and owned.endpoint._file == tmp_path / ENDPOINT_FILE]
    assert serving.is_alive() and serving._kwargs == {"poll_interval": STOP_POLL_SECONDS} and STOP_POLL_SECONDS <= 0.1
    warehouse.close()
    assert not serving.is_alive()  # stopped, not left to the daemon flag
    assert not (tmp_path / ENDPOINT_FILE).exists()


def test_select_only_check():
    assert check_select_only("  select 1 ;\n").strip().startswith("select 1")
    assert check_select_only("WITH x AS (SELECT 1) SELECT * FROM x").endswith("readonly = 1")
    for sql in ("ALTER TABLE t DELETE WHERE 1", "SELECT 1;SELECT 2", "SELECT 1 FORMAT JSON", "OPTIMIZE TABLE t"):
        with pytest.raises(WarehouseError):
            check_select_only(sql)
