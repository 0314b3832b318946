"""A second writer on a ClickHouse server (left23): the loader heals pending hours under a lock of its own process
only, so a second writer starting while the loader inserts (`tokenmeter reprice`, `dedup reapply`, a second
loader) healed the loader's marked hours under it: the rebuild deleted the hour's rollup rows, the loader's raw
INSERT landed (its materialized views adding its rows to the rollups) and the rebuild's INSERT ... SELECT added
them again from raw. Now a writer holds a lease the server keeps (warehouse/writer_lease.py) and a second one is
refused with the holder named.

No server runs here: the module's chDB session stands in for it, one `ServerSession` per process (its own insert
lock, as two processes have; `close` leaves the shared session open), through `open_warehouse`'s own server path
(its `ClickHouseBackend` replaced)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable

import pytest

from tokenmeter.settings import Settings
from warehouse import WarehouseError, open_warehouse
from warehouse import store

from crash_support import raw_and_rollup_totals


class ServerSession:
    """One process's connection to the stand-in server; `before_command(sql)` runs before each statement."""

    kind = "clickhouse"
    writable = True

    def __init__(self, backend: Any, before_command: Callable[[str], None] | None = None):
        self._backend = backend
        self.before_command = before_command

    def query_arrow(self, sql: str, params: dict[str, Any] | None = None):
        return self._backend.query_arrow(sql, params)

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        if self.before_command is not None:
            self.before_command(sql)
        self._backend.command(sql, params)

    def insert_arrow(self, table_name: str, table: Any, settings: dict[str, int] | None = None) -> None:
        self._backend.insert_arrow(table_name, table, settings=settings)

    def close(self) -> None:
        pass  # the stand-in server outlives its clients


@pytest.fixture
def server(wh, monkeypatch, tmp_path):
    """Settings of the stand-in server and the sessions opened on it (a hook may be set for the next one)."""
    sessions: list[ServerSession] = []
    next_hook: dict[str, Any] = {}

    def connect(url: str) -> ServerSession:
        session = ServerSession(wh.backend, next_hook.pop("before_command", None))
        sessions.append(session)
        return session

    monkeypatch.setattr(store, "ClickHouseBackend", connect)
    monkeypatch.setattr("warehouse.writer_lease.SETTLE_SECONDS", 0.05, raising=False)
    settings = Settings(data_dir=tmp_path, clickhouse_url="http://clickhouse.invalid:8123", raw_retention_days=3650)
    return settings, sessions, next_hook


def test_a_second_writer_starting_during_the_loaders_insert_cannot_heal_its_hours(server, org, make_event):
    settings, sessions, next_hook = server
    loader = open_warehouse(settings, writer=True, wait_seconds=0)
    loader_session = sessions[-1]
    real_insert = loader_session.insert_arrow
    outcome: dict[str, Any] = {}

    def raw_insert_lands_inside_the_rebuild(sql: str) -> None:
        if sql.startswith("INSERT INTO spend_hourly") and "insert" in outcome:
            outcome.pop("insert")()

    def loader_insert(table_name: str, table: Any, settings: dict[str, int] | None = None) -> None:
        if table_name != "priced_events" or "second" in outcome:
            real_insert(table_name, table, settings)
            return
        # The loader has marked its hours and is inside its raw INSERT: the second writer starts now.
        outcome["insert"] = lambda: real_insert(table_name, table, settings)
        next_hook["before_command"] = raw_insert_lands_inside_the_rebuild
        try:
            outcome["second"] = open_warehouse(settings_of_second, writer=True, wait_seconds=0)
        except WarehouseError as exc:
            outcome["second"] = exc
        if "insert" in outcome:  # refused (or it healed nothing): the loader's insert goes on
            outcome.pop("insert")()

    settings_of_second = settings
    loader_session.insert_arrow = loader_insert
    events = [make_event(f"{org}-{i}", org, cost="0.000100000000") for i in range(5)]
    try:
        assert loader.insert_priced(events) == 5
        raw, rollup = raw_and_rollup_totals(loader, org)
        assert raw == (5, Decimal("0.0005"))
        assert rollup == raw, f"the rollup counted the loader's insert twice: {rollup} over raw {raw}"
        second = outcome["second"]
        assert isinstance(second, WarehouseError), "a second writer was let in beside the loader"
        assert "writer" in str(second) and "pid" in str(second)  # names the holder, says what to do
    finally:
        if not isinstance(outcome.get("second"), (WarehouseError, type(None))):
            outcome["second"].close()
        loader.close()


def test_the_lease_passes_on_when_the_writer_closes(server, org, make_event):
    settings, sessions, _ = server
    first = open_warehouse(settings, writer=True, wait_seconds=0)
    first.close()
    second = open_warehouse(settings, writer=True, wait_seconds=0)
    try:
        assert second.insert_priced([make_event(f"{org}-1", org)]) == 1
    finally:
        second.close()


def test_reprice_on_a_server_is_refused_while_the_loader_holds_the_lease(server, org, make_event):
    settings, sessions, _ = server
    loader = open_warehouse(settings, writer=True, wait_seconds=0)
    reader = open_warehouse(settings)  # what `tokenmeter reprice` opens
    loader.insert_priced([make_event(f"{org}-1", org)])

    def reprice_fn(event: Any) -> Any:
        raise AssertionError("re-priced (after healing the loader's hours) while the loader runs")

    try:
        with pytest.raises(WarehouseError, match="writer"):
            reader.reprice("2025-03-01", "2025-03-02", reprice_fn=reprice_fn)
    finally:
        reader.close()
        loader.close()


def test_two_writers_claiming_at_once_agree_on_one(wh, monkeypatch):
    """The second writer read the claims before the first's claim was visible, so both claim: each reads back after
    the settle, the earliest claim holds the lease, and the second withdraws its own and is refused."""
    from warehouse.writer_lease import WriterBusy, WriterLease

    monkeypatch.setattr("warehouse.writer_lease.SETTLE_SECONDS", 0.01)
    first, second = WriterLease(wh.backend, owner="writer-a"), WriterLease(wh.backend, owner="writer-b")
    first.acquire()
    stale_reads = [None]  # the second's first read missed the first's claim
    real_holder = second.holder
    monkeypatch.setattr(second, "holder", lambda: stale_reads.pop() if stale_reads else real_holder())
    try:
        with pytest.raises(WriterBusy, match="writer-a"):
            second.acquire()
        assert first.holder()["owner"] == "writer-a" and first.lost is None
        claims = wh.query("SELECT owner, max(released) AS released FROM writer_lease WHERE owner = 'writer-b'"
                          " GROUP BY owner").to_dicts()
        assert claims == [{"owner": "writer-b", "released": 1}]  # it claimed, lost, and withdrew
    finally:
        first.release()
    assert first.holder() is None


def test_a_killed_writers_lease_lapses(wh, monkeypatch):
    from warehouse.writer_lease import WriterBusy, WriterLease

    monkeypatch.setattr("warehouse.writer_lease.SETTLE_SECONDS", 0.01)
    killed = WriterLease(wh.backend, owner="killed-writer", seconds=1.0).acquire()
    killed._stop.set()  # SIGKILL: no more renewals, no release
    killed._thread.join()
    with pytest.raises(WriterBusy, match="killed-writer"):
        WriterLease(wh.backend, owner="next-writer", seconds=1.0).acquire()
    successor = WriterLease(wh.backend, owner="next-writer", seconds=1.0).acquire(wait_seconds=5)
    try:
        assert successor.holder()["owner"] == "next-writer"
    finally:
        successor.release()


def test_a_writer_paused_past_its_lease_refuses_before_its_renewal_thread_notices(wh, monkeypatch):
    """A holder paused longer than its lease (SIGSTOP, a long GC, a VM pause) may have been replaced by a writer
    that wrote meanwhile. Its renewal thread finds out at its next wake-up (every third of the lease), but the paused
    thread may be inside `_insert_new` already: `check` must refuse from the clock alone, not wait for the thread.
    (Since load24 the loader also trusts its in-process filter of the dedupe keys only while it holds the lease.)"""
    from warehouse.writer_lease import WriterLease

    monkeypatch.setattr("warehouse.writer_lease.SETTLE_SECONDS", 0.01)
    paused = WriterLease(wh.backend, owner="paused-writer", seconds=0.5).acquire()
    paused._stop.set()  # the process stops: its renewal thread does not run again before the insert goes on
    paused._thread.join()
    successor = WriterLease(wh.backend, owner="writer-after-the-pause", seconds=0.5).acquire(wait_seconds=5)
    try:
        assert paused.lost is None  # the renewal thread never woke to see it
        with pytest.raises(WarehouseError, match="lease"):
            paused.check()
    finally:
        successor.release()
