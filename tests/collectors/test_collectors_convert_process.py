"""The Kafka bridge's conversion in a child process (collectors/convert_process.py) makes what the in-process
conversion makes: the same events byte for byte, the same dead letters (reason, payload, source location) in the
same order, the same counters; and the child never outlives its batch's caller or the bridge."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import namedtuple

import orjson
import pytest
from aiokafka.structs import TopicPartition

from collectors import AttributionMapping, corpus, equivalence
from collectors.convert_process import ConvertProcess
from collectors.kafka_bridge import KafkaBridge
from collectors.sink import KafkaSink, encode_batches

pytestmark = pytest.mark.slow(seconds=15)  # rough seconds: longest files first (tests/suite_order.py)

Message = namedtuple("Message", "offset value")


def _bridge(dialect: str, mapping: dict | None, convert_process: bool) -> KafkaBridge:
    return KafkaBridge("127.0.0.1:9", "source", dialect, "group", KafkaSink("127.0.0.1:9", "collect:kafka"),
                       mapping=AttributionMapping.from_dict(mapping) if mapping else None,
                       convert_process=convert_process)


def _batches(values: list, chunk: int) -> list[dict]:
    """Fetches of `chunk` records spread over two partitions, as getmany returns them."""
    out = []
    for start in range(0, len(values), chunk):
        part = values[start:start + chunk]
        half = len(part) // 2
        out.append({TopicPartition("source", 0): [Message(start + i, v) for i, v in enumerate(part[:half])],
                    TopicPartition("source", 1): [Message(start + i, v) for i, v in enumerate(part[half:])]})
    return out


def _written(events: list, letters: list[dict]) -> tuple[list, list]:
    messages = encode_batches(events)
    # a far-dated event's reason names the validator's clock, to the second: masked as collectors.equivalence does
    return messages, [equivalence._CLOCK.sub("(clock)", orjson.dumps({k: v for k, v in letter.items() if k != "at"},
                                                                   default=str).decode()) for letter in letters]


async def _both(dialect: str, mapping: dict | None, values: list) -> tuple[list, list, tuple, tuple]:
    here, there = _bridge(dialect, mapping, False), _bridge(dialect, mapping, True)
    assert there.converter is not None
    try:
        mine, theirs = [], []
        for batch in _batches(values, 200):
            mine.append(_written(*here._convert(batch)))
            there.sink.counters.count(there.label, "read", sum(map(len, batch.values())))  # as `_process` does
            theirs.append(_written(*await there._convert_in_child(batch)))
        counts = lambda b: (b.sink.counters.read, b.sink.counters.skipped)  # noqa: E731
        return mine, theirs, counts(here), counts(there)
    finally:
        await there.converter.stop()


@pytest.mark.parametrize("custom_mapping", [False, True])
def test_the_conversion_process_writes_what_the_bridge_writes(custom_mapping):
    async def run() -> list:
        return await asyncio.gather(*[
            _both(dialect, corpus.MAPPINGS[dialect] if custom_mapping else None,
                  corpus.records(dialect, 600, seed=f"child-{custom_mapping}"))
            for dialect in corpus.DIALECTS])

    for dialect, (mine, theirs, counts_here, counts_there) in zip(corpus.DIALECTS, asyncio.run(run())):
        assert theirs == mine, dialect
        assert counts_there == counts_here, dialect
        letters = [letter for _, batch_letters in mine for letter in batch_letters]
        assert letters and sum(len(messages) for messages, _ in mine) > 0, dialect  # both kinds were compared


def test_an_interrupted_batch_never_answers_the_next_one():
    # Cancelled between sending a batch and reading its answer, the pipe may still get that answer: it must not be
    # read as the next batch's. The child is dropped and the next batch starts a new one.
    values = corpus.records("litellm", 400, seed="interrupted")

    async def run() -> None:
        converter = ConvertProcess("litellm", None)
        await converter.start()
        try:
            first = converter.child
            task = asyncio.ensure_future(converter.convert(values[:300]))
            while not converter._lock.locked():  # the batch is on its way
                await asyncio.sleep(0)
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert first.returncode is not None  # killed
            alone = ConvertProcess("litellm", None)
            try:
                expected = await alone.convert(values[300:])
            finally:
                await alone.stop()
            assert await converter.convert(values[300:]) == expected
            assert converter.child is not first
        finally:
            await converter.stop()

    asyncio.run(run())


def test_a_dead_child_fails_the_batch_and_the_next_batch_starts_another():
    values = corpus.records("kong", 50, seed="dead")

    async def run() -> None:
        converter = ConvertProcess("kong", None)
        await converter.start()
        try:
            converter.child.kill()
            with pytest.raises(RuntimeError, match="conversion process ended"):
                await converter.convert(values)
            assert converter.child is None
            ids = (await converter.convert(values))[0]
            assert ids
        finally:
            await converter.stop()
        assert converter.child is None

    asyncio.run(run())


_PARENT = """
import asyncio, sys
from collectors.convert_process import ConvertProcess
async def main():
    converter = ConvertProcess("kong", None)
    await converter.start()
    print(converter.child.pid, flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def test_the_child_ends_when_the_bridge_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    child = None
    try:
        child = int(parent.stdout.readline())
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 20
        while _alive(child):  # its stdin closes with the parent: end of input
            assert time.monotonic() < deadline, "the conversion process outlived the killed bridge"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
