"""Every real payload, every path, hostile values: nothing but a DialectError (a dead letter with its reason) ever
leaves the collectors' entry points, and whatever parses is a valid canonical event.

The payloads: all of the conformance corpus (tests/conformance/expected.yaml, 120 cases with provenance, every
dialect) and every file of tests/collectors/payloads (the `sourced/` ones unwrapped). Each value at every path of
a payload (dict keys and list items, the root included) is replaced by hostile values, as JSON text, and the
record goes through the three ways production reads it:
- `KafkaBridge._convert` (the batch form, `encoded=True`, what `collect kafka`, the file tail and HTTP ingest run):
  every dead letter has a reason; every event is the canonical JSON `UsageEvent` writes, byte for byte;
- `parse_record(raw)` (dialect detected) or `parse_record(raw, dialect)`, alternating by path (each path takes
  the bridge and one of the two; the suite's time, docs/rounds/testing.md): a DialectError with a reason, or events
  that validate.
Every key is also deleted in turn, and every payload is read by every dialect (a topic fed the wrong gateway).

To stay fast (~10 s), each path takes one value of each KIND below (null, text, small number, huge number, bool,
list, object, 300-level nesting), the member of a kind rotating with the path's index: every path meets every
type, and every value meets a share of the paths. The full product (all 20 values at every path, ~520,000 reads,
~33 s) ran clean when this file was written (fuzz16, docs/rounds/testing.md); what it found then is fixed and has
its own test: an OpenAI Responses output item `type` that is a list or object, a Kong `rag-inject.embeddings_tokens`
above the contract's bound, an OpenInference `span.kind` that is a list or object.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from aiokafka.structs import TopicPartition

from collectors import DIALECTS, DialectError, detect_dialect, parse_record
from collectors.decode import decode
from collectors.encoded import EncodedEvent
from collectors.equivalence import Message
from collectors.kafka_bridge import KafkaBridge
from collectors.sink import KafkaSink
from tests.collectors.test_collectors_robustness import paths
from tests.conformance.test_conformance import CASES, _record
from tokenmeter.events import UsageEvent

pytestmark = pytest.mark.slow(seconds=16)  # rough seconds: longest files first (tests/suite_order.py)
PAYLOADS = Path(__file__).parent / "payloads"
MARK = orjson.dumps("\x00fuzz16\x00")  # stands for the hostile value in the written record
KINDS: list[list[bytes]] = [  # hostile values as JSON text (a 300-level nesting cannot be written by orjson)
    [b"null"],
    [b'""', b'"x"', b'"12"', orjson.dumps("y" * 100_000), orjson.dumps("caf\u00e9 \u6f22\u5b57 \U0001f600"),
     b'"\\ud800x"', b'"\\ud83d\\ude00"'],
    [b"-1", b"0", b"1.5"],
    [b"1e308", b"18446744073709551616"],
    [b"true"],
    [b"[]", b"[1]", orjson.dumps(list(range(10_000)))],
    [b"{}", b'{"a":1}'],
    [b"[" * 300 + b"]" * 300],
]


def _payloads() -> Iterator[tuple[str, Any]]:
    for case in CASES:
        yield case["name"], decode(_record(case))
    for path in sorted(PAYLOADS.rglob("*.*")):
        record = decode(path.read_text())
        if isinstance(record, dict) and "provenance" in record:  # sourced/: {provenance, payload}
            record = record["payload"]
        yield str(path.relative_to(PAYLOADS)), record


RECORDS = dict(_payloads())


def _edited(record: Any, path: tuple, new: Any = None, delete: bool = False) -> bytes:
    copy = orjson.loads(orjson.dumps(record))
    if not path:
        return orjson.dumps(new)
    target = copy
    for step in path[:-1]:
        target = target[step]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = new
    return orjson.dumps(copy)


def _valid(events: list[Any]) -> None:
    for event in events:
        if isinstance(event, EncodedEvent):  # written without the model: the model must write the same bytes
            model = UsageEvent.model_validate_json(event.json)
            assert model.model_dump_json(exclude_none=True).encode() == event.json
        else:
            type(event).model_validate(event.model_dump())


class Reader:
    """The three entry points, one bridge per dialect (no broker is touched: `_convert` only parses)."""

    def __init__(self):
        self.bridges: dict[str, KafkaBridge] = {}

    def bridge(self, dialect: str) -> KafkaBridge:
        if dialect not in self.bridges:
            sink = KafkaSink("127.0.0.1:9", "collect-kafka")
            self.bridges[dialect] = KafkaBridge("127.0.0.1:9", "source", dialect, "group", sink)
        return self.bridges[dialect]

    def read(self, raw: bytes, dialect: str, detect: bool = True, turn: int = 0) -> None:
        """`detect`: `parse_record` with the dialect detected, and named; `turn` picks one of the two (the
        sweep alternates them by path: each path and kind still meets the bridge, both ways share the paths)."""
        events, letters = self.bridge(dialect)._convert({TopicPartition("source", 0): [Message(0, raw)]})
        assert all(letter["reason"] for letter in letters), letters
        _valid(events)
        for chosen in (((None, dialect)[turn % 2],) if detect else (dialect,)):
            try:
                events = parse_record(raw, chosen)
            except DialectError as exc:
                assert str(exc)
                continue
            _valid(events)


@pytest.fixture(scope="module")
def reader() -> Reader:
    return Reader()


def _where(name: str, path: tuple, value: bytes) -> str:
    return f"{name} at {path!r} = {value[:60]!r}"


@pytest.mark.parametrize("name", list(RECORDS))
def test_every_path_takes_hostile_values_and_is_deleted_without_a_crash(reader, name):
    record = RECORDS[name]
    dialect = detect_dialect(record)
    for index, path in enumerate([(), *paths(record)]):
        written = _edited(record, path, orjson.loads(MARK))
        for kind in KINDS:
            value = kind[index % len(kind)]
            try:
                reader.read(written.replace(MARK, value, 1), dialect, turn=index)
            except Exception as exc:  # noqa: BLE001 (the test names the input that crashed)
                raise AssertionError(f"{type(exc).__name__}: {exc!s:.300} -- {_where(name, path, value)}") from exc
        if path:
            try:
                reader.read(_edited(record, path, delete=True), dialect, turn=index + 1)
            except Exception as exc:  # noqa: BLE001
                raise AssertionError(f"{type(exc).__name__}: {exc!s:.300} -- {name} without {path!r}") from exc


def test_every_payload_read_by_every_dialect_is_parsed_or_refused(reader):
    """A topic or a log route fed another gateway's records: each dialect refuses or parses, never crashes."""
    for name, record in RECORDS.items():
        raw = orjson.dumps(record)
        for dialect in DIALECTS:
            try:
                reader.read(raw, dialect, detect=False)
            except Exception as exc:  # noqa: BLE001
                raise AssertionError(f"{type(exc).__name__}: {exc!s:.300} -- {name} as {dialect}") from exc


def test_the_corpus_is_all_of_it():
    """The sweep covers every conformance case and every collectors payload (a renamed folder would silently
    shrink it), and every dialect is met by at least one payload."""
    assert len(CASES) >= 120 and len(RECORDS) == len(CASES) + len(list(PAYLOADS.rglob("*.*")))
    detected = {detect_dialect(record) for record in RECORDS.values()}
    assert detected >= set(DIALECTS) - {"canonical"}, set(DIALECTS) - detected
    assert json.loads(KINDS[-1][0]) is not None  # the deep value is valid JSON (1024 levels are allowed)
