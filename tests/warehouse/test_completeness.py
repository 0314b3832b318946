"""Completeness (issue 16) on a real chDB warehouse: per source the last event, events in the last hour against
the same hour on previous days, dead letters per hour; stale, dropping and rejecting sources, a source quiet at
this hour every day that is fine, a new source still learning, and stale provider pollers; their alerts; the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tokenmeter import topics
from tokenmeter.settings import Settings
from warehouse_template import empty_warehouse_in

NOW = datetime.now(timezone.utc).replace(microsecond=0)
DAYS = 8


def event(source: str, i: int, ts: datetime, tag: str = "") -> dict:
    return {"event_id": f"{source}{tag}-{i}", "ts": ts.isoformat(), "source": source, "provider": "openai",
            "model": "gpt-4o", "status": "ok", "attribution": {"team": "search", "tags": {}},
            "usage": {"input_tokens": 10, "output_tokens": 1}, "tokens_source": "provider", "cost_usd": "0.001",
            "cost_breakdown": {"input": "0.001"}, "pricing_status": "priced",
            "price": {"entry": "openai/gpt-4o", "effective_from": "2024-08-06", "catalog_version": "t"},
            "priced_at": ts.isoformat()}


def steady(source: str, per_hour: int, since: timedelta, until: timedelta = timedelta(0),
           hours_of_day: set[int] | None = None, tag: str = "") -> list[dict]:
    """per_hour events evenly spread over [NOW - since, NOW - until), optionally only in some hours of the day."""
    step = timedelta(minutes=60 / per_hour)
    out, ts, i = [], NOW - until - step / 2, 0
    while ts >= NOW - since:
        if hours_of_day is None or ts.hour in hours_of_day:
            out.append(event(source, i, ts, tag))
        ts -= step
        i += 1
    return out


def letter(source: str, i: int) -> dict:
    return {"reason": "line 3: not JSON", "stage": "collect:file", "dialect": source, "payload": "garbage",
            "payload_bytes": 7, "payload_sha256": f"{i:064x}", "payload_truncated": False, "file": "/var/log/x",
            "line": i, "at": (NOW - timedelta(minutes=5 + i)).isoformat()}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from warehouse import open_warehouse
    from warehouse.records_load import record_to_row

    directory = empty_warehouse_in(tmp_path_factory.mktemp("completeness"), tmp_path_factory)
    wh = open_warehouse(Settings(data_dir=directory), writer=True, serve=False)
    try:
        quiet_hours = {(NOW.hour + h) % 24 for h in range(9, 15)}  # sends only around the opposite hours
        events = (steady("kong", 6, timedelta(days=DAYS))
                  + steady("litellm", 6, timedelta(days=DAYS), until=timedelta(hours=2))  # silent for 2 h
                  + steady("otel", 12, timedelta(days=DAYS), until=timedelta(hours=1))
                  + steady("otel", 2, timedelta(hours=1), tag="-tail")  # its last hour: 2 instead of 12
                  + steady("apisix", 6, timedelta(days=DAYS))
                  + steady("nightly", 6, timedelta(days=DAYS), hours_of_day=quiet_hours)
                  + steady("new-gateway", 6, timedelta(hours=3)))
        assert wh.insert_priced(events) == len(events)
        letters = [letter("apisix", i) for i in range(8)]
        rows = [record_to_row(topics.DEADLETTER, item)[1] for item in letters + letters]  # read twice: once
        rows.append(record_to_row(topics.DEADLETTER, {"reason": "x", "at": "not a time", "partition": "p"})[1])  # stored
        wh.insert_records(topics.DEADLETTER, rows)
        polls = [{"id": f"{p}-1", "provider": p, "kind": "cost", "bucket_start": (NOW - timedelta(days=2)).isoformat(),
                  "bucket_end": (NOW - timedelta(days=1)).isoformat(), "cost_usd": "1",
                  "fetched_at": (NOW - age).isoformat()}
                 for p, age in (("openai", timedelta(hours=30)), ("anthropic", timedelta(hours=1)))]
        wh.insert_records(topics.PROVIDER_USAGE, [record_to_row(topics.PROVIDER_USAGE, p)[1] for p in polls])
    finally:
        wh.close()
    return directory


@pytest.fixture(scope="module")
def health(data_dir):
    from warehouse import open_warehouse
    from warehouse.completeness import Limits, source_health

    wh = open_warehouse(Settings(data_dir=data_dir), serve=False)
    try:
        return {h.source: h for h in source_health(wh, NOW, Limits(min_per_hour=5))}
    finally:
        wh.close()


def test_each_source_gets_its_status(health):
    assert {s: h.status for s, h in health.items()} == {
        "kong": "ok", "litellm": "stale", "otel": "dropping", "apisix": "rejecting", "nightly": "ok",
        "new-gateway": "learning", "poller:openai": "stale", "poller:anthropic": "ok"}
    assert health["kong"].usual == Decimal(6) and health["kong"].last_hour == 6
    assert health["otel"].usual == Decimal(12) and health["otel"].last_hour == 2
    assert health["apisix"].deadletters_last_hour == 8  # a letter loaded twice counts once
    assert health["nightly"].usual == 0 and health["nightly"].last_hour == 0  # quiet at this hour every day
    assert NOW - health["litellm"].last_event > timedelta(hours=2)
    assert list(health)[:5] == ["apisix", "litellm", "otel", "poller:openai", "kong"]  # problems first


def test_alerts_once_per_outage(health):
    from warehouse.completeness import completeness_alert

    stale = completeness_alert(health["litellm"], NOW)
    later = completeness_alert(health["litellm"], NOW + timedelta(minutes=10))
    assert stale["id"] == later["id"]  # the next check, same outage: same id, delivered once
    assert stale["notify"] == []  # the dispatcher's TOKENMETER_FINANCE_NOTIFY routes it (leak21)
    assert stale["source"] == "completeness" and stale["kind"] == "source_stale" and stale["severity"] == "error"
    assert stale["details"]["usual_per_hour"] == "6" and stale["details"]["events_last_hour"] == 0
    dropping = completeness_alert(health["otel"], NOW)
    assert dropping["kind"] == "source_dropping" and "usually 12" in dropping["summary"]


def test_cli_lists_sources_and_problems(data_dir):
    env = {"TOKENMETER_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin", "TOKENMETER_COMPLETENESS_MIN_PER_HOUR": "5"}
    out = subprocess.run([sys.executable, "-m", "app", "completeness", "--format", "json", "--at", NOW.isoformat()],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = {r["source"]: r for r in json.loads(out.stdout)}
    assert rows["otel"]["status"] == "dropping" and rows["otel"]["usual_per_hour"] == "12"
    assert rows["apisix"]["deadletters_last_hour"] == 8


def test_the_table_writes_the_last_event_for_people_and_json_keeps_the_exact_moment(health):
    from warehouse.completeness import as_dicts

    rows = list(health.values())
    exact = {r["source"]: r["last_event"] for r in as_dicts(rows)}
    shown = {r["source"]: r["last_event"] for r in as_dicts(rows, for_people=True)}
    last = health["litellm"].last_event.astimezone(timezone.utc)
    assert exact["litellm"] == health["litellm"].last_event.isoformat()  # machine formats: unchanged, exact
    assert shown["litellm"] == f"{last:%Y-%m-%d %H:%M:%S} UTC"  # the table: no microseconds, no offset
    assert "." not in shown["litellm"] and "+00:00" not in shown["litellm"]


def test_a_weekend_hour_is_judged_against_weekend_days(tmp_path):
    """Business traffic is lower on weekends. Judged against the median of the previous 7 days (5 of them
    weekdays), every weekend hour of such a source was "dropping" (seen at a Saturday-night start of the demo:
    3 events against a usual 12). A weekend hour is judged against the weekend days among them, a weekday hour
    against the weekdays; a weekday hour as low as a weekend one still drops."""
    from warehouse import open_warehouse
    from warehouse.completeness import Limits, source_health

    saturday = datetime(2026, 11, 28, 4, 30, tzinfo=timezone.utc)
    monday = datetime(2026, 11, 30, 4, 30, tzinfo=timezone.utc)  # its hour: 3 events, a weekend's level

    def hour_before(moment: datetime, count: int) -> list[dict]:
        return [event("office", i, moment - timedelta(minutes=59) + timedelta(minutes=59 * i / count),
                      f"-{moment:%m%d}") for i in range(count)]

    events = []
    for n in range(15):  # the hour before 04:30 on each day from Nov 16 to Nov 30: 12 on weekdays, 3 on weekends
        moment = monday - timedelta(days=n)
        events += hour_before(moment, 3 if moment.weekday() >= 5 or moment == monday else 12)
    wh = open_warehouse(Settings(data_dir=tmp_path), writer=True, serve=False)
    try:
        assert wh.insert_priced(events) == len(events)
        on_saturday = {h.source: h for h in source_health(wh, saturday, Limits(min_per_hour=2))}["office"]
        on_monday = {h.source: h for h in source_health(wh, monday, Limits(min_per_hour=2))}["office"]
    finally:
        wh.close()
    assert (on_saturday.status, on_saturday.usual, on_saturday.last_hour) == ("ok", Decimal(3), 3)
    assert (on_monday.status, on_monday.usual, on_monday.last_hour) == ("dropping", Decimal(12), 3)


def test_the_alert_summary_reads_as_people_write_it(health):
    """Before: "Last event 2026-12-05T08:00:00.123000+00:00; 0 event(s) in the last hour (usually 6); 0 dead
    letter(s) in the last hour." The details keep the ISO time."""
    from warehouse.completeness import completeness_alert

    stale = completeness_alert(health["litellm"], NOW)
    last = health["litellm"].last_event.astimezone(timezone.utc)
    assert stale["summary"].endswith(f"Last event {last:%Y-%m-%d %H:%M} UTC; 0 events in the last hour (usually 6); "
                                     "0 dead letters in the last hour."), stale["summary"]
    assert stale["details"]["last_event_at"] == health["litellm"].last_event.isoformat()
    rejecting = completeness_alert(health["apisix"], NOW)
    assert "; 8 dead letters in the last hour." in rejecting["summary"]


def test_a_record_dead_lettered_again_after_a_redelivery_counts_once(tmp_path):
    """At-least-once: a stage that crashed before committing reads its record again and writes a second letter for
    it, with a new `at`; the table's key holds `at`, so both rows stayed and the source's dead letters of the hour
    (its `rejecting` status, the alert text) counted the record twice. A letter at a Kafka position (topic,
    partition, offset, payload hash) counts once, at its first `at`; letters without one (HTTP ingest, files) by
    their own time, as before."""
    from warehouse import open_warehouse
    from warehouse.completeness import source_health
    from warehouse.records_load import record_to_row

    def kafka_letter(offset: int, minutes: int) -> dict:
        return {"reason": "invalid event: usage.input_tokens: negative", "stage": "worker", "source": "worker",
                "topic": "tokenmeter.usage", "partition": 2, "offset": offset, "payload_sha256": "ab" * 32,
                "at": (NOW - timedelta(minutes=minutes)).isoformat()}

    http = {"reason": "not JSON", "stage": "ingest", "dialect": "http", "payload_sha256": "cd" * 32}
    letters = [kafka_letter(7, 50), kafka_letter(7, 20), kafka_letter(7, 5),  # one record, lettered three times
               kafka_letter(8, 90), kafka_letter(8, 30),  # its first letter before the hour: not in the hour
               dict(http, at=(NOW - timedelta(minutes=9)).isoformat()),  # two requests with the same body
               dict(http, at=(NOW - timedelta(minutes=4)).isoformat())]
    wh = open_warehouse(Settings(data_dir=tmp_path), writer=True, serve=False)
    try:
        wh.insert_records(topics.DEADLETTER, [record_to_row(topics.DEADLETTER, item)[1] for item in letters])
        health = {h.source: h for h in source_health(wh, NOW)}
    finally:
        wh.close()
    assert health["worker"].deadletters_last_hour == 1
    assert health["http"].deadletters_last_hour == 2
