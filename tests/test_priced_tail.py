"""`tokenmeter priced tail` (issue 14, arrow14): the newest priced events read back from the real broker, through
priced_wire's one decoder, print the same canonical JSON lines whether the worker wrote JSON or Arrow messages."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner

from app.cli import main
from streams.columnar import process_batch_columnar
from streams.columnar.bench import records_of, traffic
from streams.pricing import load_price_book
from tokenmeter import topics
from tokenmeter.priced_wire import headers_for

pytestmark = pytest.mark.slow(seconds=10)


@pytest.fixture()
def broker(own_broker, monkeypatch):  # noqa: ANN001 - a topic of its own: the tail reads the newest messages
    monkeypatch.setenv("TOKENMETER_KAFKA_BOOTSTRAP", own_broker)
    return own_broker


async def _send(bootstrap: str, messages: list[tuple[bytes, bytes]], headers) -> None:  # noqa: ANN001
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4_000_000)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topics.PRICED, value, key=key, partition=0, headers=headers)
    finally:
        await producer.stop()


def _tail(*args: str) -> list[str]:
    result = CliRunner().invoke(main, ["priced", "tail", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_tail_prints_the_same_events_from_json_and_arrow_messages(broker):
    result = process_batch_columnar(records_of(traffic(1_200, seed=12)), load_price_book())
    newest = [event for _, value in result.messages("json") for event in orjson.loads(value)][-5:]
    lines = {}
    for priced_format in ("json", "arrow"):
        asyncio.run(_send(broker, result.messages(priced_format), headers_for(priced_format)))
        lines[priced_format] = _tail("--n", "5", "--json")
        people = _tail("--n", "3")
        assert len(people) == 3 and all(f"[{priced_format} p0@" in line for line in people)
    assert lines["arrow"] == lines["json"] == [orjson.dumps(event).decode() for event in newest]


def test_tail_names_a_message_it_cannot_read_and_goes_on(broker):
    asyncio.run(_send(broker, [(b"k", b"{not json")], None))
    result = CliRunner().invoke(main, ["priced", "tail", "--n", "2"], catch_exceptions=False)
    assert result.exit_code == 0 and "not a priced message (JSONDecodeError" in result.stderr


def test_tail_prints_wrong_typed_fields_as_absent(broker):
    """Anyone can write to the topic: an event whose attribution or usage is not an object printed a traceback
    (AttributeError: 'str' object has no attribute 'get') in the people's view."""
    odd = orjson.dumps([{"ts": "2026-12-06T00:00:00Z", "attribution": "x", "usage": 5, "provider": "openai",
                         "model": "gpt-4o", "pricing_status": "priced", "cost_usd": "0.1"}, 7])
    asyncio.run(_send(broker, [(b"k", odd)], None))
    result = CliRunner().invoke(main, ["priced", "tail", "--n", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "2026-12-06T00:00:00Z  -  openai/gpt-4o  0+0 tok  0.1  [json p0@" in result.output
    assert "not a priced message (7)" in result.stderr


def test_tail_without_a_broker_says_so_and_bounds_n(monkeypatch):
    monkeypatch.setenv("TOKENMETER_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    result = CliRunner().invoke(main, ["priced", "tail"])
    assert result.exit_code == 1 and "no Kafka broker answers at 127.0.0.1:1" in result.output, result.output
    too_many = CliRunner().invoke(main, ["priced", "tail", "--n", "100001"])
    assert too_many.exit_code == 2 and "100000" in too_many.output
