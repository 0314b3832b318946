"""A record that is a JSON scalar (a number, a string, true/false, null) is refused saying what it is, on every
entry point: Kafka and HTTP bytes, file lines (text), HTTP bodies already read as JSON, every dialect, the batch
form and the per-record form alike. It was refused as "binary record is neither JSON nor OTLP protobuf" (bytes)
or "text record is neither JSON nor server-sent events" (text), which is false: it is JSON, of the wrong kind."""

from __future__ import annotations

import orjson
import pytest

from collectors import DIALECTS, DialectError, equivalence, parse_record
from collectors.http_ingest import parse_keeping, split_records

SCALARS = [(b"42", "a JSON number"), (b" -1.5 ", "a JSON number"), (b'"text"', "a JSON string"),
           (b"true", "a JSON boolean"), (b"false", "a JSON boolean"), (b"null", "JSON null")]


def _reason(record, dialect, encoded):
    with pytest.raises(DialectError) as caught:
        parse_record(record, dialect, encoded=encoded)
    return str(caught.value)


@pytest.mark.parametrize("dialect", [None, *DIALECTS])
@pytest.mark.parametrize("encoded", [False, True])
def test_a_scalar_record_is_refused_as_the_json_it_is(dialect, encoded):
    for raw, kind in SCALARS:
        expected = f"record is {kind}, not an object or array"
        for record in (raw, raw.decode()):  # Kafka bytes, a file line
            assert _reason(record, dialect, encoded) == expected, (record, dialect, encoded)


@pytest.mark.parametrize("dialect", [None, *DIALECTS])
def test_an_http_body_that_is_a_scalar_is_refused_as_the_json_it_is(dialect):
    for raw, kind in SCALARS:
        _, _, failures = parse_keeping(split_records(raw, "application/json", dialect), dialect, None)
        assert [exc.reason for _, exc in failures] == [f"record is {kind}, not an object or array"], (raw, dialect)


@pytest.mark.parametrize("dialect", sorted({"otel", "kong", "canonical", "litellm", "apisix"}))
def test_the_kafka_bridge_letters_a_scalar_the_same_on_both_paths(dialect):
    values = [raw for raw, _ in SCALARS]
    batch, per_record = equivalence.batch_output(values, dialect), equivalence.per_record_output(values, dialect)
    reasons = [orjson.loads(letter)["reason"] for letter in batch["letters"]]
    assert reasons == [f"record is {kind}, not an object or array" for _, kind in SCALARS]
    assert batch["letters"] == per_record["letters"]


def test_an_http_body_that_is_a_json_string_holding_a_record_is_still_read(payload):
    body = orjson.dumps(orjson.dumps(payload("kong_openai")).decode())  # a record sent JSON-encoded twice
    events, _, failures = parse_keeping(split_records(body, "application/json", "kong"), "kong", None)
    assert len(events) == 1 and not failures


def test_protobuf_and_plain_text_keep_their_reasons():
    with pytest.raises(DialectError, match="neither JSON nor OTLP protobuf"):
        parse_record(b"not json", "otel", encoded=True)
    with pytest.raises(DialectError, match="text record is neither JSON nor server-sent events"):
        parse_record("not json", "kong")
    with pytest.raises(DialectError, match="invalid JSON"):
        parse_record(b"[1, 2", "kong")


def test_tokenmeter_price_refuses_a_scalar_line_as_the_json_it_is(tmp_path):
    from click.testing import CliRunner

    from app.cli import main

    result = CliRunner().invoke(main, ["price", "--dialect", "kong"], input=b'42\n"text"\nnull\n',
                                env={"TOKENMETER_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1
    errors = [orjson.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [error["error"] for error in errors] == [
        f"record is {kind}, not an object or array" for kind in ("a JSON number", "a JSON string", "JSON null")]
