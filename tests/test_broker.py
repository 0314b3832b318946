import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from kafka_support import SESSION_TIMEOUT_MS
from tokenmeter import topics


def test_broker_has_topics_and_round_trips(kafka_bootstrap):
    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topics.DEADLETTER, b'{"probe": 1}', key=b"k")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topics.DEADLETTER, bootstrap_servers=kafka_bootstrap,
                                    auto_offset_reset="earliest", group_id="probe",
                                    session_timeout_ms=SESSION_TIMEOUT_MS, heartbeat_interval_ms=1000)
        await consumer.start()
        try:
            listed = await consumer.topics()
            batch = await consumer.getmany(timeout_ms=5000)
        finally:
            await consumer.stop()
        return listed, [m.value for msgs in batch.values() for m in msgs]

    listed, values = asyncio.run(run())
    assert {s.name for s in topics.topic_specs()} <= listed
    assert b'{"probe": 1}' in values


def test_broker_command_serves_topics_and_stops_on_sigterm(tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from selenium.webdriver.support.ui import WebDriverWait

    from tokenmeter.settings import free_port

    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]),
               TOKENMETER_EMBEDDED_BROKER_PORT=str(port))
    log = tmp_path / "broker.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app", "broker"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        WebDriverWait(None, 30, poll_frequency=0.2).until(lambda _: "broker ready" in log.read_text())
        assert "Unable connect" not in log.read_text()  # readiness is checked before Kafka clients connect
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0  # the tansu child is gone too


def test_topic_creation_against_nothing_listening_says_so():
    """walk20: `up` with TOKENMETER_KAFKA_BOOTSTRAP at a dead address ended in "... within 20 s: None"."""
    import socket

    import pytest

    from app.broker import BrokerError, ensure_topics

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(BrokerError) as err:
        ensure_topics(dead, 1, timeout=0.3)
    assert "nothing accepts connections" in str(err.value) and "TOKENMETER_KAFKA_BOOTSTRAP" in str(err.value)
    assert "None" not in str(err.value)


def test_topics_command_creates_the_source_topics_it_is_given(kafka_bootstrap):
    """walk30: `tokenmeter topics --source-topic otlp_spans` creates a bridge's source topic beside tokenmeter's own,
    for clusters that do not auto-create topics (docker-compose.yml's); run twice, it is still idempotent."""
    import uuid

    from click.testing import CliRunner

    from app.cli import main

    name = f"otlp_spans-{uuid.uuid4().hex[:8]}"
    env = {"TOKENMETER_KAFKA_BOOTSTRAP": kafka_bootstrap, "TOKENMETER_PARTITIONS": "3"}
    for _ in range(2):
        result = CliRunner().invoke(main, ["topics", "--source-topic", name], env=env)
        assert result.exit_code == 0, result.output

    [topic] = _described(kafka_bootstrap, name)
    assert topic["error_code"] == 0 and len(topic["partitions"]) == 3, topic


def test_topics_are_replicated_as_far_as_the_cluster_allows():
    """walk30: `tokenmeter topics` ("for production clusters") created every topic with replication factor 1, so on
    a three-broker cluster one broker's loss lost usage, holds and budget state although every producer waits for
    acks=all, and production.md promises that a real cluster keeps them. Now three replicas where the cluster has
    three brokers or more (and min.insync.replicas 2, so acks=all means two copies), else one per broker."""
    from app.broker import topic_replication

    assert topic_replication(1) == (1, {})
    assert topic_replication(2) == (2, {})
    assert topic_replication(3) == (3, {"min.insync.replicas": "2"})
    assert topic_replication(9) == (3, {"min.insync.replicas": "2"})


def test_topics_on_a_single_broker_have_one_replica(kafka_bootstrap):
    """The embedded broker (one node) still gets topics it can hold: one replica, in sync."""
    import uuid

    from app.broker import ensure_topics

    name = f"walk30-replicas-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_bootstrap, 2, source_topics=(name,))

    [topic] = _described(kafka_bootstrap, name)
    assert [len(p["replicas"]) for p in topic["partitions"]] == [1, 1], topic


def _described(bootstrap: str, name: str) -> list[dict]:
    """The broker's own description of topic `name` (partitions, replicas), as an operator's admin client reads it."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def described():
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return await admin.describe_topics([name])
        finally:
            await admin.close()

    return asyncio.run(described())
