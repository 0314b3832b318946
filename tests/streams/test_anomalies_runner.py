"""The anomaly runner against the real embedded broker: priced events in, anomaly and alert records out, bad
messages dead-lettered, mutes honoured, state restored after a restart without re-alerting."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.anomalies.acks import publish_ack
from streams.anomalies.runner import Detector, state_path
from tests.streams.anomaly_traffic import event
from tokenmeter.kafka_topics import topic_partitions
from tokenmeter.settings import load_settings
from tokenmeter.topics import ALERTS, ANOMALIES, DEADLETTER, PRICED

pytestmark = pytest.mark.slow(seconds=3)  # rough seconds: longest files first (tests/suite_order.py)

NOTIFY = ["webhook=http://127.0.0.1:9/anomaly-hook"]  # the detector's own routes: never copied onto the topic


def no_route_on_topic(alert: dict) -> bool:
    """leak21: the alerts topic is readable by its every client; a route target (a Slack URL, a PagerDuty routing
    key) set on the detector used to be copied into each alert's `notify`. The dispatcher's own routes apply."""
    return alert["notify"] == [] and b"anomaly-hook" not in orjson.dumps(alert)


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value=value, key=b"team:test")
    finally:
        await producer.stop()


async def wait_for(bootstrap: str, topic: str, done, timeout: float = 60.0) -> list[dict]:
    """Read `topic` from the beginning until done(records) holds (records = decoded values); poll with a deadline."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = await topic_partitions(bootstrap, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen: list[dict] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(*tps, timeout_ms=300)).values():
                for record in records:
                    try:
                        value = orjson.loads(record.value)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(value, dict):  # other tests leave hostile records on this shared broker
                        seen.append(value)
            if done(seen):
                return seen
        raise AssertionError(f"timed out waiting on {topic}; saw {len(seen)} records")
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    """This file produces hostile records to tokenmeter's topics: they stay on a broker of its own."""
    return own_broker


def unpriced_batches(model: str, minutes_ago: int, buckets: int = 3) -> list[bytes]:
    start = int((datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)).timestamp()) // 300 * 300
    return [orjson.dumps([event(b + i * 20, "k-" + model, team="runner-test", model=model, pricing="unpriced", n=i)
                          for i in range(10)]) for b in range(start, start + buckets * 300, 300)]


class Running:
    """A Detector in a task, stopped (and awaited) even when the test fails."""

    def __init__(self, settings, group: str):
        # every event is on the topic before the detector starts: the 10 s trail (late keys) is not what these tests
        # are about and was most of their wait for a closed anomaly (test_anomalies_substreams.py tests the trail)
        self.detector = Detector(settings, group_id=group, snapshot_every_s=0.5, trail_s=1.0)
        self.stop = asyncio.Event()

    async def __aenter__(self):
        self.task = asyncio.create_task(self.detector.run(self.stop))
        return self.detector

    async def __aexit__(self, *exc):
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


def of(model: str):
    return lambda r: r.get("scope_value") == model or (r.get("scope") or {}).get("model") == model


@pytest.mark.timeout(120)
def test_runner_publishes_anomalies_alerts_and_restores(kafka_bootstrap, tmp_path):
    settings = load_settings(kafka_bootstrap=kafka_bootstrap, data_dir=tmp_path, anomaly_notify=NOTIFY)
    group = f"anomalies-test-{uuid.uuid4().hex[:8]}"
    m1 = f"acme-{uuid.uuid4().hex[:6]}"

    async def scenario():
        await produce(kafka_bootstrap, PRICED, unpriced_batches(m1, 60) + [b"not json", b'"a string"'])
        async with Running(settings, group) as detector:
            anomalies = await wait_for(kafka_bootstrap, ANOMALIES,
                                       lambda rs: any(of(m1)(r) and r["status"] == "closed" for r in rs))
            mine = [r for r in anomalies if of(m1)(r)]
            assert {r["kind"] for r in mine} == {"unpriced_usage"} and len({r["id"] for r in mine}) == 1
            assert mine[0]["status"] == "open" and mine[0]["scope_dim"] == "model"
            alerts = await wait_for(kafka_bootstrap, ALERTS, lambda rs: len([a for a in rs if of(m1)(a)]) >= 2)
            mine_alerts = [a for a in alerts if of(m1)(a)]
            assert sorted(a["action"] for a in mine_alerts) == ["resolve", "trigger"]  # keyed by alert id: any order
            assert {a["dedup_key"] for a in mine_alerts} == {mine[0]["id"]}
            assert mine_alerts[0]["source"] == "anomaly" and all(map(no_route_on_topic, mine_alerts))
            assert mine_alerts[0]["details"]["anomaly_id"] == mine[0]["id"]
            dead = await wait_for(kafka_bootstrap, DEADLETTER,
                                  lambda rs: len([d for d in rs if d.get("stage") == "anomalies"]) >= 2)
            assert any("not json" in d["payload"] for d in dead if d.get("stage") == "anomalies")
            assert detector.counters["bad_messages"] == 2
        assert state_path(settings).exists()

        # Restart: the saved engine and offsets are restored, so nothing is read or alerted again.
        events_before = detector.engine.stats["events"]
        async with Running(settings, group) as detector:
            assert detector.offsets and detector.engine.stats["events"] == events_before
            await asyncio.sleep(1.5)  # a few polls: nothing new for this group
            alerts = await wait_for(kafka_bootstrap, ALERTS, lambda rs: True, timeout=2)
            assert sorted(a["action"] for a in alerts if of(m1)(a)) == ["resolve", "trigger"]
            assert detector.engine.stats["events"] == events_before

    asyncio.run(scenario())


@pytest.mark.timeout(120)
def test_muted_scope_is_detected_but_not_alerted(kafka_bootstrap, tmp_path):
    settings = load_settings(kafka_bootstrap=kafka_bootstrap, data_dir=tmp_path, anomaly_notify=NOTIFY)
    muted, loud = f"acme-{uuid.uuid4().hex[:6]}", f"acme-{uuid.uuid4().hex[:6]}"

    async def scenario():
        until = datetime.now(timezone.utc) + timedelta(hours=1)
        await publish_ack(kafka_bootstrap, {"anomaly_id": "anomaly-earlier", "kind": "unpriced_usage",
                                            "scope_dim": "model", "scope_value": muted, "action": "mute",
                                            "by": "alice", "note": "known internal model", "mute_until": until})
        await produce(kafka_bootstrap, PRICED, unpriced_batches(muted, 50) + unpriced_batches(loud, 50))
        async with Running(settings, f"anomalies-test-{uuid.uuid4().hex[:8]}") as detector:
            await wait_for(kafka_bootstrap, ANOMALIES, lambda rs: any(of(muted)(r) and r["status"] == "closed" for r in rs))
            await wait_for(kafka_bootstrap, ALERTS, lambda rs: any(of(loud)(a) and a["action"] == "resolve" for a in rs))
            alerts = await wait_for(kafka_bootstrap, ALERTS, lambda rs: True, timeout=3)
            assert not [a for a in alerts if of(muted)(a)]
            assert detector.counters["alerts_muted"] >= 2

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_ack_records_round_trip(kafka_bootstrap):
    from streams.anomalies.acks import read_mutes
    from tokenmeter.records import RecordError

    scope = f"team-{uuid.uuid4().hex[:6]}"
    now = datetime.now(timezone.utc)

    async def scenario():
        base = {"anomaly_id": "anomaly-x", "kind": "spend_rate", "scope_dim": "team", "scope_value": scope, "by": "bob"}
        await publish_ack(kafka_bootstrap, {**base, "action": "mute", "mute_until": now + timedelta(hours=2)})
        table = await read_mutes(kafka_bootstrap)
        assert table.muted("spend_rate", "team", scope, now) and not table.muted("token_rate", "team", scope, now)
        assert not table.muted("spend_rate", "team", scope, now + timedelta(hours=3))
        await publish_ack(kafka_bootstrap, {**base, "action": "unmute"})
        assert not (await read_mutes(kafka_bootstrap)).muted("spend_rate", "team", scope, now)
        with pytest.raises(RecordError, match="mute needs mute_until"):
            await publish_ack(kafka_bootstrap, {**base, "action": "mute"})

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_publish_ack_sync_for_dash_callbacks(kafka_bootstrap):
    from streams.anomalies.acks import publish_ack_sync, read_mutes

    scope = f"key-{uuid.uuid4().hex[:6]}"
    until = datetime.now(timezone.utc) + timedelta(hours=1)
    publish_ack_sync(kafka_bootstrap, {"anomaly_id": "anomaly-y", "kind": "request_burst", "scope_dim": "api_key",
                                       "scope_value": scope, "action": "mute", "by": "carol", "mute_until": until})
    table = asyncio.run(read_mutes(kafka_bootstrap))
    assert table.muted("request_burst", "api_key", scope, datetime.now(timezone.utc))


def test_the_detector_reads_arrow_priced_messages_as_their_json():
    """TOKENMETER_PRICED_FORMAT=arrow (issue 14, loader11): an Arrow message decodes to the dicts its JSON decodes
    to (tokenmeter.priced_wire, the topic's one decode); a bad one is refused (a dead letter) like bad JSON."""
    from streams.anomalies.runner import decode
    from tokenmeter import priced_arrow
    from tokenmeter.priced_wire import ARROW_HEADERS, FORMAT_HEADER

    events = [event(1_800_000_000 + i, "k-arrow", team="runner-test", model="m", pricing="priced", n=i)
              for i in range(5)]
    events = orjson.loads(orjson.dumps(events))
    arrow = priced_arrow.write_stream(priced_arrow.from_events(events))
    assert decode(arrow, ARROW_HEADERS) == decode(orjson.dumps(events)) == events
    for value, headers in ((arrow[:40], ARROW_HEADERS), (orjson.dumps(events), ARROW_HEADERS),
                           (arrow, [(FORMAT_HEADER, b"avro")]), (arrow, None)):
        with pytest.raises(ValueError):
            decode(value, headers)
    with pytest.raises(ValueError, match="got str$"):  # JSON as before
        decode(b'"a string"')
