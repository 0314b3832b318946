"""Liveness of the detector's event-time watermark (streams/anomalies/substreams.py and the runner), on a fake clock.

The end-to-end anomaly test once missed its alert within 90 s when the detector read a shared `tokenmeter.priced`
that also carried other tests' records: other keys, other event times (days in the past), keys that never delivered
again, a partition with one old record. Whatever the topic held before, live traffic with an incident must raise its
alert within a bounded time of the idle rule (seconds of the fake clock here, no wall sleeps).

The runner's `_handle` is driven directly: a fake consumer hands out what each partition holds (at most `per_poll`
records per partition and poll, so "behind" is what a real fetch would leave unread), outputs are captured instead
of sent, and the wall clock and the progress clock are one fake clock.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson
import pytest
from aiokafka.structs import TopicPartition

from streams.anomalies import runner as runner_module
from streams.anomalies.runner import Detector
from streams.anomalies.substreams import IDLE_AFTER_S, TRAIL_S, Substreams
from tests.streams.anomaly_traffic import event
from tokenmeter.commitloop import Batch
from tokenmeter.settings import load_settings
from tokenmeter.topics import ALERTS, PRICED

NOW = 1_790_000_000  # the fake wall clock at the start (2026-09-21)
DAY = 86400
POLL_S = 0.5  # the runner's fetch timeout: an empty poll every half second
PARTITIONS = 4


class FakeTime:
    """time.time and time.monotonic of the runner, and the substreams' progress clock: one fake clock."""

    def __init__(self, wall: float):
        self.wall = wall

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.wall - NOW + 1000.0


class Harness(Detector):
    """A Detector whose consumer is a list of records per partition and whose outputs are kept, not sent."""

    def __init__(self, settings, clock: FakeTime, per_poll: int = 50):
        super().__init__(settings)
        self.clock = clock
        self.inputs = Substreams(IDLE_AFTER_S, clock=clock.monotonic)
        self.tps = [TopicPartition(PRICED, p) for p in range(PARTITIONS)]
        self.log: dict[int, list] = {p: [] for p in range(PARTITIONS)}
        self.position = {p: 0 for p in range(PARTITIONS)}
        self.per_poll = per_poll
        self.outputs: list[tuple[str, bytes | None, bytes]] = []
        self._unread: set[int] = set()

    def produce(self, partition: int, key: str, events: list[dict]) -> None:
        records = self.log[partition]
        records.append(SimpleNamespace(key=key.encode(), value=orjson.dumps(events), offset=len(records)))

    async def _behind(self, consumer, tps) -> set[int]:
        return set(self._unread)

    async def _send_all(self, batch, outputs, stop) -> None:
        self.outputs.extend(outputs)

    async def poll(self) -> int:
        """One fetch of the commit loop: up to `per_poll` records per partition, then the runner's handling."""
        fetched = {}
        for p, tp in enumerate(self.tps):
            records = self.log[p][self.position[p]:self.position[p] + self.per_poll]
            if records:
                fetched[tp] = records
                self.position[p] += len(records)
        self._unread = {p for p in range(PARTITIONS) if self.position[p] < len(self.log[p])}
        await self._handle(Batch(records=fetched), None, asyncio.Event(), self.tps)
        return sum(map(len, fetched.values()))

    def alerts(self, kind: str, scope_value: str) -> list[dict]:
        found = [orjson.loads(v) for topic, _k, v in self.outputs if topic == ALERTS]
        return [a for a in found if a["kind"] == kind and scope_value in a["scope"].values()]


@pytest.fixture
def harness(tmp_path, monkeypatch):
    clock = FakeTime(NOW)
    monkeypatch.setattr(runner_module, "time", clock)
    settings = load_settings(data_dir=tmp_path, anomaly_notify=["webhook=http://127.0.0.1:9/hook"])
    return Harness(settings, clock)


def unpriced_incident(model: str, start: int, buckets: int = 3, team: str = "live") -> list[list[dict]]:
    """What the end-to-end test produces: ten calls of a model nobody priced in each of `buckets` buckets."""
    start -= start % 300
    return [[event(b + i * 20, "k-" + model, team=team, model=model, pricing="unpriced", n=i) for i in range(10)]
            for b in range(start, start + buckets * 300, 300)]


def foreign_history(h: Harness) -> None:
    """Other tests' records on a shared topic: other keys at other (old) event times, some never heard of again."""
    h.produce(0, "team:old", [event(NOW - 3 * DAY + 60 * i, "old-key", team="old", n=i) for i in range(20)])
    h.produce(0, "team:quiet", [event(NOW - 5 * 3600 + 30 * i, "quiet-key", team="quiet", n=i) for i in range(5)])
    h.produce(1, "team:other", [event(NOW - 26 * 3600 + 10 * i, "other-key", team="other", n=i) for i in range(40)])
    h.produce(2, "team:lonely", [event(NOW - 10 * DAY, "lonely-key", team="lonely")])  # the partition's only record
    # partition 3 never carries anything


async def run_until(h: Harness, done, limit_s: float) -> float:
    """Poll every POLL_S of fake time until done() or `limit_s` fake seconds; returns the fake seconds taken."""
    start = h.clock.wall
    while h.clock.wall - start <= limit_s:
        await h.poll()
        if done():
            return h.clock.wall - start
        h.clock.wall += POLL_S
    raise AssertionError(f"not done after {limit_s} s of polls; engine {h.engine.stats}, watermark "
                         f"{h.engine.watermark - NOW:+} s from now, holders {h.engine.behind}")


# The alert may wait for the idle rule (a key silent for IDLE_AFTER_S stops holding) and the trail: not more.
BOUND_S = IDLE_AFTER_S + TRAIL_S + 10 * POLL_S


def test_an_incident_after_old_foreign_history_is_alerted_when_the_input_goes_quiet(harness):
    """The end-to-end test's shape: old foreign keys on the topic, then the incident's batches, then nothing."""
    foreign_history(harness)
    for batch in unpriced_incident("acme-live", NOW - 45 * 60):
        harness.produce(0, "team:live", batch)
    took = asyncio.run(run_until(harness, lambda: harness.alerts("unpriced_usage", "acme-live"), BOUND_S))
    assert took <= BOUND_S
    assert harness.engine.stats["late_events"] == 0


def test_an_incident_in_live_traffic_after_old_foreign_history(harness):
    """Foreign history read first, then live traffic arrives every few seconds and carries the incident."""
    foreign_history(harness)

    async def scenario():
        await run_until(harness, lambda: not harness._unread and harness.engine.stats["events"] >= 66, 5)
        t = harness.clock.wall
        for n in range(600):  # ten minutes of live traffic, one call per second on a steady key
            harness.clock.wall = t + n
            harness.produce(1, "team:steady", [event(int(harness.clock.wall) - 2, "steady-key", team="steady", n=n)])
            if n >= 60 and n % 6 == 0:  # from the second minute: a model nobody priced, ten calls a minute
                harness.produce(0, "team:live", [event(int(harness.clock.wall) - 1, "k-acme", team="live",
                                                       model="acme-live", pricing="unpriced", n=n)])
            await harness.poll()
            if harness.alerts("unpriced_usage", "acme-live"):
                return harness.clock.wall - t
        raise AssertionError(f"no alert in 10 minutes of live traffic; engine {harness.engine.stats}, watermark "
                             f"{harness.engine.watermark - harness.clock.wall:+} s from now")

    took = asyncio.run(scenario())
    # The incident's first bucket closes 5 min + grace after it starts at the latest: 60 s + 300 s + 120 s + trail.
    assert took <= 60 + 300 + 120 + 60 + BOUND_S
    assert harness.engine.stats["late_events"] == 0


def test_a_partition_with_one_old_record_and_keys_gone_quiet_do_not_stall_live_detection(harness):
    """Only the lonely partition and a quiet key are foreign; the incident comes on another partition after them."""
    harness.produce(2, "team:lonely", [event(NOW - 10 * DAY, "lonely-key", team="lonely")])
    harness.produce(3, "team:quiet", [event(NOW - 3 * 3600 + 30 * i, "quiet-key", team="quiet", n=i) for i in range(5)])

    async def scenario():
        await run_until(harness, lambda: not harness._unread, 5)
        harness.clock.wall += 600  # nothing for ten minutes, then the incident's batches
        for batch in unpriced_incident("acme-late", int(harness.clock.wall) - 20 * 60):
            harness.produce(1, "team:live", batch)
        return await run_until(harness, lambda: harness.alerts("unpriced_usage", "acme-late"), BOUND_S)

    assert asyncio.run(scenario()) <= BOUND_S


def test_history_still_holds_while_quiet_when_it_is_not_live(harness):
    """The other side of the rule: a backfill a week old whose second key is still in the worker (nothing arrives
    for minutes) keeps that key holding the watermark; its records, when they come, are on time."""
    week_ago = NOW - 7 * DAY
    harness.produce(0, "team:a", [event(week_ago + 60 * i, "a-key", team="a", n=i) for i in range(600)])
    harness.produce(0, "team:b", [event(week_ago + 60 * i, "b-key", team="b", n=i) for i in range(30)])

    async def scenario():
        await run_until(harness, lambda: not harness._unread, 60)
        closed = harness.engine.stats["buckets_closed"]
        for _ in range(1200):  # ten quiet minutes of polls
            harness.clock.wall += POLL_S
            await harness.poll()
        assert harness.engine.stats["buckets_closed"] == closed
        harness.produce(0, "team:b", [event(week_ago + 60 * i, "b-key", team="b", n=i) for i in range(30, 600)])
        await run_until(harness, lambda: not harness._unread, 60)

    asyncio.run(scenario())
    assert harness.engine.stats["late_events"] == 0
