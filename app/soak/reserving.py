"""The soak's reserving gateway (issue 15): before each call it asks `POST /v1/reservations` for the call's worst
case, makes the call only on 201, then sends the usage event carrying the request id as its `event_id` (direct to
`tokenmeter.usage`, retried until the broker acknowledges it, like the direct producer) so the hold settles. A few
calls fail before any billing (the gateway releases the hold with DELETE), and a few are abandoned (the gateway
"crashes" mid-call: neither usage nor DELETE, the hold must expire after the TTL). Fail closed: no reservation
(refused, 503, unreachable worker), no call.

Its budget (`budget-soak-r`, a hard `block` budget on team `soak-r`) is sized so that the traffic reaches the limit
early in the run; the check (checks.reservation_check) then compares what the provider would bill (every call
made, priced) with the limit."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from tokenmeter import topics
from app.soak.traffic import Ledger, _pause, drop_producer

log = logging.getLogger("app.soak")

RESERVE_TEAM = "soak-r"
RESERVE_BUDGET = f"budget-{RESERVE_TEAM}"
RESERVATION_TTL_S = 30  # above a call + the usage pipeline's delay + a worker's restart under load
MODEL = ("openai", "gpt-4o")
FAILED_SHARE = 0.08  # calls that fail before billing: the gateway releases the hold
ABANDONED_SHARE = 0.03  # the gateway dies mid-call: the hold must expire


@dataclass
class Call:
    request_id: str
    held_usd: Decimal  # the worst case tokenmeter held
    reserved_at: float
    usage_acked_at: float | None = None
    outcome: str = "open"  # billed / released / abandoned


@dataclass
class ReserveLog:
    """What the reserving gateway did: every admitted call, refusals and unavailability."""

    calls: dict[str, Call] = field(default_factory=dict)
    refused: int = 0
    unavailable: int = 0  # 503 or unreachable: no call made (fail closed)
    unavailable_why: dict[str, int] = field(default_factory=dict)  # "503: not ready: ..." / "unreachable" -> count
    bad: list[str] = field(default_factory=list)  # unexpected answers (a 4xx other than 403/429)
    last_reserved_at: float = 0.0

    def counts(self) -> dict[str, int]:
        out = {"admitted": len(self.calls), "refused": self.refused, "unavailable": self.unavailable}
        for call in self.calls.values():
            out[call.outcome] = out.get(call.outcome, 0) + 1
        return out


def new_call_event(ledger: Ledger, request_id: str, prompt_tokens: int, output_tokens: int) -> dict:
    provider, model = MODEL
    return {"event_id": request_id, "ts": datetime.now(timezone.utc).isoformat(), "source": "soak-reserve",
            "provider": provider, "model": model,
            "attribution": {"org": "soak", "team": RESERVE_TEAM, "user": f"u{ledger.seq % 3}",
                            "tags": {"request_id": request_id}},
            "usage": {"input_tokens": prompt_tokens, "output_tokens": output_tokens}}


async def reserving_client(api_url: str, bootstrap: str, ledger: Ledger, book: ReserveLog, stop: asyncio.Event,
                           rate: float, name: str) -> None:
    """One gateway replica: reserve, call (a short random latency), send usage until acknowledged."""
    rng = ledger.rng
    producer: AIOKafkaProducer | None = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        try:
            while not stop.is_set():
                ledger.seq += 1
                request_id = f"soak-{ledger.run_id}-reserve-{name}-{ledger.seq}"
                prompt, max_output = rng.randint(200, 2000), rng.randint(100, 1000)
                body = {"provider": MODEL[0], "model": MODEL[1], "prompt_tokens": prompt,
                        "max_output_tokens": max_output, "request_id": request_id,
                        "attribution": {"org": "soak", "team": RESERVE_TEAM, "user": f"u{ledger.seq % 3}"}}
                try:
                    async with session.post(f"{api_url}/v1/reservations", json=body) as resp:
                        answer = await resp.json(content_type=None)
                        status = resp.status
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
                    status, answer = 0, type(exc).__name__
                if status in (403, 429):
                    book.refused += 1
                    await _pause(stop, 1 / rate)
                    continue
                if status != 201:
                    if status not in (0, 503):
                        book.bad.append(f"{status}: {str(answer)[:200]}")
                    book.unavailable += 1
                    why = f"{status}: {str((answer or {}).get('reason', ''))[:60]}" if isinstance(answer, dict) \
                        else f"unreachable ({answer})"
                    book.unavailable_why[why] = book.unavailable_why.get(why, 0) + 1
                    await _pause(stop, 0.5)
                    continue
                now = time.time()
                call = book.calls[request_id] = Call(request_id, Decimal(answer["held"]["cost_usd"]), now)
                book.last_reserved_at = now
                await asyncio.sleep(rng.uniform(0.05, 0.6))  # the provider call
                roll = rng.random()
                if roll < ABANDONED_SHARE:
                    call.outcome = "abandoned"
                elif roll < ABANDONED_SHARE + FAILED_SHARE:
                    call.outcome = "released"  # failed before billing: release at once (a 404 is fine: expired)
                    await _release(session, api_url, answer["reservation_id"], stop)
                else:
                    event = new_call_event(ledger, request_id, prompt, rng.randint(0, max_output))
                    producer = await _send_until_acked(producer, bootstrap, event, ledger)
                    call.usage_acked_at = time.time()
                    call.outcome = "billed"
                await _pause(stop, 1 / rate)
        finally:
            if producer is not None:
                await producer.stop()


async def _release(session: aiohttp.ClientSession, api_url: str, reservation_id: str, stop: asyncio.Event) -> None:
    for _ in range(20):
        try:
            async with session.delete(f"{api_url}/v1/reservations/{reservation_id}") as resp:
                if resp.status in (200, 404):
                    return
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            pass
        await asyncio.sleep(0.5)  # the hold expires after its TTL anyway


async def _send_until_acked(producer: AIOKafkaProducer | None, bootstrap: str, event: dict,
                            ledger: Ledger) -> AIOKafkaProducer:
    """The call happened: its usage must reach tokenmeter, whatever is being killed (even after the soak's stop)."""
    while True:
        try:
            if producer is None:
                producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, request_timeout_ms=5000)
                await producer.start()
            await producer.send_and_wait(topics.USAGE, orjson.dumps([event]), key=event["attribution"]["team"].encode())
            ledger.ack([event], "reserve")
            return producer
        except Exception as exc:  # broker down or restarting: the same event with a fresh client
            ledger.retries += 1
            log.debug("reserving client: %r", exc)
            producer = await drop_producer(producer)
            await asyncio.sleep(0.5)
