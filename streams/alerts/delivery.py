"""Delivering one alert to one route over HTTP, with the retry policy:

- 2xx: delivered. 408, 429 and 5xx, connection errors and timeouts: retried with exponential backoff and
  jitter (alert_backoff_seconds doubling up to alert_backoff_max_seconds), at most alert_max_attempts in all;
  a `Retry-After` (seconds or HTTP date) on 429/503 is a floor for the next delay.
- Any other status (400 invalid payload, 403, 404 channel_not_found, 410 ...): failed at once, with the status
  and the start of the body: sending the same request again cannot succeed.
Decisions use status codes and exception types only, never the text of an error.

Concurrency: one global limit of requests in flight and a small limit per host, so a hanging host can hold at
most PER_TARGET_IN_FLIGHT slots and never starves routes to other hosts (Slack and PagerDuty each count as
one host: their rate limits make more parallel requests pointless anyway)."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp
import orjson

from tokenmeter.records import iso
from tokenmeter.settings import Settings

from .payloads import pagerduty_event, sign, slack_message, webhook_body
from .routes import Route, redact

log = logging.getLogger("tokenmeter.alerts")

PER_TARGET_IN_FLIGHT = 2
RETRY_AFTER_CAP_SECONDS = 3600.0  # a broken server asking for a day must not park an alert that long
BODY_EXCERPT_CHARS = 300
USER_AGENT = "tokenmeter-alerts/1"
RETRYABLE_STATUSES = frozenset({408, 429})
FINAL_STATUSES = ("delivered", "failed")


@dataclass
class Counters:
    delivered: int = 0
    failed: int = 0
    retried: int = 0
    in_flight: int = 0
    invalid: int = 0  # alert records that could not be read (dead-lettered)
    duplicates: int = 0  # alert records (or routes) skipped because they were already delivered or failed
    unrouted: int = 0  # alerts with no route (no `notify`; anomalies: no anomaly_notify): recorded, sent nowhere

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Outcome:
    """The result of one HTTP attempt."""

    ok: bool
    retryable: bool
    http_status: int | None = None
    error: str = ""
    retry_after: float | None = None


@dataclass
class DeliveryState:
    alert_id: str
    route: Route
    status: str  # "retrying" | "delivered" | "failed"
    attempts: int
    last_error: str = ""
    http_status: int | None = None
    at: str = field(default_factory=lambda: iso(datetime.now(timezone.utc)))

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def key(self) -> str:
        return f"{self.alert_id}|{self.route.route_id}"

    def record(self) -> dict[str, Any]:
        """The `tokenmeter.alert-deliveries` record (contract in tokenmeter/records.py); target masked."""
        return {"alert_id": self.alert_id, "route": self.route.kind, "route_id": self.route.route_id,
                "target": self.route.masked,
                "status": self.status, "attempts": self.attempts, "last_error": self.last_error,
                "http_status": self.http_status, "at": self.at}


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_SECONDS)


def backoff_delay(failures: int, base: float, cap: float, rng: random.Random) -> float:
    """Equal jitter: between half and all of min(cap, base * 2^(failures-1)), so retries of many alerts to one
    endpoint spread out instead of arriving together, yet never come sooner than half the backoff."""
    ceiling = min(cap, base * (2 ** max(failures - 1, 0)))
    return ceiling / 2 + rng.random() * ceiling / 2


class Sender:
    """Sends alerts to routes over one aiohttp session; the caller owns the session."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession, counters: Counters | None = None,
                 rng: random.Random | None = None):
        self.settings = settings
        self.session = session
        self.counters = counters or Counters()
        self.rng = rng or random.Random()
        self._secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        self._slots = asyncio.Semaphore(settings.alert_max_in_flight)
        self._per_target: dict[str, asyncio.Semaphore] = {}
        self._timeout = aiohttp.ClientTimeout(total=settings.alert_timeout_seconds)

    def request_for(self, route: Route, alert: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
        """URL, headers and body of one attempt, unsigned (`signed` adds a webhook's signature when it is sent)."""
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if route.kind == "slack":
            return route.target, headers, orjson.dumps(slack_message(alert))
        if route.kind == "pagerduty":
            return self.settings.pagerduty_url, headers, orjson.dumps(pagerduty_event(alert, route.target))
        body = webhook_body(alert)
        headers["X-Tokenmeter-Alert-Id"] = alert["id"]
        return route.target, headers, body

    def signed(self, route: Route, headers: dict[str, str], body: bytes) -> dict[str, str]:
        """A webhook's headers with a signature of now: taken once the request has its slots, so waiting for a slow
        host does not age it past a receiver's replay window (walk32: it was signed before the wait)."""
        if route.kind != "webhook" or not self._secret:
            return headers
        timestamp = str(int(time.time()))
        return {**headers, "X-Tokenmeter-Timestamp": timestamp,
                "X-Tokenmeter-Signature": sign(self._secret, timestamp, body)}

    async def attempt(self, route: Route, alert: dict[str, Any], stop: asyncio.Event | None = None) -> Outcome | None:
        """One HTTP attempt; None if `stop` was set while waiting for a free slot (nothing was sent)."""
        try:
            url, headers, body = self.request_for(route, alert)
        except (KeyError, TypeError, ValueError) as exc:  # a record the payload builder cannot render
            return Outcome(False, False, None, f"cannot build the {route.kind} payload: {exc!r}")
        host = urlsplit(url).netloc.rpartition("@")[2]  # a dead host often serves many webhook URLs
        target_slot = self._per_target.setdefault(host, asyncio.Semaphore(PER_TARGET_IN_FLIGHT))
        if not await _acquire(target_slot, stop):
            return None
        if not await _acquire(self._slots, stop):
            target_slot.release()
            return None
        try:
            self.counters.in_flight += 1
            try:
                return await self._post(url, self.signed(route, headers, body), body)
            except aiohttp.InvalidURL as exc:
                return Outcome(False, False, None, f"invalid URL: {redact(str(exc), [route])}")
            except aiohttp.TooManyRedirects:
                return Outcome(False, False, None, "too many redirects")
            except asyncio.TimeoutError:
                return Outcome(False, True, None, f"no response within {self.settings.alert_timeout_seconds:g} s")
            except (aiohttp.ClientError, OSError) as exc:
                return Outcome(False, True, None, redact(f"{type(exc).__name__}: {exc}", [route])[:BODY_EXCERPT_CHARS])
            finally:
                self.counters.in_flight -= 1
        finally:
            self._slots.release()
            target_slot.release()

    async def _post(self, url: str, headers: dict[str, str], body: bytes) -> Outcome:
        async with self.session.post(url, data=body, headers=headers, timeout=self._timeout) as resp:
            status = resp.status
            if 200 <= status < 300:
                return Outcome(True, False, status)
            excerpt = (await resp.content.read(BODY_EXCERPT_CHARS * 4)).decode("utf-8", "replace")
            excerpt = " ".join(excerpt.split())[:BODY_EXCERPT_CHARS]
            retryable = status in RETRYABLE_STATUSES or 500 <= status <= 599
            retry_after = parse_retry_after(resp.headers.get("Retry-After")) if status in (429, 503) else None
            return Outcome(False, retryable, status, f"HTTP {status}: {excerpt}".rstrip(": "), retry_after)

    async def deliver(self, alert: dict[str, Any], route: Route, *, previous: dict[str, Any] | None = None,
                      on_change: Callable[[DeliveryState], Awaitable[None]] | None = None,
                      stop: asyncio.Event | None = None) -> DeliveryState:
        """Attempt until delivered, permanently failed or out of attempts; report every state change.

        `previous` is the last recorded state of this (alert, route): its attempts count toward the limit, so a
        restart does not grant a fresh set. Returns a non-final "retrying" state if `stop` is set while waiting."""
        attempts = int((previous or {}).get("attempts") or 0)
        state = DeliveryState(alert["id"], route, "retrying", attempts,
                              (previous or {}).get("last_error") or "", (previous or {}).get("http_status"))
        max_attempts = self.settings.alert_max_attempts
        while True:
            if attempts >= max_attempts:  # recorded attempts used up, but the final record was never written
                state = DeliveryState(alert["id"], route, "failed", attempts,
                                      f"gave up after {attempts} attempts: {state.last_error}", state.http_status)
                break
            outcome = await self.attempt(route, alert, stop)
            if outcome is None:  # shutting down: nothing sent, the state stays open
                return state
            attempts += 1
            if outcome.ok:
                state = DeliveryState(alert["id"], route, "delivered", attempts, "", outcome.http_status)
                break
            if not outcome.retryable or attempts >= max_attempts:
                reason = outcome.error if not outcome.retryable else f"gave up after {attempts} attempts: {outcome.error}"
                state = DeliveryState(alert["id"], route, "failed", attempts, reason, outcome.http_status)
                break
            delay = backoff_delay(attempts, self.settings.alert_backoff_seconds,
                                  self.settings.alert_backoff_max_seconds, self.rng)
            if outcome.retry_after is not None:
                delay = max(delay, outcome.retry_after)
            state = DeliveryState(alert["id"], route, "retrying", attempts, outcome.error, outcome.http_status)
            self.counters.retried += 1
            log.warning("alert %s -> %s %s: attempt %d/%d failed (%s); retrying in %.2f s", alert["id"], route.kind,
                        route.masked, attempts, max_attempts, outcome.error, delay)
            if on_change:
                await on_change(state)
            if await _wait(stop, delay):
                return state
        if state.status == "delivered":
            self.counters.delivered += 1
            log.info("alert %s -> %s %s: delivered (HTTP %s, attempt %d)", alert["id"], route.kind, route.masked,
                     state.http_status, attempts)
        else:
            self.counters.failed += 1
            log.error("alert %s -> %s %s: failed after %d attempt(s): %s", alert["id"], route.kind, route.masked,
                      attempts, state.last_error)
        if on_change:
            await on_change(state)
        return state


async def _wait(stop: asyncio.Event | None, seconds: float) -> bool:
    """Sleep, waking early when `stop` is set; True if stopped."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
        return True
    except asyncio.TimeoutError:
        return False


async def _acquire(semaphore: asyncio.Semaphore, stop: asyncio.Event | None) -> bool:
    """Take a slot, giving up (False) when `stop` is set first: at shutdown no new request starts."""
    if stop is None:
        await semaphore.acquire()
        return True
    if stop.is_set():
        return False
    acquire = asyncio.ensure_future(semaphore.acquire())
    stopped = asyncio.ensure_future(stop.wait())
    got = False
    try:
        await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
        got = acquire.done() and not acquire.cancelled() and not stop.is_set()
        return got
    finally:
        stopped.cancel()
        if not got:
            if acquire.done() and not acquire.cancelled():
                semaphore.release()  # won the slot but we are stopping (or were cancelled): give it back
            else:
                acquire.cancel()
