"""Which inputs hold the detector's watermark (streams/anomalies/substreams.py), on a fake clock: keys, not
partitions; idleness on a progress clock that a pause does not advance; the trailed watermark for new keys."""

from __future__ import annotations

from streams.anomalies.engine import AnomalyEngine
from streams.anomalies.substreams import TRAIL_SOURCE, Substreams, partition_holder, substream_id
from tests.streams.anomaly_traffic import MONDAY, event

HOUR = 3600


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_behind_another_on_its_partition_holds_the_watermark():
    """The worker writes key A's hours, then key B's same hours, on one partition: B must not be late."""
    clock = Clock()
    inputs, engine = Substreams(clock=clock, trail_s=0), AnomalyEngine()
    a, b = substream_id(0, b"team:a"), substream_id(0, b"team:b")
    for sid, key in ((a, "a"), (b, "b")):  # both known from an earlier batch
        inputs.delivered({0: [(sid, key)]})
        engine.observe([event(MONDAY, key, team=key)], now=2e9, source=sid)
    clock.now += 1
    inputs.delivered({0: [(a, "a")]})
    engine.observe([event(MONDAY + h * 600, "a", team="a", n=h) for h in range(30)], now=2e9, source=a)
    engine.set_behind(inputs.trailed(inputs.holders([0], {0}, known=engine.sources), engine.sources))
    clock.now += 1
    inputs.delivered({0: [(b, "b")]})
    engine.observe([event(MONDAY + h * 600, "b", team="b", n=h) for h in range(30)], now=2e9, source=b)
    assert engine.stats["late_events"] == 0


def test_idle_after_progress_without_it_but_not_after_a_pause():
    clock = Clock()
    inputs = Substreams(idle_after_s=30, clock=clock)
    a, b = substream_id(0, b"team:a"), substream_id(0, b"team:b")
    inputs.delivered({0: [(a, "a"), (b, "b")]})
    clock.now += 600  # the producer paused ten minutes: progress counts at most a few seconds of it
    inputs.delivered({0: [(a, "a")]})
    assert b in inputs.holders([0], set(), known={a: 1, b: 1})
    for _ in range(40):  # then A delivered for 40 s without B: B stopped, it no longer holds
        clock.now += 1
        inputs.delivered({0: [(a, "a")]})
    assert inputs.holders([0], set(), known={a: 1, b: 1}) == {a}


def test_partition_that_never_delivered_holds_until_progress_or_live():
    clock = Clock()
    inputs = Substreams(idle_after_s=30, clock=clock)
    a = substream_id(0, b"team:a")
    inputs.delivered({0: [(a, "a")]})
    assert partition_holder(1) in inputs.holders([0, 1], set(), known={a: 1})
    assert partition_holder(1) not in inputs.holders([0, 1], set(), known={a: 1}, live=True)
    for _ in range(31):
        clock.now += 1
        inputs.delivered({0: [(a, "a")]})
    assert partition_holder(1) not in inputs.holders([0, 1], set(), known={a: 1})
    assert partition_holder(1) in inputs.holders([0, 1], {1}, known={a: 1})  # it has unread records: it holds


def test_a_key_that_delivered_nothing_readable_holds_nothing():
    inputs = Substreams(clock=Clock())
    bad = substream_id(2, b"team:garbage")
    inputs.delivered({2: [(bad, "garbage")]})
    assert bad in inputs.holders([2], set())  # while its batch is folded
    assert bad not in inputs.holders([2], set(), known={})  # afterwards: no event time, no hold


def test_the_engine_gets_the_watermark_of_trail_seconds_ago():
    """A key first seen a few seconds after another key's later hours is on time."""
    clock = Clock()
    inputs, engine = Substreams(clock=clock, trail_s=10), AnomalyEngine()
    a, b = substream_id(0, b"team:a"), substream_id(0, b"team:b")

    def fold(sid, key, events):
        inputs.delivered({0: [(sid, key)]})
        engine.set_behind(inputs.holders([0], {0}) | {TRAIL_SOURCE})
        engine.observe(events, now=2e9, source=sid)
        engine.set_behind(inputs.trailed(inputs.holders([0], {0}, known=engine.sources), engine.sources))

    fold(a, "a", [event(MONDAY + h * 600, "a", team="a", n=h) for h in range(60)])  # ten hours of A
    clock.now += 3
    fold(b, "b", [event(MONDAY + h * 600, "b", team="b", n=h) for h in range(60)])  # B's first records
    assert engine.stats["late_events"] == 0 and engine.stats["buckets_closed"] == 0
    clock.now += 11
    fold(a, "a", [event(MONDAY + 10 * HOUR + 60, "a", team="a", n=99)])
    clock.now += 11
    fold(a, "a", [event(MONDAY + 10 * HOUR + 120, "a", team="a", n=98)])
    assert engine.stats["buckets_closed"] >= 100 and engine.stats["late_events"] == 0
