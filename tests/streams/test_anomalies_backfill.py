"""A backfill of history through the real runner and a real broker with 4 partitions (issue #17, points 2 and 3):
partitions written in shuffled order, then read at very different event-time paces, idle polls after; the history
must build the baselines (few late events, every bucket closed in event time) and raise no storm."""

from __future__ import annotations

import asyncio
import random
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.anomalies.baseline import MIN_SAMPLES
from streams.anomalies.runner import Detector
from tests.streams.anomaly_traffic import MONDAY, traffic
from tests.streams.backfill_stack import wait_for_backfill
from app.broker import embedded_broker
from tokenmeter.settings import free_port, load_settings
from tokenmeter.topics import PRICED

pytestmark = pytest.mark.slow(seconds=25)  # rough seconds: longest files first (tests/suite_order.py)

DAY, WEEK = 86400, 7 * 86400
KEYS = ("k1", "k2", "k3", "k4", "k5")
PARTITION_OF = {"k1": 0, "k2": 0, "k3": 1, "k4": 2, "k5": 3}  # partition 0 carries two keys


def history(days: int) -> tuple[list[list[dict]], int]:
    """`days` of seasonal traffic ending at most a week ago, always on the same weekdays (deterministic shape)."""
    weeks = (int(time.time()) - days * DAY - MONDAY) // WEEK - 1
    start = MONDAY + weeks * WEEK
    shift = weeks * WEEK
    batches = traffic(MONDAY, MONDAY + days * DAY, keys=KEYS, seed=4)
    for batch in batches:
        for e in batch:
            t = int(time.mktime(time.strptime(e["ts"], "%Y-%m-%dT%H:%M:%SZ"))) - time.timezone + shift
            e["ts"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
            e["event_id"] += f"-{weeks}"
    return batches, start


async def produce_history(bootstrap: str, batches: list[list[dict]]) -> int:
    """Partition 0 as one message per event (slow to read in event time), the others as one array per hour:
    the consumer advances partitions at very different event-time paces. Partitions written in shuffled order."""
    per_partition: dict[int, list[bytes]] = {p: [] for p in range(4)}
    for hour in range(0, len(batches), 12):
        events = [e for batch in batches[hour:hour + 12] for e in batch]
        for p in range(4):
            mine = [e for e in events if PARTITION_OF[e["attribution"]["api_key"]] == p]
            if p == 0:
                per_partition[p] += [orjson.dumps(e) for e in mine]
            elif mine:
                per_partition[p].append(orjson.dumps(mine))
    order = list(range(4))
    random.Random(7).shuffle(order)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    try:
        for p in order:
            futures = [await producer.send(PRICED, value, partition=p) for value in per_partition[p]]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sum(len(v) for v in per_partition.values())


@pytest.mark.timeout(180)
def test_backfill_on_four_partitions_builds_baselines(tmp_path):
    batches, start = history(days=4)
    total = sum(map(len, batches))
    with embedded_broker("127.0.0.1", free_port(), partitions=4) as bootstrap:
        settings = load_settings(kafka_bootstrap=bootstrap, data_dir=tmp_path, anomaly_notify=[])

        async def scenario() -> Detector:
            await produce_history(bootstrap, batches)
            detector = Detector(settings, snapshot_every_s=3600)
            stop = asyncio.Event()
            task = asyncio.create_task(detector.run(stop))
            try:
                await wait_for_backfill(detector, total, 4 * 288 - 4, read_s=120)
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
            return detector

        detector = asyncio.run(scenario())
    stats = detector.engine.stats
    assert stats["events"] == total and stats["bad_events"] == 0
    assert stats["late_events"] <= total * 0.01, stats
    # The watermark is the minimum over the keys that delivered last: the last bucket or two of the history stay
    # open until later events come (a quiet wall clock does not close history).
    assert stats["buckets_closed"] >= 4 * 288 - 4, stats
    assert stats["anomalies_opened"] == 0, stats
    for key in KEYS:
        state = detector.engine.scopes[("api_key", key)]
        assert state.age >= 4 * 288 - 4
        assert max(state.spend.n[168:216]) >= MIN_SAMPLES  # weekday hour-of-day slots learnt
        assert max(state.spend.level[168:216]) > 0


@pytest.mark.timeout(120)
def test_a_team_produced_after_the_detector_passed_its_history_is_named(tmp_path, caplog):
    """One team's history after another's, the second arriving once the detector has closed the first's buckets:
    no watermark can repair that; its events are counted late and the key is named with the backfill rule."""
    day = traffic(MONDAY, MONDAY + DAY, keys=("k1",), team="first", seed=5)
    late_day = traffic(MONDAY, MONDAY + DAY, keys=("k9",), team="second", seed=6)
    with embedded_broker("127.0.0.1", free_port(), partitions=1) as bootstrap:
        settings = load_settings(kafka_bootstrap=bootstrap, data_dir=tmp_path, anomaly_notify=[])

        async def send(batches, key: bytes) -> None:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
            await producer.start()
            try:
                for batch in batches:
                    if batch:
                        await producer.send_and_wait(PRICED, orjson.dumps(batch), key=key)
            finally:
                await producer.stop()

        async def scenario() -> Detector:
            await send(day, b"team:first")
            detector = Detector(settings, snapshot_every_s=3600)
            stop = asyncio.Event()
            task = asyncio.create_task(detector.run(stop))
            try:
                deadline = time.monotonic() + 60
                while detector.engine.stats["buckets_closed"] < 200 and time.monotonic() < deadline:
                    await asyncio.sleep(0.3)
                await send(late_day, b"team:second")
                total = sum(map(len, day + late_day))
                while detector.engine.stats["events"] < total and time.monotonic() < deadline:
                    await asyncio.sleep(0.3)
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
            return detector

        with caplog.at_level("WARNING", logger="tokenmeter.anomalies"):
            detector = asyncio.run(scenario())
    assert detector.engine.stats["late_events"] > 0
    assert set(detector.late_keys) == {"team:second"}
    assert any("team:second" in r.message and "Backfill" in r.message for r in caplog.records)
