"""Reading tokenmeter.deadletter for `tokenmeter deadletters show` and `replay`: from a time to the topic's end,
each record decoded into a letter (tokenmeter/deadletters.py shape) or said to be unreadable, filtered, and
rendered within bounds whatever a letter holds.

The start is each partition's first offset at or after `since` (ListOffsets by time). The embedded broker (tansu)
answers a time after a partition's last record with offset 0 and timestamp -1 where Kafka answers "none": read
as offset 0, that re-read the whole partition, so a partition without a record at or after `since` is not read at
all (and every record is still checked against `since`: a broker's answer is not trusted to be exact).

Shown is only what a letter holds, payloads as kept (already redacted by the stage that wrote the letter; never
un-redacted). A record on the topic that is not a letter (not JSON, not an object) is shown by its position and
size alone: it was not built by tokenmeter's builder, so nothing in it was redacted."""

from __future__ import annotations

import heapq
import reprlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import orjson

from tokenmeter import topics
from tokenmeter.deadletters import letter_source
from tokenmeter.terminal_text import for_terminal

MAX_TEXT_CHARS = 500  # per value shown (a reason, a context value); a letter's builder clips reasons to 2,000
MAX_KEYS = 40  # context fields shown per letter
MAX_PAYLOAD_CHARS = 16_384  # the builder's own bound (deadletters.MAX_PAYLOAD_CHARS): a kept payload, whole
LETTER_FIELDS = ("reason", "stage", "at", "payload_bytes", "payload_sha256", "payload_truncated", "payload_redacted")

_deep_repr = reprlib.Repr()
_deep_repr.maxlevel = 20
_deep_repr.maxstring = _deep_repr.maxother = 200
_deep_repr.maxlist = _deep_repr.maxdict = 50


@dataclass
class Letter:
    """One record of tokenmeter.deadletter: its position, its Kafka time and the decoded letter (None with a
    `problem` when the record is no letter)."""
    partition: int
    offset: int
    timestamp: datetime
    size: int
    letter: dict[str, Any] | None
    problem: str = ""

    @property
    def stage(self) -> str:
        return _text(self.letter, "stage") or "unknown"

    @property
    def source(self) -> str:
        """As the warehouse names it (tokenmeter/deadletters.py letter_source): a collector's dialect, else the
        letter's source, else the source of the event it carries, else its stage."""
        return letter_source(self.letter)

    @property
    def reason(self) -> str:
        return _text(self.letter, "reason") or self.problem


def _text(letter: dict[str, Any] | None, name: str) -> str:
    value = (letter or {}).get(name)
    return value if isinstance(value, str) else ""


def decode(partition: int, offset: int, timestamp_ms: int, value: bytes | None) -> Letter:
    moment = datetime.fromtimestamp(max(timestamp_ms, 0) / 1000, timezone.utc)
    size = len(value or b"")
    try:
        letter = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        return Letter(partition, offset, moment, size, None, "not a dead letter: not JSON")
    if not isinstance(letter, dict):
        return Letter(partition, offset, moment, size, None,
                      "not a dead letter: empty" if letter is None else "not a dead letter: not a JSON object")
    return Letter(partition, offset, moment, size, letter)


@dataclass
class Filters:
    since: datetime | None = None
    source: str | None = None
    stage: str | None = None
    reason_contains: str | None = None

    def match(self, item: Letter) -> bool:
        if self.since is not None and item.timestamp < self.since:
            return False
        if self.source is not None and item.source != self.source:
            return False
        if self.stage is not None and item.stage != self.stage:
            return False
        return self.reason_contains is None or self.reason_contains.lower() in item.reason.lower()


async def read_letters(bootstrap: str, filters: Filters, on_letter: Callable[[Letter], None], *,
                       timeout: float = 60.0, topic: str = topics.DEADLETTER) -> int:
    """Pass every matching letter from `filters.since` to the topic's end (as the read starts) to `on_letter`;
    returns how many records were read."""
    from aiokafka import AIOKafkaConsumer

    from tokenmeter.kafka_topics import read_to_end, topic_partitions
    from tokenmeter.settings import fetch_wait

    tps = await topic_partitions(bootstrap, topic, timeout=timeout, wait=False)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest", request_timeout_ms=int(timeout * 1000),
                                max_partition_fetch_bytes=2 * 1024 * 1024, **fetch_wait())
    await consumer.start()
    read = 0

    def take(record: Any) -> None:
        nonlocal read
        read += 1
        item = decode(record.partition, record.offset, record.timestamp, record.value)
        if filters.match(item):
            on_letter(item)

    try:
        start = None
        if filters.since is not None:
            found = await consumer.offsets_for_times({tp: int(filters.since.timestamp() * 1000) for tp in tps})
            # None (Kafka) or timestamp -1 (tansu): no record at or after `since` in that partition
            start = {tp: at.offset for tp, at in found.items() if at is not None and at.timestamp >= 0}
            tps = [tp for tp in tps if tp in start]
        if tps:
            await read_to_end(consumer, tps, take, timeout=timeout, start=start)
    finally:
        await consumer.stop()
    return read


def clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def _shown_value(value: Any, limit: int) -> Any:
    """A value as JSON can carry it, within `limit` characters: kept as it is when it encodes that small, else
    its text (or a bounded repr when it cannot be encoded at all: deeper than orjson's 255 levels), cut."""
    if isinstance(value, str):
        return clip(value, limit)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    try:
        encoded = orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError, RecursionError):
        return clip(_deep_repr.repr(value), limit)
    return value if len(encoded) <= limit else clip(encoded, limit)


def shown(item: Letter, payload_chars: int = MAX_PAYLOAD_CHARS) -> dict[str, Any]:
    """The letter as `show` prints it: position, Kafka time, the letter's own fields, context, payload as kept."""
    # The letter's own place on tokenmeter.deadletter, named apart from the context's topic/partition/offset (where
    # the rejected record was), which the letter holds under those names.
    out: dict[str, Any] = {"letter_partition": item.partition, "letter_offset": item.offset,
                           "written": item.timestamp.isoformat(timespec="milliseconds"), "source": clip(item.source, 200)}
    if item.letter is None:
        out.update(stage="unknown", reason=item.problem, letter_bytes=item.size)
        return out
    letter = item.letter
    for name in LETTER_FIELDS:
        if name in letter:
            out[name] = _shown_value(letter[name], MAX_TEXT_CHARS)
    context = [name for name in letter if name not in LETTER_FIELDS and name not in out and name != "payload"]
    for name in context[:MAX_KEYS]:
        out[clip(str(name), 100)] = _shown_value(letter[name], MAX_TEXT_CHARS)
    if len(context) > MAX_KEYS:
        out["more_fields"] = len(context) - MAX_KEYS
    out["payload"] = _shown_value(letter.get("payload"), payload_chars)
    return out


def table_block(entry: dict[str, Any]) -> str:
    """One letter as a few lines for people: a header line, the reason, the context, then the payload."""
    head = (f"{entry['written']}  {entry['source']}  stage={entry.get('stage', 'unknown')}  "
            f"(letter {entry['letter_partition']}:{entry['letter_offset']})")
    lines = [for_terminal(head), "  reason: " + for_terminal(str(entry.get("reason", "")))]
    skip = {"written", "source", "stage", "letter_partition", "letter_offset", "reason", "payload"}
    rest = [f"{name}={_one_line(value)}" for name, value in entry.items() if name not in skip]
    if rest:
        lines.append("  " + for_terminal("  ".join(rest)))
    if "payload" in entry:
        lines.append("  payload: " + for_terminal(_one_line(entry["payload"])))
    return "\n".join(lines)


def _one_line(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value, default=str).decode()


@dataclass(order=True)
class _Ordered:
    key: tuple
    item: Letter = field(compare=False)


@dataclass
class Newest:
    """The newest `limit` letters seen (by Kafka time, then position) and how many matched in all: what an
    on-call person asks first, in memory bounded by `limit` however many letters match."""
    limit: int
    matched: int = 0
    kept: list[_Ordered] = field(default_factory=list)

    def __call__(self, item: Letter) -> None:
        self.matched += 1
        entry = _Ordered((item.timestamp, item.partition, item.offset), item)
        if len(self.kept) < self.limit:
            heapq.heappush(self.kept, entry)
        elif self.limit and entry.key > self.kept[0].key:
            heapq.heapreplace(self.kept, entry)

    def in_order(self) -> list[Letter]:
        return [entry.item for entry in sorted(self.kept)]
