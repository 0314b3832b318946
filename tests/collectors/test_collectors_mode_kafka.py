"""`tokenmeter collect kafka`: a gateway topic (Kong kafka-log arrays, OTel collector otlp_proto) bridged into
tokenmeter.usage by a subprocess; offsets are committed so a second run re-reads nothing."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from kafka_support import create_topic, produce_values
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, TracesData
from test_collectors_mode_support import cli_env, count_ids, read_topic, start_cli, stop_process

from tokenmeter import topics

pytestmark = pytest.mark.slow(seconds=10)  # rough seconds: longest files first (tests/suite_order.py)


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    async def run() -> None:
        await create_topic(bootstrap, topic, partitions=2)
        await produce_values(bootstrap, topic, values, keyed=True)

    asyncio.run(run())


def _committed(bootstrap: str, topic: str, group: str) -> int:
    async def run() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
        await consumer.start()
        try:
            return sum([await consumer.committed(TopicPartition(topic, p)) or 0 for p in (0, 1)])
        finally:
            await consumer.stop()

    return asyncio.run(run())


def _bridge(bootstrap, tmp_path, topic, dialect, group, name):
    proc = start_cli(["kafka", "--topic", topic, "--dialect", dialect, "--group", group, "--from-beginning",
                      "--exit-when-idle", "3"], cli_env(bootstrap, tmp_path), tmp_path / f"{name}.log")
    try:
        assert proc.wait(90) == 0, (tmp_path / f"{name}.log").read_text()
    finally:
        stop_process(proc)


def test_kong_kafka_log_arrays(kafka_bootstrap, tmp_path, payload):
    topic, group = f"kong-log-{uuid.uuid4().hex[:8]}", f"bridge-{uuid.uuid4().hex}"
    ids, values = [], []
    for _ in range(3):  # kafka-log with max_batch_size > 1: a JSON array of entries per message
        batch = []
        for _ in range(4):
            entry = payload("kong_openai")
            entry["request"]["id"] = uuid.uuid4().hex
            ids.append(entry["request"]["id"])
            batch.append(entry)
        values.append(orjson.dumps(batch))
    marker = uuid.uuid4().hex
    values.append(orjson.dumps({"ai": {"proxy": {"usage": {"prompt_tokens": -3}}}, "marker": marker}))
    _produce(kafka_bootstrap, topic, values)

    _bridge(kafka_bootstrap, tmp_path, topic, "kong", group, "run1")
    assert _committed(kafka_bootstrap, topic, group) == len(values)
    _bridge(kafka_bootstrap, tmp_path, topic, "kong", group, "run2")  # committed: nothing re-read

    counts = count_ids(kafka_bootstrap, topics.USAGE, set(ids))
    assert set(counts) == set(ids) and set(counts.values()) == {1}
    letters = read_topic(kafka_bootstrap, topics.DEADLETTER,
                         lambda vs: any(isinstance(v, dict) and marker in str(v.get("payload")) for v in vs))
    [letter] = [v for v in letters if isinstance(v, dict) and marker in str(v.get("payload"))]
    assert letter["stage"] == "collect:kafka" and letter["topic"] == topic and letter["reason"]


def test_otel_collector_otlp_proto(kafka_bootstrap, tmp_path):
    topic, group = f"otlp_spans-{uuid.uuid4().hex[:8]}", f"bridge-{uuid.uuid4().hex}"
    trace_id = uuid.uuid4().hex

    def kv(key, **value):
        return KeyValue(key=key, value=AnyValue(**value))

    spans = [Span(trace_id=bytes.fromhex(trace_id), span_id=bytes([i + 1]) * 8, name="chat",
                  start_time_unix_nano=1730419200000000000, end_time_unix_nano=1730419200500000000,
                  attributes=[kv("gen_ai.provider.name", string_value="openai"),
                              kv("gen_ai.request.model", string_value="gpt-4o"),
                              kv("gen_ai.usage.input_tokens", int_value=10 + i),
                              kv("gen_ai.usage.output_tokens", int_value=5)]) for i in range(3)]
    data = TracesData(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])
    _produce(kafka_bootstrap, topic, [data.SerializeToString()])

    _bridge(kafka_bootstrap, tmp_path, topic, "otel", group, "run1")
    ids = {f"{trace_id}:{(bytes([i + 1]) * 8).hex()}" for i in range(3)}
    counts = count_ids(kafka_bootstrap, topics.USAGE, ids)
    assert set(counts) == ids and set(counts.values()) == {1}
