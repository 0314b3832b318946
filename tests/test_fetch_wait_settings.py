"""Every consumer that follows or reads a topic takes its fetch wait (`fetch_max_wait_ms`) from the process's one
settings object, whatever it was built from (a YAML file named by TOKENMETER_CONFIG here), never by re-reading the
environment when the consumer is made.

The helpers did re-read it (`tokenmeter.settings.fetch_wait()` -> `load_settings()`): the collectors' read-back
(collectors/delivery.py), the topic readers (budgets, enforcement, owners, holds, alert deliveries), the budgets'
recent-records reads, the offset-gap re-reads and the anomaly acks. So a file edited for the next start (or a
Settings built with overrides) reached those consumers and not the process's own (re-parsing and re-validating the
whole file each time; an invalid edit would raise in a running service's reconnect).

A real broker of this file's own (the budget rebuild below would otherwise publish into other tests' budgets); the
consumers' constructor arguments are recorded by wrapping aiokafka's `AIOKafkaConsumer.__init__` (not our code)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import orjson
import pytest

from app.broker import embedded_broker
from tokenmeter import topics
from tokenmeter.settings import free_port, load_settings

YAML_WAIT_MS = 777  # in the file when the process starts
EDITED_WAIT_MS = 5  # in the file afterwards


@pytest.fixture(scope="module")
def own_broker():
    with embedded_broker("127.0.0.1", free_port(), partitions=2) as bootstrap:
        yield bootstrap


@pytest.fixture
def settings(tmp_path, monkeypatch, own_broker):
    """The process's settings from a YAML file; then the file is edited (for the next start)."""
    config = tmp_path / "tokenmeter.yaml"
    config.write_text(f"fetch_max_wait_ms: {YAML_WAIT_MS}\nkafka_bootstrap: '{own_broker}'\npartitions: 2\n")
    for name in ("TOKENMETER_FETCH_MAX_WAIT_MS", "TOKENMETER_KAFKA_BOOTSTRAP", "TOKENMETER_PARTITIONS"):
        monkeypatch.delenv(name, raising=False)  # the environment would win over the file
    monkeypatch.setenv("TOKENMETER_CONFIG", str(config))
    loaded = load_settings(data_dir=tmp_path / "data")
    assert loaded.fetch_max_wait_ms == YAML_WAIT_MS and loaded.bootstrap_servers == own_broker
    config.write_text(f"fetch_max_wait_ms: {EDITED_WAIT_MS}\nkafka_bootstrap: '{own_broker}'\npartitions: 2\n")
    return loaded


@pytest.fixture
def consumer_waits(monkeypatch):
    """`fetch_max_wait_ms` of every aiokafka consumer made during the test (None: not given, aiokafka's 500)."""
    from aiokafka import AIOKafkaConsumer

    seen: list[int | None] = []
    original = AIOKafkaConsumer.__init__

    def init(self, *topic_names, **kwargs):
        seen.append(kwargs.get("fetch_max_wait_ms"))
        original(self, *topic_names, **kwargs)

    monkeypatch.setattr(AIOKafkaConsumer, "__init__", init)
    return seen


def test_the_budget_rebuild_reads_with_the_settings_it_was_given(settings, consumer_waits):
    from streams.budgets.rebuild import rebuild

    assert rebuild(settings) == []  # no budgets on this broker: it reads the budgets and their states, and stops
    assert len(consumer_waits) == 2 and set(consumer_waits) == {YAML_WAIT_MS}, consumer_waits


def test_the_alerts_command_reads_with_the_settings_it_was_given(settings, consumer_waits):
    from streams.alerts.cli import topic_alerts

    assert topic_alerts(settings) == []
    assert len(consumer_waits) == 2 and set(consumer_waits) == {YAML_WAIT_MS}, consumer_waits


def test_the_collectors_read_back_uses_the_settings_fetch_wait(settings, consumer_waits, tmp_path):
    from collectors.file_tail import FileTailer
    from collectors.sink import KafkaSink

    event = {"ts": "2026-11-01T08:00:00Z", "source": "sdk", "provider": "openai", "model": "gpt-4o",
             "attribution": {"team": "fetch-wait"}, "usage": {"input_tokens": 100, "output_tokens": 20}}
    log_file = tmp_path / "gateway.log"
    log_file.write_bytes(b"".join(orjson.dumps({"event_id": f"fw-{i}", **event}) + b"\n" for i in range(3)))
    sink = KafkaSink(settings.bootstrap_servers, "collect:file")
    tailer = FileTailer(log_file, "canonical", tmp_path / "cp.json", sink, exit_at_eof=True,
                        fetch_wait=settings.fetch_wait)

    async def run() -> set[str]:
        try:
            positions = await tailer.guard.positions()
            await tailer.run(asyncio.Event())  # takes positions, publishes, checkpoints
            written = await tailer.guard.written_since(positions, lambda letter: letter.get("payload"))
            return written.event_ids
        finally:
            await tailer.guard.stop()
            await sink.stop()

    assert asyncio.run(run()) == {f"fw-{i}" for i in range(3)}
    assert len(consumer_waits) >= 2 and set(consumer_waits) == {YAML_WAIT_MS}, consumer_waits


def test_the_topic_readers_use_the_fetch_wait_they_are_given(settings, consumer_waits):
    from aiokafka import AIOKafkaProducer

    from streams.alerts.state import load_delivery_state
    from streams.anomalies.acks import read_mutes
    from streams.budgets.recent import recent_records, records_since
    from streams.budgets.store import load_budgets
    from streams.gaps import OffsetGaps
    from streams.topic_reader import follow_compacted, read_compacted

    bootstrap, wait = settings.bootstrap_servers, settings.fetch_wait

    async def run() -> None:
        await read_compacted(bootstrap, topics.BUDGET_STATE, fetch_wait=wait)
        ready, stop = asyncio.Event(), asyncio.Event()
        follow = asyncio.create_task(follow_compacted(bootstrap, topics.BUDGET_OWNERS, lambda *_: None, stop,
                                                      ready, fetch_wait=wait))
        await asyncio.wait_for(ready.wait(), 30)
        stop.set()
        await asyncio.wait_for(follow, 30)
        await recent_records(bootstrap, topics.BUDGET_SPEND, 0, 10, fetch_wait=wait)
        await records_since(bootstrap, topics.BUDGET_SPEND, 0, datetime.now(timezone.utc), fetch_wait=wait)
        await load_delivery_state(bootstrap, topics.ALERT_DELIVERIES, fetch_wait=wait)
        await read_mutes(bootstrap, fetch_wait=wait)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            sent = await producer.send_and_wait(topics.USAGE, b"{}", partition=0)
        finally:
            await producer.stop()
        gaps = OffsetGaps(topics.USAGE, fetch_wait=wait)
        gaps.expected[0] = sent.offset
        assert len(await gaps.missing_records(bootstrap, [(0, sent.offset + 1)])) == 1  # "skipped": read again

    asyncio.run(run())
    load_budgets(bootstrap, fetch_wait=wait)
    assert len(consumer_waits) >= 8 and set(consumer_waits) == {YAML_WAIT_MS}, consumer_waits
