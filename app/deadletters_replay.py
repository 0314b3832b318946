"""`tokenmeter deadletters replay`: re-publish the payloads of dead letters to the topic their stage reads, after
a fix makes them good (a price book or metering fix, an event schema corrected).

What is replayable, per stage:
- worker: its letters keep the canonical event it could not price (or the whole message it could not decode);
  they go back to tokenmeter.usage, where the worker prices them as any event. One that fails again is a new dead
  letter (the normal path).
- collect:http / collect:file / collect:kafka: their letters keep the gateway's record; it is collected again
  with today's collectors and its canonical events go to tokenmeter.usage (app/deadletters_collected.py).
- the other stages are refused, with the reason (`NOT_REPLAYABLE`): their payloads are not usage to re-send.

A payload is re-sent only when it IS the record: not cut (`payload_truncated`), nothing redacted
(`payload_redacted` 0), and its bytes hash to the letter's `payload_sha256`, the hash of what the stage read (a
payload that is not the record would be priced as a different call). Refused letters are counted per reason.

Nothing is counted twice: events carry idempotency keys. The warehouse stores an event_id once (the loader's
anti-join on priced_event_ids), and replay skips events whose event_id is already stored ("already ok": priced
since, e.g. re-sent by a fixed gateway), which also keeps them from the budgets, whose own memory of seen ids is a
window (streams/budgets/ledger.py). A letter written twice for one record (a redelivery) is sent once per run.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import orjson

from app.deadletters_read import Letter
from tokenmeter import deadletters, topics

# The collectors' letters are collected again first (app/deadletters_collected.py), then sent as the worker's are.
REPLAY_TARGETS = {"worker": topics.USAGE, "collect:http": topics.USAGE, "collect:file": topics.USAGE,
                  "collect:kafka": topics.USAGE}
NOT_REPLAYABLE = {
    "load": ("its input (tokenmeter.priced) is also read by budgets and the anomaly detector, which would see the "
             "spend again; fix the cause, then re-price (`tokenmeter reprice`) or re-send the usage events"),
    "alerts": "its letters are alert records the dispatcher could not read, not usage",
    "anomalies": ("its letters are tokenmeter.priced messages the detector could not read, not usage (the loader "
                  "reads the same messages on its own: `deadletters summary --stage load` says if it failed too)"),
}
ID_CHUNK = 1_000  # event ids per warehouse lookup

REFUSED_CUT = "payload cut at 16 KB (payload_truncated): not the record"
REFUSED_REDACTED = "credentials were redacted from the payload (payload_redacted): not the record"
REFUSED_UNSAID = "the letter does not say its payload is whole (no payload_truncated / payload_redacted)"
REFUSED_EMPTY = "no payload kept (a tombstone or a refused compressed batch)"
REFUSED_HASH = "payload is not the record read (its SHA-256 differs from payload_sha256)"
REFUSED_NOT_JSON = "payload is not JSON: the worker would reject it again"


def not_replayable(stage: str) -> str | None:
    """Why letters of `stage` are never replayed, or None for a stage `replay` handles."""
    if stage in REPLAY_TARGETS:
        return None
    return NOT_REPLAYABLE.get(stage, f"no stage of that name replays (replayable: {', '.join(REPLAY_TARGETS)})")


@dataclass
class Candidate:
    """A letter whose payload is the record: the bytes to re-send, the event ids they carry, and the letter's
    position (the decoded letter itself is not kept: a replay of many letters holds only what it sends)."""
    partition: int
    offset: int
    value: bytes
    event_ids: list[str]
    key: bytes


@dataclass
class Outcome:
    replayed: int = 0
    already_ok: int = 0  # every event of it is stored already
    repeated: int = 0  # the same record lettered more than once: sent once
    refused: Counter = field(default_factory=Counter)  # reason -> letters

    def as_dict(self, dry_run: bool) -> dict[str, Any]:
        return {"would_replay" if dry_run else "replayed": self.replayed, "already_ok": self.already_ok,
                "repeated_letters": self.repeated, "refused": dict(self.refused.most_common())}


def whole_payload(item: Letter) -> tuple[bytes, Any] | str:
    """The payload's bytes (as the stage read them) and the payload as kept, when the letter holds the whole
    record; else why not. A binary record kept as hex comes back as its bytes, twice (payload: those bytes)."""
    letter = item.letter or {}
    if "payload_truncated" not in letter or "payload_redacted" not in letter:
        return REFUSED_UNSAID
    if letter.get("payload_truncated") is not False:
        return REFUSED_CUT
    if letter.get("payload_redacted") != 0:
        return REFUSED_REDACTED
    payload = letter.get("payload")
    if payload is None or payload == "":
        return REFUSED_EMPTY
    if isinstance(payload, str):
        value = payload.encode("utf-8", "surrogatepass")
        if payload.startswith(deadletters.HEX_PREFIX) and _sha256(value) != letter.get("payload_sha256"):
            raw = _from_hex(payload)  # a binary record a collector kept as hex (deadletters.binary_dead_letter)
            if raw is not None and _sha256(raw) == letter.get("payload_sha256"):
                return raw, raw
    else:
        try:  # as tokenmeter.deadletters.payload_bytes encoded it when the letter was written; copied to its
            # exact size: orjson's bytes keep a 4 KB buffer (replay --dry-run of 51,000 letters peaked at 589 MiB)
            value = bytes(memoryview(orjson.dumps(payload)))
        except (TypeError, orjson.JSONEncodeError):
            return REFUSED_HASH
    if _sha256(value) != letter.get("payload_sha256"):
        return REFUSED_HASH
    return value, payload


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _from_hex(payload: str) -> bytes | None:
    try:
        return bytes.fromhex(payload[len(deadletters.HEX_PREFIX):])
    except ValueError:
        return None


def candidate(item: Letter) -> list[Candidate] | str:
    """The record a worker letter holds, ready to re-send as it was, or why it is refused."""
    whole = whole_payload(item)
    if isinstance(whole, str):
        return whole
    value, payload = whole
    if isinstance(payload, bytes):  # a binary record (OTLP protobuf): a collector's, never a usage record
        return REFUSED_NOT_JSON
    try:
        decoded = orjson.loads(value) if isinstance(payload, str) else payload
    except orjson.JSONDecodeError:
        return REFUSED_NOT_JSON
    events = decoded if isinstance(decoded, list) else [decoded]
    ids = [e["event_id"] for e in events if isinstance(e, dict) and isinstance(e.get("event_id"), str)]
    return [Candidate(item.partition, item.offset, value, ids, _key(decoded))]


def _key(decoded: Any) -> bytes:
    """The partition key a collector gives the event (one team's events stay in order on one partition)."""
    from tokenmeter.events import partition_key

    first = decoded[0] if isinstance(decoded, list) and decoded else decoded
    try:
        return partition_key(first) if isinstance(first, dict) else b"unattributed"
    except (AttributeError, TypeError):  # a hostile attribution (not an object): still a valid key
        return b"unattributed"


class Planner:
    """Letters in as they are read (`add`), each judged at once; `finish` asks the warehouse which events are
    stored and returns what to send and the outcome."""

    def __init__(self, judge: Callable[[Letter], list[Candidate] | str] = candidate) -> None:
        self.outcome, self.chosen, self.letters, self.judge = Outcome(), [], 0, judge
        self._seen: set[bytes] = set()

    def add(self, item: Letter) -> None:
        self.letters += 1
        found = self.judge(item)
        if isinstance(found, str):
            self.outcome.refused[found] += 1
            return
        for message in found:
            digest = hashlib.sha256(message.value).digest()
            if digest in self._seen:  # the same record lettered again (a redelivery): sent once
                self.outcome.repeated += 1
                continue
            self._seen.add(digest)
            self.chosen.append(message)

    def finish(self, stored: Callable[[list[str]], set[str]]) -> tuple[list[Candidate], Outcome]:
        """`stored(ids)` answers which of `ids` the warehouse holds."""
        known: set[str] = set()
        ids = sorted({i for c in self.chosen for i in c.event_ids})
        for start in range(0, len(ids), ID_CHUNK):
            known |= stored(ids[start:start + ID_CHUNK])
        kept = []
        for found in self.chosen:
            if found.event_ids and all(i in known for i in found.event_ids):
                self.outcome.already_ok += 1
            else:
                kept.append(found)
        return kept, self.outcome


def plan(letters: Iterable[Letter], stored: Callable[[list[str]], set[str]],
         judge: Callable[[Letter], list[Candidate] | str] = candidate) -> tuple[list[Candidate], Outcome]:
    planner = Planner(judge)
    for item in letters:
        planner.add(item)
    return planner.finish(stored)


# The ids as one JSON text: an Array parameter is not passed the same way by chDB, clickhouse-connect and the
# owner's HTTP endpoint (chDB refused a Python list); a String is.
STORED_SQL = ("SELECT event_id FROM priced_event_ids"
              " WHERE event_id IN (SELECT arrayJoin(JSONExtract({ids:String}, 'Array(String)')))")


def stored_ids(wh: Any) -> Callable[[list[str]], set[str]]:
    def lookup(ids: list[str]) -> set[str]:
        if not ids:
            return set()
        return set(wh.query(STORED_SQL, {"ids": orjson.dumps(ids).decode()})["event_id"].to_list())
    return lookup


async def publish(bootstrap: str, topic: str, chosen: list[Candidate],
                  progress: Callable[[int, int], None] = lambda done, total: None, every: int = 1_000) -> int:
    """Send each candidate to `topic` and wait for the broker's acknowledgement of all; returns how many."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=2 * 1024 * 1024)
    await producer.start()
    try:
        pending = []
        for done, found in enumerate(chosen, 1):
            where = f"{topics.DEADLETTER}:{found.partition}:{found.offset}".encode()
            pending.append(await producer.send(topic, found.value, key=found.key,
                                               headers=[(deadletters.REPLAYED_FROM_HEADER, where)]))
            if done % every == 0:
                for future in pending:
                    await future
                pending.clear()
                progress(done, len(chosen))
        for future in pending:
            await future
    finally:
        await producer.stop()
    if len(chosen) % every:  # a multiple of `every` was said in the loop
        progress(len(chosen), len(chosen))
    return len(chosen)
