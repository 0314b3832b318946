"""OTLP protobuf attributes read from their KeyValues' encodings (collectors/dialects/otel_proto.py `_read_pair`,
the OTel batch form) must read what upb's parse of the KeyValue gives, for every encoding protobuf accepts or
refuses: the layout exporters write, and the others (long strings, negative ints, fields repeated, reordered or
unknown, non-canonical varints, invalid UTF-8).

Records are built at the wire level (the protobuf classes cannot hold these encodings) and compared with the
per-span parser, as test_collectors_batch_form.py does for OTLP/JSON edges.
"""

from __future__ import annotations

import math
import random
import struct

import pytest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from collectors import AttributionMapping, bench, corpus, parse_record
from collectors.dialects.otel_proto import _pair_of_message, _read_pair
from collectors.encoded import EncodedEvent
from tests.collectors.test_collectors_batch_form import _assert_same


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        out.append(low | 0x80 if number else low)
        if not number:
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + payload


def _delimited(number: int, payload: bytes) -> bytes:
    return _field(number, 2, _varint(len(payload)) + payload)


def _string(text: str | bytes) -> bytes:
    return _delimited(1, text.encode() if isinstance(text, str) else text)


def _int(number: int) -> bytes:
    return _field(3, 0, _varint(number % 2**64))


def _kv(key: bytes, value: bytes) -> bytes:
    return _delimited(1, key) + _delimited(2, value)


def _array(*values: bytes) -> bytes:
    """An AnyValue holding an ArrayValue of these AnyValue encodings."""
    return _delimited(5, b"".join(_delimited(1, value) for value in values))


def _record(span_kvs: list[bytes], resource_kvs: list[bytes] = ()) -> bytes:
    """A bench record of two common spans, the first with `span_kvs` appended to its attributes and the resource
    with `resource_kvs` (KeyValue encodings, as they are)."""
    message = TracesData.FromString(bench.gateway_records("otel", 2)[0][0])
    resource_spans = message.resource_spans[0]
    scope_spans = resource_spans.scope_spans[0]
    first, second = (span.SerializeToString() for span in scope_spans.spans)
    first += b"".join(_delimited(9, kv) for kv in span_kvs)
    resource = resource_spans.resource.SerializeToString() + b"".join(_delimited(1, kv) for kv in resource_kvs)
    scope = _delimited(1, scope_spans.scope.SerializeToString()) + _delimited(2, first) + _delimited(2, second)
    return _delimited(1, _delimited(1, resource) + _delimited(2, scope))


WIRE_CASES: dict[str, tuple[list[bytes], list[bytes]]] = {
    "short string and int (the exporters' layout)": ([_kv(b"tokenmeter.project", _string("p1")),
                                                       _kv(b"n", _int(300))], []),
    "long string (two-byte lengths)": ([_kv(b"tokenmeter.project", _string("p" * 200))], []),
    "long key": ([_kv(b"k" * 130, _string("v"))], []),
    "empty string": ([_kv(b"tokenmeter.project", _string(""))], []),
    "non-ASCII string": ([_kv(b"user.id", _string("jörg-日本-\U0001F600"))], []),
    "negative int (ten-byte varint)": ([_kv(b"tokenmeter.team", _int(-4))], []),
    "int 2**63 - 1 (nine bytes)": ([_kv(b"tokenmeter.team", _int(2**63 - 1))], []),
    "int of a non-canonical varint": ([_kv(b"tokenmeter.team", _field(3, 0, b"\x85\x80\x00"))], []),
    "tokens of a non-canonical varint": ([_kv(b"gen_ai.usage.input_tokens", _field(3, 0, b"\x8a\x80\x00"))], []),
    "bool 2": ([_kv(b"user.id", _field(2, 0, b"\x02"))], []),
    "bool of two bytes": ([_kv(b"user.id", _field(2, 0, b"\x81\x00"))], []),
    "double": ([_kv(b"tokenmeter.project", _field(4, 1, struct.pack("<d", 2.5)))], []),
    "double NaN": ([_kv(b"tokenmeter.project", _field(4, 1, struct.pack("<d", math.nan)))], []),
    "double -0.0": ([_kv(b"tokenmeter.project", _field(4, 1, struct.pack("<d", -0.0)))], []),
    "tokens double": ([_kv(b"gen_ai.usage.output_tokens", _field(4, 1, struct.pack("<d", 3.0)))], []),
    "value before key": ([_delimited(2, _string("late")) + _delimited(1, b"tokenmeter.project")], []),
    "key twice": ([_kv(b"a", _string("x")) + _delimited(1, b"tokenmeter.project")], []),
    "value twice (merged: the last kind wins)": ([_kv(b"tokenmeter.project", _string("x")) + _delimited(2, _int(7))],
                                                 []),
    "value twice, the second empty": ([_kv(b"tokenmeter.project", _string("x")) + _delimited(2, b"")], []),
    "two kinds in one value": ([_kv(b"tokenmeter.project", _string("x") + _int(7))], []),
    "unknown field in the KeyValue": ([_kv(b"tokenmeter.project", _string("x")) + _field(5, 0, b"\x01")], []),
    "unknown field in the value": ([_kv(b"tokenmeter.project", _string("x") + _field(12, 0, b"\x01"))], []),
    "value length of a non-canonical varint": ([_delimited(1, b"tokenmeter.project") + b"\x12\x84\x00" +
                                                _string("ab")], []),
    "string length past the value": ([_delimited(1, b"tokenmeter.project") + _delimited(2, b"\x0a\x05ab")], []),
    "empty value": ([_kv(b"tokenmeter.project", b"")], []),
    "no value": ([_delimited(1, b"tokenmeter.project")], []),
    "empty key": ([_kv(b"", _string("x"))], []),
    "no key": ([_delimited(2, _string("x"))], []),
    "invalid UTF-8 in a value": ([_kv(b"tokenmeter.project", _string(b"ok\xff"))], []),
    "a UTF-8 surrogate in a value": ([_kv(b"tokenmeter.project", _string(b"\xed\xa0\x80"))], []),
    "invalid UTF-8 in a key": ([_kv(b"k\xc0\x80", _string("x"))], []),
    "truncated value": ([_delimited(1, b"tokenmeter.project") + _delimited(2, b"\x0a\x09abc")], []),
    "array of strings (finish reasons)": ([_kv(b"gen_ai.response.finish_reasons", _array(_string("stop")))], []),
    "array of scalars": ([_kv(b"tokenmeter.project", _array(_string("a"), _int(-3), _field(2, 0, b"\x01"),
                                                            _field(4, 1, struct.pack("<d", -0.0))))], []),
    "empty array": ([_kv(b"tokenmeter.project", _delimited(5, b""))], []),
    "array with an empty value": ([_kv(b"tokenmeter.project", _array(_string("a"), b""))], []),
    "array with NaN": ([_kv(b"tokenmeter.project", _array(_field(4, 1, struct.pack("<d", math.nan))))], []),
    "nested array": ([_kv(b"tokenmeter.project", _array(_delimited(5, _delimited(1, _string("a")))))], []),
    "array as the operation and the model": ([_kv(b"gen_ai.operation.name", _array(_string("chat"))),
                                              _kv(b"gen_ai.response.model", _array(_string("gpt-4o")))], []),
    "array as a token count": ([_kv(b"gen_ai.usage.input_tokens", _array(_int(3)))], []),
    "resource: array": ([], [_kv(b"service.name", _array(_string("a"), _string("b")))]),
    "kvlist value": ([_kv(b"tags", _delimited(6, _delimited(1, _kv(b"a", _string("b")))))], []),
    "bytes value": ([_kv(b"blob", _delimited(7, b"\x00\x01"))], []),
    "resource: long string": ([], [_kv(b"service.name", _string("s" * 300))]),
    "resource: negative int": ([], [_kv(b"team", _int(-12))]),
    "resource: invalid UTF-8": ([], [_kv(b"service.name", _string(b"\xff"))]),
    "span attribute of a wrong wire type": ([b"\x08\x01"], []),  # a varint field 1 in the KeyValue: unknown field
}


@pytest.mark.parametrize("case", WIRE_CASES)
def test_wire_encodings_of_attributes_read_as_the_per_span_parser_reads_them(case):
    span_kvs, resource_kvs = WIRE_CASES[case]
    record = _record(span_kvs, resource_kvs)
    custom = AttributionMapping.from_dict(corpus.MAPPINGS["otel"])
    no_fields = AttributionMapping.from_dict({"team": ["span:tokenmeter.team", "resource:service.name"],
                                              "project": ["attr:tokenmeter.project"],
                                              "tags": {"n": "attr:n", "u": "span:user.id"}})
    for mapping in (None, custom, no_fields):
        _assert_same(record, "otel", mapping)


def test_records_of_the_exporters_layout_are_read_from_the_message():
    """Short strings, ints, bools, doubles and arrays of them (`gen_ai.response.finish_reasons`, on every chat span
    of the GenAI instrumentations): the spans are read from the protobuf record, not from its OTLP/JSON form."""
    from collectors.dialects.otel import common_event, decode_encoded

    record = _record([_kv(b"tokenmeter.project", _string("p1")), _kv(b"n", _int(300)),
                      _kv(b"flag", _field(2, 0, b"\x01")), _kv(b"t", _field(4, 1, struct.pack("<d", 0.5))),
                      _kv(b"gen_ai.response.finish_reasons", _array(_string("stop")))])
    events = decode_encoded(record).common_events(common_event, AttributionMapping(), False)
    assert events is not None and len(events) == 2 and all(type(event) is EncodedEvent for event in events)
    assert _read_pair(_kv(b"n", _int(300))) == ("n", 300)
    assert _read_pair(_kv(b"flag", _field(2, 0, b"\x01"))) == ("flag", True)
    assert _read_pair(_kv(b"f", _array(_string("stop"), _string("length")))) == ("f", ["stop", "length"])


def _random_kv(rng: random.Random) -> bytes:
    def text() -> bytes:
        return rng.choice([b"", b"a", b"gen_ai.request.model", b"x" * rng.choice((127, 128, 300)), "é日".encode(),
                           b"\xff", b"\xed\xa0\x80", bytes(rng.randrange(256) for _ in range(rng.randrange(5)))])

    def value() -> bytes:
        parts = [rng.choice([
            lambda: _string(text()),
            lambda: _int(rng.choice([0, 1, 127, 128, 2**62, 2**63 - 1, -1, -2**63, rng.randrange(-2**63, 2**63)])),
            lambda: _field(3, 0, rng.choice([b"\x80\x00", b"\xff" * 9 + b"\x01", b"\x80"])),
            lambda: _field(2, 0, _varint(rng.choice([0, 1, 2, 300]))),
            lambda: _field(4, 1, struct.pack("<d", rng.choice([0.0, -0.0, 1.5, math.nan, math.inf, 1e300]))),
            lambda: _field(4, 1, b"\x00" * rng.choice((7, 9))),
            lambda: _delimited(5, b""),
            lambda: _delimited(7, b"\x01"),
            lambda: _field(9, 0, b"\x01"),
            lambda: _field(3, 2, b"\x01x"),
        ])() for _ in range(rng.choice((0, 1, 1, 1, 1, 2, 3)))]
        return b"".join(parts)

    parts = [rng.choice([
        lambda: _delimited(1, text()),
        lambda: _delimited(2, value()),
        lambda: _delimited(2, value()),
        lambda: _field(2, 2, b"\x81\x00" + value()),
        lambda: _field(5, 0, b"\x07"),
    ])() for _ in range(rng.choice((0, 1, 2, 2, 2, 2, 3)))]
    data = b"".join(parts)
    if data and rng.random() < 0.1:  # a byte cut off or changed
        index = rng.randrange(len(data))
        data = data[:index] if rng.random() < 0.5 else data[:index] + bytes([rng.randrange(256)]) + data[index + 1:]
    return data


def _same_pair(fast, parsed) -> bool:
    if fast is None or parsed is None:
        return fast is parsed
    (key, value), (parsed_key, parsed_value) = fast, parsed
    if type(value) is float and type(parsed_value) is float:
        return key == parsed_key and struct.pack("<d", value) == struct.pack("<d", parsed_value)
    return key == parsed_key and type(value) is type(parsed_value) and value == parsed_value


def test_random_keyvalue_encodings_read_as_upb_parses_them():
    rng = random.Random(14)
    encodings = [_random_kv(rng) for _ in range(30_000)]
    encodings += [KeyValue(key=rng.choice(["k", "gen_ai.usage.input_tokens"]), value={
        "string_value": {"string_value": rng.choice(["", "v", "é" * 70])},
        "int_value": {"int_value": rng.randrange(-2**63, 2**63)},
        "bool_value": {"bool_value": rng.random() < 0.5},
        "double_value": {"double_value": rng.choice([0.25, -1e-300, 1e15])},
    }[rng.choice(["string_value", "int_value", "bool_value", "double_value"])]).SerializeToString()
        for _ in range(10_000)]
    for data in encodings:
        assert _same_pair(_read_pair(data), _pair_of_message(data)), data
    assert sum(_read_pair(data) is not None for data in encodings) > 8_000  # the readable ones are many


def test_long_attributes_are_not_kept_by_encoding():
    """The pairs kept by encoding are bounded in size as in number: a logged prompt (gen_ai.input.messages can be
    megabytes) must not stay in memory after its record."""
    from collectors.dialects import otel_proto

    prompt = _kv(b"gen_ai.input.messages", _string('[{"role":"user","content":"' + "x" * 20_000 + '"}]'))
    assert parse_record(_record([prompt]), "otel", encoded=True)
    assert all(len(encoding) < 1_000 for encoding in otel_proto._PAIRS)
