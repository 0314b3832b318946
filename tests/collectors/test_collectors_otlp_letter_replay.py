"""An OTLP protobuf record a collector dead-lettered is replayed: the letter keeps the bytes as "hex:..." (JSON
carries text) with the size and SHA-256 of the bytes themselves, and `deadletters replay` decodes the hex back
to those bytes, checks the hash against them and collects them again. Before, the size and hash were those of
the hex text and replay handed the text "hex:0a..." to the collectors, which refused it as "binary record is
neither JSON nor OTLP protobuf TracesData": an OTLP letter could never be replayed.

The real path: `tokenmeter collect kafka` (a subprocess, run with a one-minute future window, so spans an hour
ahead are refused, as from a gateway whose clock is ahead) on the real broker, then `deadletters replay` with
the default window (the fix being replayed for)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from click.testing import CliRunner
from kafka_support import create_topic, produce_values
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, TracesData
from test_collectors_mode_support import cli_env, start_cli, stop_process

from app.cli import main
from streams.topic_reader import read_topic
from tokenmeter import deadletters, topics

pytestmark = pytest.mark.slow(seconds=20)  # rough seconds: longest files first (tests/suite_order.py)


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    """Letters this file replays by time alone stay on a broker of its own."""
    return own_broker


def _traces(trace_id: str, start: datetime) -> bytes:
    def kv(key: str, **value) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(**value))

    nanos = int(start.timestamp()) * 1_000_000_000
    spans = [Span(trace_id=bytes.fromhex(trace_id), span_id=bytes([i + 1]) * 8, name="chat",
                  start_time_unix_nano=nanos, end_time_unix_nano=nanos + 500_000_000,
                  attributes=[kv("gen_ai.provider.name", string_value="openai"),
                              kv("gen_ai.request.model", string_value="gpt-4o"),
                              kv("gen_ai.usage.input_tokens", int_value=10 + i),
                              kv("gen_ai.usage.output_tokens", int_value=5)]) for i in range(2)]
    return TracesData(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]).SerializeToString()


def _records(bootstrap: str, topic: str) -> list:
    return asyncio.run(read_topic(bootstrap, topic))


def test_an_otlp_protobuf_letter_of_a_collector_is_replayed_from_its_hex(kafka_bootstrap, tmp_path):
    topic, group, trace_id = f"otlp-{uuid.uuid4().hex[:8]}", f"bridge-{uuid.uuid4().hex}", uuid.uuid4().hex
    since = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()
    data = _traces(trace_id, datetime.now(timezone.utc) + timedelta(hours=1))

    async def produce() -> None:
        await create_topic(kafka_bootstrap, topic, partitions=1)
        await produce_values(kafka_bootstrap, topic, [data], keyed=True)

    asyncio.run(produce())
    env = cli_env(kafka_bootstrap, tmp_path, TOKENMETER_MAX_EVENT_FUTURE_SECONDS="60")
    proc = start_cli(["kafka", "--topic", topic, "--dialect", "otel", "--group", group, "--from-beginning",
                      "--exit-when-idle", "3"], env, tmp_path / "bridge.log")
    try:
        assert proc.wait(90) == 0, (tmp_path / "bridge.log").read_text()
    finally:
        stop_process(proc)
    [letter] = [x for x in (orjson.loads(r.value) for r in _records(kafka_bootstrap, topics.DEADLETTER))
                if x.get("topic") == topic]
    assert "in the future" in letter["reason"] and letter["stage"] == "collect:kafka"
    assert letter["payload"] == deadletters.HEX_PREFIX + data.hex()  # the record, as JSON can carry it
    assert (letter["payload_bytes"], letter["payload_sha256"]) == (len(data), hashlib.sha256(data).hexdigest())

    cli = {"TOKENMETER_KAFKA_BOOTSTRAP": kafka_bootstrap, "TOKENMETER_DATA_DIR": str(tmp_path / "replay")}
    out = CliRunner().invoke(main, ["deadletters", "replay", "--stage", "collect:kafka", "--since", since,
                                    "--format", "json"], env=cli, catch_exceptions=False)
    done = orjson.loads(out.stdout)
    assert (done["letters"], done["replayed"], done["refused"]) == (1, 2, {}), out.output
    sent = [orjson.loads(r.value) for r in _records(kafka_bootstrap, topics.USAGE)
            if dict(r.headers).get(deadletters.REPLAYED_FROM_HEADER)]
    assert sorted(event["event_id"] for event in sent) == [f"{trace_id}:{(bytes([i]) * 8).hex()}" for i in (1, 2)]


def test_a_letter_whose_hex_was_changed_is_refused_and_plain_text_is_not_read_as_hex():
    from app.deadletters_read import decode
    from app.deadletters_replay import REFUSED_HASH, whole_payload

    data = _traces(uuid.uuid4().hex, datetime.now(timezone.utc))
    letter = deadletters.binary_dead_letter("1 of 2 spans failed", data, "collect:kafka", topic="t", partition=0,
                                            offset=1, dialect="otel")

    def judged(changed: dict):
        return whole_payload(decode(0, 1, 0, deadletters.encode({**letter, **changed})))

    assert judged({}) == (data, data)
    assert judged({"payload": letter["payload"][:-2] + "00"}) == REFUSED_HASH
    assert judged({"payload": "hex:zz"}) == REFUSED_HASH
    text = "hex:7b7d"  # a text record that happens to start like one: its letter hashes the text, kept as text
    plain = deadletters.dead_letter("not a usage record", text, "collect:file", file="/x", line=1)
    assert whole_payload(decode(0, 2, 0, deadletters.encode(plain))) == (text.encode(), text)


def test_a_binary_record_holding_a_credential_is_kept_redacted_never_as_hex():
    """Protobuf keeps a string attribute's bytes as they are: hex of them would carry the secret out unredacted."""
    secret = "sk-proj-EndUserSecret0123456789"
    spans = [Span(trace_id=bytes(16), span_id=bytes(8), name="chat", attributes=[KeyValue(
        key="http.request.header.authorization", value=AnyValue(string_value=f"Bearer {secret}"))])]
    data = TracesData(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]).SerializeToString()
    letter = deadletters.binary_dead_letter("1 of 1 spans failed", data, "collect:http", dialect="otel")
    encoded = deadletters.encode(letter)
    assert secret.encode() not in encoded and secret.encode().hex().encode() not in encoded
    assert letter["payload_redacted"] >= 1 and not letter["payload"].startswith(deadletters.HEX_PREFIX)
    assert (letter["payload_bytes"], letter["payload_sha256"]) == (len(data), hashlib.sha256(data).hexdigest())


def test_an_otlp_header_attribute_named_like_a_credential_is_found_by_its_name():
    """A secret that is not token-shaped shows only by its attribute's name, which the protobuf bytes read as text
    cannot pair with it: the collectors' letter reads the record as OTLP/JSON first."""
    from collectors.sink import KafkaSink

    spans = [Span(trace_id=bytes(16), span_id=bytes(8), name="chat", attributes=[KeyValue(
        key="http.request.header.x-api-key", value=AnyValue(string_value="plainsecretvalue123"))])]
    data = TracesData(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]).SerializeToString()
    letter = KafkaSink("127.0.0.1:9", "collect:kafka").binary_letter("1 of 1 spans failed", data, topic="t")
    encoded = deadletters.encode(letter)
    assert b"plainsecretvalue123" not in encoded and b"plainsecretvalue123".hex().encode() not in encoded
    assert letter["payload_redacted"] == 1 and letter["payload"]["resourceSpans"]  # readable, redacted
    assert (letter["payload_bytes"], letter["payload_sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert KafkaSink("127.0.0.1:9", "collect:kafka").binary_letter("x", b"\xff\x00garbage")["payload"] == \
        deadletters.HEX_PREFIX + b"\xff\x00garbage".hex()  # not OTLP, nothing named: kept as hex
