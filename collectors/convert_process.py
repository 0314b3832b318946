"""The Kafka bridge's conversion in a second process, so that it runs beside the bridge's Kafka work (issue 14).

One bridge process did everything on one core: aiokafka's fetch and record unpacking, the conversion (JSON decode,
the dialect's reader, the attribution, writing the event JSON: ~2/3 of its CPU), the framing, the produce and its
acknowledgements, the pending record, the commit. Round 9 overlapped the conversion of batch N+1 with the broker's
work on batch N, but both still shared the one core, so the conversion set the rate. Here the conversion of a
batch runs in a child process (`python -m collectors.convert_process`), while the bridge's event loop delivers the
batch before it: on a machine with a spare core the two overlap.

The child is a pure function of the source values: it converts a batch as `KafkaBridge._convert_one` does
(`parse_record(value, dialect, mapping, encoded=True)`, the same readers, the same bytes) and answers with the
events already written (event id, partition key, the JSON `encode_batches` writes for them), the dead letters'
reasons and payloads by record index, and how many records held no call. Nothing is recorded or produced there,
so the exactly-once protocol (the pending record, the produce, the commit: all in the bridge) is unchanged; a
child that dies fails the bridge, whose restart reads the uncommitted batch again.

Wire: over the child's stdin/stdout, each message an 8-byte big-endian length and a pickle (protocol 5, our own
objects only). The first message to the child is its setup (dialect, mapping fields); then one message per batch
(a list of values: bytes, or None for a tombstone), one answer per batch. The child ends at end of input, so it
also ends when the bridge is killed (its pipe closes).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import struct
import sys
from typing import Any

LENGTH = struct.Struct(">Q")
PIPE_SIZE = 1 << 20  # each pipe's buffer (`_widen`), and the slices a batch is written in

# One batch's answer: (event ids, partition keys, event JSONs, [(record index, reason, printable payload or None)],
# records without a call)
Answer = tuple[list[str], list[bytes], list[bytes], list[tuple[int, str, Any]], int]


def mapping_fields(mapping: Any) -> tuple[Any, ...] | None:
    """An AttributionMapping as the child rebuilds it (its compiled plans are functions: not sent)."""
    if mapping is None:
        return None
    return dict(mapping.dimensions), dict(mapping.tags), mapping.provider, mapping.inherit_defaults


def convert_values(values: list[bytes | None], dialect: str | None, mapping: Any) -> Answer:
    """What `KafkaBridge._convert_one` makes of each value, in order, as an Answer."""
    from collectors import DialectError, parse_record
    from collectors.batch import collection_paused
    from collectors.encoded import EncodedEvent
    from collectors.kafka_bridge import _printable
    from tokenmeter.events import partition_key

    ids: list[str] = []
    keys: list[bytes] = []
    jsons: list[bytes] = []
    letters: list[tuple[int, str, Any]] = []
    skipped = 0

    def add(events: list[Any]) -> None:
        for event in events:
            if type(event) is EncodedEvent:
                ids.append(event.event_id)
                keys.append(event.key)
                jsons.append(event.json)
            else:  # a model from the per-entry parser: written as `encode_batches` writes it
                ids.append(event.event_id)
                keys.append(partition_key(event))
                jsons.append(event.model_dump_json(exclude_none=True).encode())

    with collection_paused():
        for index, value in enumerate(values):
            if value is None:
                letters.append((index, "empty message (tombstone)", None))
                continue
            try:
                found = parse_record(value, dialect, mapping, encoded=True)
            except DialectError as exc:
                letters.append((index, str(exc), _printable(value)))
                add(exc.partial)
                continue
            if not found:
                skipped += 1
            add(found)
    return ids, keys, jsons, letters, skipped


class ConvertProcess:
    """The bridge's side: a child process that converts one batch at a time (`convert`, awaited)."""

    def __init__(self, dialect: str | None, mapping: Any):
        self.dialect = dialect
        self.mapping = mapping
        self.child: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()  # one batch at a time on the pipe

    async def start(self) -> None:
        self.child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "collectors.convert_process", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
            limit=1 << 26)  # an answer is read whole: below it the reader would pause and resume the pipe
        await self._send((self.dialect, mapping_fields(self.mapping)))
        # ready: its imports done (~0.5 s of CPU), so the first batch does not wait for them
        assert self.child.stdout is not None
        await self.child.stdout.readexactly(LENGTH.size)

    def child_cpu_s(self) -> float:
        """The child's CPU seconds so far, all of it (reading, converting, writing); 0 without a child."""
        if self.child is None:
            return 0.0
        try:
            with open(f"/proc/{self.child.pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    async def convert(self, values: list[bytes | None]) -> Answer:
        async with self._lock:
            if self.child is None:  # not started, or dropped after an interrupted batch
                await self.start()
            assert self.child is not None and self.child.stdout is not None
            try:
                await self._send(values)
                size = LENGTH.unpack(await self.child.stdout.readexactly(LENGTH.size))[0]
                answer = pickle.loads(await self.child.stdout.readexactly(size))
            except BaseException as exc:
                # Interrupted (cancelled, or the child died) between a batch and its answer: the pipe may still hold
                # that answer, which the next batch would read as its own. The child goes; the next batch starts one.
                child, self.child = self.child, None
                code = await _kill(child)
                if isinstance(exc, asyncio.IncompleteReadError):
                    raise RuntimeError(f"the conversion process ended (exit code {code})") from None
                raise
        return answer

    async def _send(self, message: Any) -> None:
        assert self.child is not None and self.child.stdin is not None
        data = memoryview(pickle.dumps(message, protocol=5))
        self.child.stdin.write(LENGTH.pack(len(data)))
        # In slices of the pipe's size: what the pipe does not take at once, asyncio's pipe transport keeps in a
        # buffer that it shifts down after every write (a batch of several MB moved again and again).
        for start in range(0, len(data), PIPE_SIZE):
            self.child.stdin.write(data[start:start + PIPE_SIZE])
            await self.child.stdin.drain()

    async def stop(self) -> None:
        """End the child: at the end of its input when idle, killed when a batch is still on its way (a pure
        function of the values: nothing of it needs to finish)."""
        child, self.child = self.child, None
        if child is None:
            return
        if self._lock.locked() or child.stdin is None:
            await _kill(child)
            return
        child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), 5)
        except asyncio.TimeoutError:
            await _kill(child)


async def _kill(child: asyncio.subprocess.Process) -> int | None:
    if child.returncode is None:
        try:
            child.kill()
        except ProcessLookupError:
            pass
    return await child.wait()


def _widen(fd: int) -> None:
    """The pipe's buffer raised to 1 MB (Linux; the default system-wide limit), where allowed: a batch is MBs,
    and through 64 KB pipes the bridge's event loop woke for every 64 KB."""
    try:
        import fcntl
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (ImportError, AttributeError, OSError):
        pass  # another system, or a lower limit: only slower


def _read_message(stream: Any) -> Any:
    head = stream.read(LENGTH.size)
    if len(head) < LENGTH.size:
        return EOFError
    size = LENGTH.unpack(head)[0]
    return pickle.loads(stream.read(size))


def main() -> int:
    """The child: setup, then one answer per batch until end of input."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the bridge, which ends us by closing the pipe
    import collectors.kafka_bridge  # noqa: F401 - everything a conversion imports, before the first batch
    from collectors.attribution import AttributionMapping

    source, sink = sys.stdin.buffer, sys.stdout.buffer
    _widen(source.fileno())
    _widen(sink.fileno())
    setup = _read_message(source)
    if setup is EOFError:
        return 0
    dialect, fields = setup
    mapping = None if fields is None else AttributionMapping(
        dimensions=fields[0], tags=fields[1], provider=fields[2], inherit_defaults=fields[3])
    sink.write(LENGTH.pack(0))  # ready
    sink.flush()
    while True:
        values = _read_message(source)
        if values is EOFError:
            return 0
        data = pickle.dumps(convert_values(values, dialect, mapping), protocol=5)
        sink.write(LENGTH.pack(len(data)))
        sink.write(data)
        sink.flush()


if __name__ == "__main__":
    sys.exit(main())
