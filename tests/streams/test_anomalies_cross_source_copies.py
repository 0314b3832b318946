"""One call seen by two sources is one call to the anomaly detector too (demo17).

The warehouse counts a call once by its call keys (warehouse/dedup.py: a gateway log and an OTel span with the same
response id); the detector, which reads every priced copy from `tokenmeter.priced`, deduplicated by event id only,
so the copies of one call counted twice: twice its spend, twice its calls, and its output size twice the evidence of
a template change. The demo month from 2026-11-08T09:00 (an OTel pilot sends one call in 40 twice in its first three
weeks): sk-glo-grow-ivy's o4-mini answer of 4,455 tokens at 17:03 on 10-13, scored twice (+2.9 each), and a gpt-5
answer of 10,530 tokens at 17:25 took its CUSUM over the threshold: a tokens_per_request page where nothing changed.
Now the detector's aggregate skips a copy whose call key it already counted in that bucket (tokenmeter.call_keys)."""

from __future__ import annotations

from datetime import datetime, timezone

from streams.anomalies.aggregate import REQ
from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, event

START = datetime(2026, 11, 8, 9, 0, tzinfo=timezone.utc)  # the demo's `now`
KEY, UNTIL = "sk-glo-grow-ivy", "2026-10-13T18:30"  # the key's calls up to the Tuesday evening it was paged


def test_a_call_and_its_otel_copy_count_once():
    calls = [event(MONDAY + 60 * i, "k1", n=i) for i in range(4)]
    copies = [{**c, "event_id": c["event_id"] + "-span", "source": "otel"} for c in calls]
    for call, copy in zip(calls, copies):
        call["correlation"] = copy["correlation"] = {"response_id": f"chatcmpl-{call['event_id']}"}
    engine = AnomalyEngine()
    engine.observe(calls + copies + [event(MONDAY + 30, "k1", n=99)], now=2e9)  # (and one call without ids)
    (rows,) = engine.agg.open.values()
    assert sum(agg[REQ] for agg in rows.values()) == 5 and engine.agg.duplicates == 4


def test_the_demo_keys_calls_seen_twice_are_not_a_template_change():
    from warehouse.demo_history import history_events, priced_history

    mine = [e for e in history_events(START) if e["attribution"]["api_key"] == KEY and e["ts"] < UNTIL]
    priced = priced_history(mine)
    assert len(priced) > len(mine)  # some of its calls arrive twice
    engine = AnomalyEngine()
    pages = [u.record for u in engine.observe(priced, now=START.timestamp())
             if u.action == "open" and u.notify and u.record["kind"] == "tokens_per_request"]
    pages += [u.record for u in engine.advance_to(datetime.fromisoformat(UNTIL + "+00:00").timestamp() + 600)
              if u.action == "open" and u.notify and u.record["kind"] == "tokens_per_request"]
    assert pages == [], [p["start"] + " " + p["explanation"] for p in pages]
