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
