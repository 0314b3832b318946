"""Event time, not arrival order or the wall clock, closes buckets (issue #17, points 2 and 3): a wall-clock advance
during a backfill, or one partition read ahead of another, must not make history late."""

from __future__ import annotations

import time

from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, event, traffic

DAY = 86400


def test_wall_clock_advance_does_not_destroy_a_backfill():
    """The issue's reproduction: an empty poll during a backfill moved the clock to wall time."""
    engine = AnomalyEngine()
    start = int(time.time()) - 3 * DAY
    engine.observe([event(start, "k1")])
    engine.advance_to(time.time() - 120)
    engine.observe([event(start + 600 + i, "k1", n=i) for i in range(100)])
    assert engine.stats["late_events"] == 0
    assert engine.stats["buckets_closed"] <= 3


def test_wall_clock_advance_still_closes_live_buckets():
    """Live traffic that goes quiet: the wall clock closes its buckets (so an open anomaly can resolve)."""
    engine = AnomalyEngine()
    now = int(time.time())
    engine.observe([event(now - 600, "k1")])
    engine.advance_to(now - 120)
    assert engine.stats["buckets_closed"] >= 1 and engine.next_close > now - 900


def test_partition_read_ahead_does_not_make_the_other_late():
    """Partition 1 is read a day ahead of partition 0: partition 0's events are still on time."""
    engine = AnomalyEngine()
    batches = traffic(MONDAY, MONDAY + DAY, keys=("k1", "k2"))
    part0 = [[e for e in b if e["attribution"]["api_key"] == "k1"] for b in batches]
    part1 = [[e for e in b if e["attribution"]["api_key"] == "k2"] for b in batches]
    engine.set_behind({0, 1})
    for batch in part1:  # partition 1 delivered whole first
        engine.observe(batch, now=2e9, source=1)
    engine.set_behind({0})  # partition 1 caught up: idle, it no longer holds the watermark
    for batch in part0:
        engine.observe(batch, now=2e9, source=0)
    assert engine.stats["late_events"] == 0
    assert engine.stats["events"] == sum(map(len, batches))
    engine.set_behind(set())
    engine.advance_to(MONDAY + DAY + 900)
    assert engine.stats["buckets_closed"] >= 287


def test_an_input_that_delivered_nothing_yet_holds_the_watermark():
    engine = AnomalyEngine()
    engine.set_behind({0, 1})
    engine.observe([event(MONDAY + DAY, "k2")], now=2e9, source=1)
    engine.observe([event(MONDAY, "k1")], now=2e9, source=0)
    assert engine.stats["late_events"] == 0 and engine.stats["buckets_closed"] == 0


def test_watermark_state_survives_a_snapshot():
    engine = AnomalyEngine()
    engine.observe([event(MONDAY, "k1")], now=2e9, source=3)
    copy = AnomalyEngine.restore(engine.snapshot())
    assert copy.sources == {3: engine.sources[3]}
