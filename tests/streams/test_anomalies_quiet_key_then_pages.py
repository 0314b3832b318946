"""A broad scope's spike recorded as "mostly the traffic of api_key k1, within that key's own usual range (not
alerted)" stops saying so once that key's own anomaly of the kind opens and pages (anom32).

The demo's live loop (search's key sk-acm-sear-chen on feature agent-loop): the feature, quiet at $0.0094/hour, was
anomalous a bucket before the key (whose usual range is wider) and opened as "Mostly the traffic of api_key
sk-acm-sear-chen, within that key's own usual range (not alerted)". Ten minutes later the key paged at 171x, and the
feature's records kept saying the key was within its range until they closed: the Anomalies page contradicted the
page on-call had just received. Now the feature's record says it is part of the key's anomaly (alerted there)."""

from __future__ import annotations

import pytest

from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, event, traffic
from tests.streams.test_anomalies_detectors import HISTORY_END, feed

pytestmark = pytest.mark.slow(seconds=8)  # rough seconds: longest files first (tests/suite_order.py)
LOOP_AT = HISTORY_END + 13 * 3600


def _agent(e, t):  # noqa: ARG001 - a tenth of key k1's calls are its agent feature's: a quiet feature, mostly k1's
    if e["attribution"]["api_key"] == "k1" and e["event_id"].endswith("7"):
        e["attribution"]["feature"] = "agent"
    return e


def _loop() -> list[list[dict]]:
    """20 calls per 5 minutes on feature agent for an hour, starting 30 s before a bucket's end (as the demo's)."""
    batches = []
    for b in range(LOOP_AT, LOOP_AT + 3600, 300):
        first, step = (270, 1) if b == LOOP_AT else (0, 15)
        batches.append([{**e, "attribution": {**e["attribution"], "feature": "agent"}}
                        for e in (event(t, "k1", model="gpt-4o", tin=3000, n=1000 + i)
                                  for i, t in enumerate(range(b + first, b + 300, step)))][:20])
    return batches


def test_a_broad_scope_said_within_the_keys_range_is_part_of_the_keys_page_once_it_pages():
    engine = AnomalyEngine()
    assert feed(engine, traffic(MONDAY, LOOP_AT, modify=_agent)) == []
    after = traffic(LOOP_AT, LOOP_AT + 3 * 3600, seed=9, modify=_agent)
    updates = feed(engine, [loop + rest for loop, rest in zip(_loop() + [[]] * len(after), after)])
    feature = [u for u in updates if (u.record["scope_dim"], u.record["scope_value"], u.record["kind"])
               == ("feature", "agent", "spend_rate")]
    key_open = next(u for u in updates if u.action == "open" and u.notify and u.record["kind"] == "spend_rate"
                    and u.record["scope_value"] == "k1")
    assert feature[0].action == "open" and "within that key's own usual range" in feature[0].record["explanation"]
    assert feature[0].record["detected_at"] < key_open.record["detected_at"]  # the case: the feature first
    later = [u for u in feature if u.record["detected_at"] > key_open.record["detected_at"]]
    assert later and later[-1].action == "close", [u.action for u in feature]
    for update in later:
        assert update.action != "close" or not update.notify  # (updates are never alerted)
        assert update.record["explanation"].endswith("Part of the anomaly of api_key k1 (alerted there)."), \
            update.record["explanation"]
