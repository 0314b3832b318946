"""Steady soak traffic from three kinds of senders, each keeping a ledger of what the pipeline acknowledged:
direct Kafka producers (one event per message, with exact and ts-shifted duplicates and hostile records), the
HTTP collector (`POST /v1/events`, 202 = acknowledged) and the file-tail collector (JSON lines appended to a
file). A sender retries an event until it is acknowledged, with the same event_id, as a real client would."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from tokenmeter import topics

log = logging.getLogger("app.soak")

TEAMS = ("soak-a", "soak-b", "soak-c", "soak-d")  # a-c have budgets, d has none
MODELS = (("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5"), ("gemini", "gemini-2.5-flash"))


def hostile_values() -> list[bytes]:
    """Records that must become dead letters (or 4xx), never events, and never stop anything."""
    return [
        b"{not json",
        b"\xff\xfe binary \x00",
        orjson.dumps({"event_id": "soak-hostile-no-fields"}),
        orjson.dumps([{"event_id": "soak-hostile-types", "ts": "yesterday", "provider": 7, "model": None,
                       "usage": {"input_tokens": "many"}}]),
        orjson.dumps([{"event_id": "soak-hostile-negative", "ts": datetime.now(timezone.utc).isoformat(),
                       "source": "soak", "provider": "openai", "model": "gpt-4o", "attribution": {"team": "soak-a"},
                       "usage": {"input_tokens": -5, "output_tokens": 1}}]),
        b"[" * 300 + b"1" + b"]" * 300,  # deeper than orjson parses
        orjson.dumps({"huge": "x" * 200_000}),
    ]


@dataclass
class Ledger:
    """Every event acknowledged by the pipeline (event_id -> event) and when, plus counters for the printout."""

    run_id: str
    acked: dict[str, dict] = field(default_factory=dict)
    acked_at: dict[str, float] = field(default_factory=dict)  # unix time of the first acknowledgement
    sent: dict[str, int] = field(default_factory=lambda: {"direct": 0, "http": 0, "file": 0, "reserve": 0})
    duplicates: int = 0
    shifted: set[str] = field(default_factory=set)  # ids re-sent with a later ts
    hostile: int = 0
    hostile_accepted: int = 0  # a hostile HTTP body answered 2xx: a bug
    retries: int = 0
    # events whose send was answered by an error (or not at all) when the traffic stopped: the request may have
    # reached Kafka before the collector or broker died, so they may be stored; no sender is left to retry them
    in_doubt: dict[str, dict] = field(default_factory=dict)
    seq: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def new_event(self, source: str) -> dict:
        self.seq += 1
        provider, model = self.rng.choice(MODELS)
        team = TEAMS[self.seq % len(TEAMS)]
        return {"event_id": f"soak-{self.run_id}-{source}-{self.seq}", "ts": datetime.now(timezone.utc).isoformat(),
                "source": f"soak-{source}", "provider": provider, "model": model,
                "attribution": {"org": "soak", "team": team, "user": f"u{self.seq % 7}"},
                "usage": {"input_tokens": self.rng.randint(200, 4000), "cached_input_tokens": self.rng.randint(0, 150),
                          "output_tokens": self.rng.randint(20, 900)}}

    def leave_in_doubt(self, events: list[dict], source: str) -> None:
        for event in events:
            self.in_doubt[event["event_id"]] = {**event, "_source": source}

    def settle_in_doubt(self, stored_ids: set[str]) -> None:
        """The events in doubt that the warehouse holds were acknowledged after all (their answer was lost)."""
        for event_id in sorted(stored_ids & set(self.in_doubt)):
            event = dict(self.in_doubt.pop(event_id))
            self.ack([event], event.pop("_source"))

    def ack(self, events: list[dict], source: str) -> None:
        now = time.time()
        for event in events:
            if event["event_id"] not in self.acked:
                self.acked[event["event_id"]] = event
                self.acked_at[event["event_id"]] = now
                self.sent[source] += 1

    def some_acked(self) -> dict | None:
        if not self.acked:
            return None
        return self.acked[self.rng.choice(list(self.acked)[-500:])]


async def direct_producer(bootstrap: str, ledger: Ledger, stop: asyncio.Event, rate: float,
                          duplicate_share: float, hostile_share: float, shifted_duplicates: bool) -> None:
    """A gateway producing to tokenmeter.usage itself; reconnects whenever the broker goes away."""
    hostile = hostile_values()
    producer: AIOKafkaProducer | None = None
    pending: list[dict] = []
    while not stop.is_set():
        try:
            if producer is None:
                producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, request_timeout_ms=5000,
                                            max_request_size=1_048_576)
                await producer.start()
            if not pending:
                pending = [ledger.new_event("direct")]
            roll = ledger.rng.random()
            for event in pending:
                await producer.send_and_wait(topics.USAGE, orjson.dumps([event]),
                                             key=event["attribution"]["team"].encode())
            ledger.ack(pending, "direct")
            pending = []
            if roll < duplicate_share and (again := ledger.some_acked()):
                if shifted_duplicates and ledger.rng.random() < 0.5:  # the same call logged again later
                    shifted = datetime.fromisoformat(again["ts"]) + timedelta(seconds=90)
                    again = {**again, "ts": shifted.isoformat()}
                    ledger.shifted.add(again["event_id"])
                await producer.send_and_wait(topics.USAGE, orjson.dumps([again]),
                                             key=again["attribution"]["team"].encode())
                ledger.duplicates += 1
            elif roll > 1 - hostile_share:
                await producer.send_and_wait(topics.USAGE, ledger.rng.choice(hostile), key=b"soak-a")
                ledger.hostile += 1
        except Exception as exc:  # broker down or restarting: retry the same event with a fresh client
            ledger.retries += 1
            log.debug("direct producer: %r", exc)
            producer = await drop_producer(producer)
            await _pause(stop, 0.5)
            continue
        await _pause(stop, 1 / rate)
    if pending:  # sent at least once without an acknowledgement, and the traffic stopped
        ledger.leave_in_doubt(pending, "direct")
    if producer is not None:
        await producer.stop()


async def http_sender(url: str, ledger: Ledger, stop: asyncio.Event, rate: float, hostile_share: float) -> None:
    """An SDK posting batches of canonical events to the HTTP collector; 202 means acknowledged by Kafka."""
    batch: list[dict] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        while not stop.is_set():
            if not batch:
                batch = [ledger.new_event("http") for _ in range(4)]
            try:
                async with session.post(url, data=orjson.dumps(batch),
                                        headers={"Content-Type": "application/json"}) as resp:
                    if resp.status == 202:
                        ledger.ack(batch, "http")
                        batch = []
                    else:
                        ledger.retries += 1
                if ledger.rng.random() < hostile_share:
                    body = ledger.rng.choice(hostile_values())
                    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                        ledger.hostile += 1
                        if resp.status < 300:
                            ledger.hostile_accepted += 1
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                ledger.retries += 1  # collector being restarted: same batch again
                await _pause(stop, 0.5)
                continue
            await _pause(stop, 4 / rate)
        if batch:  # posted without a 202 (the collector may have produced it before it died), and traffic stopped
            ledger.leave_in_doubt(batch, "http")


async def file_writer(path: Path, ledger: Ledger, stop: asyncio.Event, rate: float) -> None:
    """A gateway appending JSON-lines logs that the file-tail collector follows. A line counts as acknowledged
    when written: the tailer checkpoints only after Kafka acknowledged it, so it is never skipped."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as out:
        while not stop.is_set():
            events = [ledger.new_event("file") for _ in range(2)]
            out.write(b"".join(orjson.dumps(e) + b"\n" for e in events))
            out.flush()
            ledger.ack(events, "file")
            await _pause(stop, 2 / rate)


async def drop_producer(producer: AIOKafkaProducer | None) -> None:
    """Stop a client whose broker went away (bounded: a dead broker must not hang the soak); the caller retries
    with a fresh one."""
    if producer is not None:
        try:
            await asyncio.wait_for(producer.stop(), 5)
        except Exception:  # noqa: BLE001 - it is being thrown away either way
            pass
    return None


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass
