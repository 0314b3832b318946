"""The Kafka bridge converts a batch in turns (`KafkaBridge._convert_in_turns`), so the batch's pending record is
made while it converts: the same events and dead letters as the one-pass `_convert`, and the event loop gets
turns in between."""

from __future__ import annotations

import asyncio

from aiokafka.structs import TopicPartition

from collectors.bench import gateway_records
from collectors.equivalence import Message
from collectors.kafka_bridge import KafkaBridge
from collectors.sink import KafkaSink, encode_batches


def _batch(dialect: str, n: int) -> dict[TopicPartition, list[Message]]:
    """Records of two partitions, with a bad record and a tombstone in the middle of the first."""
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
        one_pass = _bridge(dialect)
        events, letters = one_pass._convert(batch)
        assert len(events) == n and len(letters) == 2
        for alongside in ("never done", "done at the first turn", "done"):
            bridge = _bridge(dialect)
            in_turns, letters_in_turns = asyncio.run(_in_turns(bridge, batch, alongside))
            assert encode_batches(in_turns) == encode_batches(events), alongside
            assert _letters_without_time(letters_in_turns) == _letters_without_time(letters), alongside
            assert bridge.sink.counters.summary() == one_pass.sink.counters.summary()


async def _in_turns(bridge: KafkaBridge, batch: dict, alongside_state: str = "never done") -> tuple[list, list]:
    """`_convert_in_turns` alongside a future standing for the pending record being made: never done, done at the
    conversion's first turn, or done before it starts."""
    loop = asyncio.get_running_loop()
    alongside = loop.create_future()
    if alongside_state == "done":
        alongside.set_result(None)
    elif alongside_state == "done at the first turn":
        loop.call_soon(alongside.set_result, None)
    return await bridge._convert_in_turns(batch, alongside)


def _read_when_the_loop_ran_something_else(never_done: bool) -> tuple[int, int]:
    batch = _batch("kong", 10_000)  # ~0.1 s of conversion
    bridge = _bridge("kong")
    seen: list[int] = []

    async def run() -> None:
        asyncio.get_running_loop().call_soon(lambda: seen.append(bridge.sink.counters.read))
        await _in_turns(bridge, batch, "never done" if never_done else "done")

    asyncio.run(run())
    return seen[0], sum(len(r) for r in batch.values())


def test_conversion_gives_the_event_loop_turns_until_the_pending_record_is_made():
    read, records = _read_when_the_loop_ran_something_else(never_done=True)
    assert 0 < read < records  # a turn in the middle of the batch
    read, records = _read_when_the_loop_ran_something_else(never_done=False)
    assert read == records  # the record was made: the batch converts in one go
