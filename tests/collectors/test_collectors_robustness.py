"""Bad input gives a DialectError naming a field, never another exception: every field of every reference
payload is replaced in turn by values of the wrong type."""

from __future__ import annotations

import copy
from typing import Any, Iterator

import orjson
import pytest

from collectors import DialectError, parse_record
from collectors.decode import parse_sse

NAMES = ["kong_openai", "kong_legacy", "litellm_success", "apisix_entry", "otlp_traces", "cloudevent_openmeter",
         "openai_chat", "anthropic_message", "gemini_response", "openai_stream", "anthropic_stream"]
WRONG_VALUES = [None, "x", -1, 1.5, True, [], {}, [1], {"a": 1}, "12"]


def paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield prefix + (key,)
            yield from paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield prefix + (index,)
            yield from paths(child, prefix + (index,))


def replaced(record: Any, path: tuple, new: Any) -> Any:
    record = copy.deepcopy(record)
    target = record
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return record


@pytest.mark.parametrize("name", NAMES)
def test_wrong_types_never_crash(payload, name):
    record = payload(name)
    if isinstance(record, str):
        record = parse_sse(record)
    for dialect in (None, "canonical"):
        for path in paths(record):
            for value in WRONG_VALUES:
                try:
                    events = parse_record(replaced(record, path, value), dialect=dialect)
                except DialectError as exc:
                    assert str(exc)
                    continue
                for event in events:  # whatever parsed is a valid event
                    type(event).model_validate(event.model_dump())


@pytest.mark.parametrize("dialect, name, id_path", [("kong", "kong_openai", ("request", "id")),
                                                    ("litellm", "litellm_success", ("id",)),
                                                    ("apisix", "apisix_entry", ("request_id",))])
def test_a_record_nested_too_deeply_to_derive_its_id_is_a_dead_letter_not_a_crash(payload, dialect, name, id_path):
    """A record that names no id gets one hashed from its JSON (derive_event_id); orjson reads JSON nested up to
    1024 levels but writes only 254, so a record with a deeper value anywhere (found by the declared-shape corpus,
    tests/collectors/test_declared_shapes.py) raised TypeError ("Recursion limit reached") and stopped the Kafka
    bridge. It is a dead letter naming the cause."""
    from aiokafka.structs import TopicPartition

    from collectors.equivalence import Message
    from collectors.kafka_bridge import KafkaBridge
    from collectors.sink import KafkaSink

    record = replaced(payload(name), id_path, None)
    for block in ("request", "response"):  # Kong's and APISIX's other places of the request id
        record.get(block, {}).get("headers", {}).pop("x-kong-request-id" if dialect == "kong" else "x-request-id", None)
    raw = orjson.dumps(record)[:-1] + b',"deep":' + b"[" * 600 + b"]" * 600 + b"}"
    bridge = KafkaBridge("127.0.0.1:9", "source", dialect, "group", KafkaSink("127.0.0.1:9", "collect-kafka"))
    events, letters = bridge._convert({TopicPartition("source", 0): [Message(0, raw)]})
    assert events == [] and len(letters) == 1
    assert "nests too deeply to derive one" in letters[0]["reason"], letters[0]["reason"]


def test_an_otel_span_nested_too_deeply_to_derive_its_id_is_a_dead_letter_not_a_crash(payload):
    """The OTel dialect's span without trace and span ids gets its id hashed from the span's JSON, as the
    gateways' records above: a span whose attribute nests deeper than orjson writes (254 levels) raised
    TypeError and stopped the Kafka bridge. It is a dead letter naming the cause."""
    from aiokafka.structs import TopicPartition

    from collectors.equivalence import Message
    from collectors.kafka_bridge import KafkaBridge
    from collectors.sink import KafkaSink

    record = copy.deepcopy(payload("otlp_traces"))
    span = record["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    del span["traceId"], span["spanId"]
    span["attributes"].append({"key": "deep", "value": "DEEP"})
    deep = b'{"arrayValue":{"values":[' * 100 + b'{"stringValue":"x"}' + b"]}}" * 100  # 300 levels, as JSON text
    raw = orjson.dumps(record).replace(b'"DEEP"', deep)
    bridge = KafkaBridge("127.0.0.1:9", "source", "otel", "group", KafkaSink("127.0.0.1:9", "collect-kafka"))
    events, letters = bridge._convert({TopicPartition("source", 0): [Message(0, raw)]})
    assert events == [] and len(letters) == 1
    assert "nests too deeply to derive one" in letters[0]["reason"], letters[0]["reason"]
