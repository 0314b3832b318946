"""A broker restarted by the supervisor loses nothing it acknowledged: producers that keep sending through the
crash (as collectors do) must not reach the new broker before its topics exist, because tansu acknowledges a
produce to a topic it does not have and then loses those records (app.broker_gate)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

import app.supervisor as supervisor_module
from tokenmeter import topics
from tokenmeter.settings import free_port, load_settings
from app.supervisor import Supervisor

SLOW_TOPIC_CREATION_S = 1.0  # a loaded machine: the soak saw a batch acknowledged 1.0 s after the broker SIGKILL


async def _produce_until(bootstrap: str, stop: threading.Event, acked: dict[str, float], tag: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=3000, linger_ms=5)
    await producer.start()
    try:
        seq = 0
        while not stop.is_set():
            value = f"{tag}-{seq}"
            while not stop.is_set():  # retry the same record until acknowledged, like a collector
                try:
                    await producer.send_and_wait(topics.USAGE, value.encode())
                    acked[value] = time.time()
                    break
                except Exception:  # noqa: BLE001 - broker down or refusing: retry
                    await asyncio.sleep(0.05)
            seq += 1
            await asyncio.sleep(0.01)
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, partitions: int) -> set[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topics.USAGE, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen: set[str] = set()
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 1.5:
            batch = await consumer.getmany(*tps, timeout_ms=300)
            if any(batch.values()):
                idle_since = time.monotonic()
            seen.update(m.value.decode() for records in batch.values() for m in records)
        return seen
    finally:
        await consumer.stop()


@pytest.mark.slow
def test_nothing_acknowledged_by_a_restarted_broker_is_lost(tmp_path, monkeypatch):
    settings = load_settings(data_dir=tmp_path / "data", embedded_broker_port=free_port(), partitions=4)
    (tmp_path / "data").mkdir()
    slow = {"on": False}
    for name in ("ensure_topics", "create_topics_direct"):
        real = getattr(supervisor_module, name, None)
        if real is None:
            continue

        def delayed(*args, _real=real, **kwargs):
            if slow["on"]:
                time.sleep(SLOW_TOPIC_CREATION_S)
            return _real(*args, **kwargs)

        monkeypatch.setattr(supervisor_module, name, delayed)
    sup = Supervisor(settings, demo=False, echo=lambda line: None)
    sup.log_dir.mkdir(parents=True)
    stop = threading.Event()
    acked: dict[str, float] = {}
    threads = []
    try:
        broker = sup.spawn("broker", None, uses_kafka=False)
        sup.prepare_broker()
        bootstrap = settings.bootstrap_servers
        threads = [threading.Thread(target=asyncio.run, args=(_produce_until(bootstrap, stop, acked, t),))
                   for t in "abc"]
        for thread in threads:
            thread.start()
        while len(acked) < 60:
            time.sleep(0.05)
        slow["on"] = True
        broker.proc.kill()
        broker.proc.wait()
        killed_at = time.time()
        deadline = time.monotonic() + 60
        while not (sup.broker_restarts and broker.alive()):
            assert time.monotonic() < deadline, "broker not restarted"
            sup.tend()
            time.sleep(0.05)
        count = len(acked)
        while len(acked) < count + 60:  # traffic flows again
            assert time.monotonic() < deadline, "no traffic after the broker restart"
            time.sleep(0.05)
        stop.set()
        for thread in threads:
            thread.join(30)
        after_kill = {v for v, at in acked.items() if at > killed_at}
        stored = asyncio.run(_read_all(bootstrap, settings.partitions))
        lost = sorted(after_kill - stored)
        assert not lost, f"{len(lost)} of {len(after_kill)} records acknowledged by the new broker are gone: {lost[:10]}"
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        sup.stop()
