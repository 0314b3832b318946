"""A tokens-per-request anomaly of a scope that goes quiet resolves (oncall24): a ratio is judged on calls, so a key
that stopped calling after its template change kept the anomaly (and its PagerDuty incident) open until it called
again (anom24's search-k1, open at 14:00 after its last call at 13:50). After `tpr_quiet_close_s` (an hour) without
calls it resolves, saying why; a key that calls every hour keeps it."""

from __future__ import annotations

from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, event
from tests.streams.test_anomalies_quiet_key_template import quiet_key

ONSET = MONDAY + 6 * 86400


def _opened_then(engine: AnomalyEngine, calls: list[dict]) -> tuple[list[dict], int]:
    """Feed calls until the key's anomaly opens: (the calls left, the time of the last call fed)."""
    for i, call in enumerate(calls):
        for u in engine.observe([call], now=2e9):
            if u.action == "open" and u.record["kind"] == "tokens_per_request" and u.record["scope_dim"] == "api_key":
                return calls[i + 1:], int(call["event_id"].split("-")[2])
    raise AssertionError("the template change did not open")


def _clock(start: int, end: int) -> list[dict]:
    """Another team's key, one call a minute: the watermark moves on while k-quiet says nothing."""
    return [event(t, "k-clock", team="ops", n=t) for t in range(start, end, 60)]


def _key_closes(engine: AnomalyEngine, calls: list[dict]) -> list[dict]:
    return [u.record for call in calls for u in engine.observe([call], now=2e9)
            if u.action == "close" and u.record["kind"] == "tokens_per_request"
            and u.record["scope_value"] == "k-quiet"]


def test_a_keys_template_anomaly_resolves_an_hour_after_its_last_call_saying_so():
    engine = AnomalyEngine()
    _, last = _opened_then(engine, quiet_key(ONSET))
    closed = _key_closes(engine, _clock(last + 60, last + 4 * 3600))
    assert len(closed) == 1, closed
    record = closed[0]
    assert record["status"] == "closed"
    assert "no calls since" in record["explanation"].lower(), record["explanation"]
    bucket = last - last % 300
    assert record["detected_at"] == _iso(engine.close_time(bucket + engine.cfg.tpr_quiet_close_s))


def test_a_key_calling_every_hour_keeps_its_anomaly_open():
    engine = AnomalyEngine()
    rest, last = _opened_then(engine, quiet_key(ONSET))
    more = [c for c in rest if int(c["event_id"].split("-")[2]) < last + 3 * 3600]
    feed = sorted(more + _clock(last + 60, last + 3 * 3600), key=lambda e: e["ts"])
    assert _key_closes(engine, feed) == []


def _iso(t: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")
