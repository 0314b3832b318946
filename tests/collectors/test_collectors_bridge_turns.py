"""The Kafka bridge converts a batch in turns (`KafkaBridge._convert_in_turns`), so the batch's pending record is
made while it converts: the same events and dead letters as the one-pass `_convert`, and the event loop gets
turns in between."""

from __future__ import annotations

import asyncio

from aiokafka.structs import TopicPartition

from collectors.bench import gateway_records
from collectors.equivalence import Message
from collectors.kafka_bridge import CONVERT_SLICE_RECORDS, KafkaBridge
from collectors.sink import KafkaSink, encode_batches


def _batch(dialect: str, n: int) -> dict[TopicPartition, list[Message]]:
    """Records of two partitions, each longer than a slice, with a bad record and a tombstone in the middle."""
    values, _ = gateway_records(dialect, n, "turns")
    half = len(values) // 2
    first = values[:half]
    first[3:3] = [b'{"not": "a log entry"', None]
    return {TopicPartition("source", 0): [Message(10 + i, v) for i, v in enumerate(first)],
            TopicPartition("source", 1): [Message(i, v) for i, v in enumerate(values[half:])]}


def _bridge(dialect: str) -> KafkaBridge:
    return KafkaBridge("127.0.0.1:9", "source", dialect, "group", KafkaSink("127.0.0.1:9", "collect-kafka"))


def _letters_without_time(letters: list[dict]) -> list[dict]:
    return [{k: v for k, v in letter.items() if k != "at"} for letter in letters]


def test_conversion_in_turns_gives_the_one_pass_events_and_letters():
    for dialect, n in (("kong", 3_000), ("litellm", 200), ("otel", 1_000)):
        batch = _batch(dialect, n)
        assert max(len(records) for records in batch.values()) > CONVERT_SLICE_RECORDS
        events, letters = _bridge(dialect)._convert(batch)
        in_turns, letters_in_turns = asyncio.run(_in_turns(_bridge(dialect), batch, never_done=True))
        assert len(events) == n and len(letters) == 2
        assert encode_batches(in_turns) == encode_batches(events)
        assert _letters_without_time(letters_in_turns) == _letters_without_time(letters)


async def _in_turns(bridge: KafkaBridge, batch: dict, never_done: bool) -> tuple[list, list]:
    """`_convert_in_turns` alongside a future that stays pending (the pending record still being made) or is done."""
    alongside = asyncio.get_running_loop().create_future()
    if not never_done:
        alongside.set_result(None)
    return await bridge._convert_in_turns(batch, alongside)


def _read_when_the_loop_ran_something_else(never_done: bool) -> tuple[int, int]:
    batch = _batch("kong", 10_000)  # ~0.1 s of conversion
    bridge = _bridge("kong")
    seen: list[int] = []

    async def run() -> None:
        asyncio.get_running_loop().call_soon(lambda: seen.append(bridge.sink.counters.read))
        await _in_turns(bridge, batch, never_done)

    asyncio.run(run())
    return seen[0], sum(len(r) for r in batch.values())


def test_conversion_gives_the_event_loop_turns_until_the_pending_record_is_made():
    read, records = _read_when_the_loop_ran_something_else(never_done=True)
    assert 0 < read < records  # a turn in the middle of the batch
    read, records = _read_when_the_loop_ran_something_else(never_done=False)
    assert read == records  # the record was made: the batch converts in one go
