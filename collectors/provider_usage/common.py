"""What both provider pollers share: the HTTP client (auth, retries, paging), record building, poll state and the
Kafka writer. Provider specifics (endpoints, parameters, field conversion) live in openai.py and anthropic.py."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import orjson
from aiokafka import AIOKafkaProducer

from tokenmeter import topics
from tokenmeter.events import derive_event_id

log = logging.getLogger("tokenmeter.collect.provider_usage")

SOURCE = "provider-usage"
BUCKET_WIDTHS = {"1d": timedelta(days=1), "1h": timedelta(hours=1)}
RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_RETRY_WAIT_S = 120.0

# Every record carries every field (None when the provider or the kind does not report it): a stable schema.
RECORD_FIELDS = (
    "id", "provider", "kind", "bucket_start", "bucket_end", "bucket_width",
    "model", "project_id", "workspace_id", "api_key_id", "user_id", "service_tier", "batch", "context_window",
    "input_tokens", "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens", "output_tokens",
    "requests", "cost_usd", "line_item", "token_type", "cost_type", "description", "group", "fetched_at",
)


class ProviderApiError(Exception):
    """The provider API failed in a way retrying does not fix (or retries ran out)."""


class AuthError(ProviderApiError):
    """401/403: the admin key is missing, wrong or lacks admin rights."""


class ProviderFormatError(ProviderApiError):
    """A payload field is not what the documented format says; the message names the field."""


# Time helpers -------------------------------------------------------------------------------------------------
def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise ProviderFormatError(f"{where}: expected an RFC 3339 timestamp, got {value!r}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ProviderFormatError(f"{where}: expected an RFC 3339 timestamp, got {value!r}") from None
    if moment.tzinfo is None:
        raise ProviderFormatError(f"{where}: timestamp {value!r} has no time zone")
    return moment.astimezone(timezone.utc)


def from_unix(value: Any, where: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProviderFormatError(f"{where}: expected Unix seconds (integer), got {value!r}")
    return datetime.fromtimestamp(value, timezone.utc)


def floor_to(moment: datetime, width: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return epoch + ((moment - epoch) // width) * width


def parse_since(text: str, now: datetime) -> datetime:
    """'7d' / '36h' (ago) or a date / RFC 3339 timestamp (UTC when no zone is given)."""
    text = text.strip()
    if text[:-1].isdigit() and text[-1:] in ("d", "h"):
        return now - (timedelta(days=int(text[:-1])) if text[-1] == "d" else timedelta(hours=int(text[:-1])))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r}: expected e.g. 7d, 24h, 2026-11-01 or 2026-11-01T00:00:00Z") from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


# Payload helpers ----------------------------------------------------------------------------------------------
def count(result: dict[str, Any], name: str, where: str) -> int:
    """A token/request count; absent or null is 0 (the APIs omit zero parts), anything else must be an int >= 0."""
    value = result.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProviderFormatError(f"{where}.{name}: expected a non-negative integer, got {value!r}")
    return value


def group_values(result: dict[str, Any], metric_fields: set[str]) -> dict[str, Any]:
    """The dimensions of a result row: every scalar field that is not a metric. Unknown new dimensions are kept,
    so two rows never collapse onto one id."""
    return {k: v for k, v in result.items()
            if k not in metric_fields and k != "object" and (v is None or isinstance(v, (str, bool)))}


def make_record(provider: str, kind: str, start: datetime, end: datetime, group: dict[str, Any],
                fetched_at: str, **values: Any) -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(RECORD_FIELDS)
    bucket_start, bucket_end = rfc3339(start), rfc3339(end)
    record.update(provider=provider, kind=kind, bucket_start=bucket_start, bucket_end=bucket_end,
                  group=group, fetched_at=fetched_at)
    for name, value in values.items():
        if name not in record:
            raise KeyError(f"unknown provider-usage record field {name!r}")
        record[name] = format(value, "f") if isinstance(value, Decimal) else value
    # Same bucket + same dimensions -> same id on every poll, so a re-fetched bucket deduplicates downstream.
    record["id"] = derive_event_id(SOURCE, provider, kind, bucket_start, bucket_end, group)
    return record


# HTTP ----------------------------------------------------------------------------------------------------------
def retry_after_seconds(header: str | None) -> float | None:
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


class AdminClient:
    """GETs JSON from a provider admin API. Floats are parsed as Decimal (money must never pass through float);
    429/5xx/network errors are retried with backoff honouring Retry-After; 401/403 raise AuthError."""

    def __init__(self, provider: str, base_url: str, headers: dict[str, str], key_source: str, *,
                 max_attempts: int = 6, backoff_s: float = 1.0, timeout_s: float = 60.0):
        self.provider = provider
        self.key_source = key_source  # e.g. "environment variable OPENAI_ADMIN_KEY": said on 401, the key never is
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)

    async def close(self) -> None:
        await self._http.aclose()

    async def get_json(self, path: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        for attempt in range(1, self.max_attempts + 1):
            wait = min(self.backoff_s * 2 ** (attempt - 1), 60.0)
            try:
                response = await self._http.get(path, params=params)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code in (401, 403):
                    raise AuthError(
                        f"{self.provider} admin API answered {response.status_code} on {path}: the admin key from "
                        f"{self.key_source} was refused (it must be an organization admin key)."
                        f" Provider said: {_error_text(response)}")
                if response.status_code not in RETRY_STATUSES:
                    if response.status_code >= 400:
                        raise ProviderApiError(f"{self.provider} admin API answered {response.status_code} on "
                                               f"{path}: {_error_text(response)}")
                    return self._decode(response, path)
                problem = f"HTTP {response.status_code}"
                told = retry_after_seconds(response.headers.get("retry-after"))
                if told is not None:
                    wait = min(told, MAX_RETRY_WAIT_S)
            if attempt == self.max_attempts:
                raise ProviderApiError(f"{self.provider} admin API {path}: giving up after {attempt} attempts "
                                       f"({problem})")
            log.warning("%s %s: %s, retrying in %.1fs (attempt %d/%d)", self.provider, path, problem, wait,
                        attempt, self.max_attempts)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    def _decode(self, response: httpx.Response, path: str) -> dict[str, Any]:
        try:
            body = json.loads(response.text, parse_float=Decimal)
        except ValueError as exc:
            raise ProviderFormatError(f"{self.provider} {path}: response is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ProviderFormatError(f"{self.provider} {path}: expected a JSON object, got {type(body).__name__}")
        return body

    async def buckets(self, path: str, params: list[tuple[str, str]]) -> AsyncIterator[tuple[str, dict]]:
        """Every time bucket over all pages, as (where, bucket) with `where` naming it in error messages."""
        page: str | None = None
        number = 1
        while True:
            body = await self.get_json(path, params + ([("page", page)] if page else []))
            data = body.get("data")
            if not isinstance(data, list):
                raise ProviderFormatError(f"{self.provider} {path} page {number}: data: expected a list, "
                                          f"got {data!r:.80}")
            for index, bucket in enumerate(data):
                where = f"{self.provider} {path} page {number} data[{index}]"
                if not isinstance(bucket, dict):
                    raise ProviderFormatError(f"{where}: expected an object")
                yield where, bucket
            page = body.get("next_page")
            if not body.get("has_more") or not page:
                return
            number += 1


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
    except (ValueError, AttributeError):
        pass
    return response.text[:300] or "(empty body)"


# Provider interface and one poll -------------------------------------------------------------------------------
@dataclass
class Window:
    """One fetched kind: its records and the end of the last bucket that was already over when fetched."""

    records: list[dict[str, Any]] = field(default_factory=list)
    complete_until: datetime | None = None


class ProviderSpec:
    """Subclasses: name, `kinds`, `path(kind)`, `params(kind, start)`, `bucket_bounds`, `_usage`, `_cost`, and
    `results(bucket)` when a provider names a bucket's result list differently."""

    name: str
    kinds: tuple[str, ...] = ("usage", "cost")
    bucket_width: str = "1d"  # of usage; cost reports are daily at both providers

    def path(self, kind: str) -> str:
        raise NotImplementedError

    def params(self, kind: str, start: datetime) -> list[tuple[str, str]]:
        raise NotImplementedError

    def bucket_bounds(self, bucket: dict[str, Any], where: str) -> tuple[datetime, datetime]:
        raise NotImplementedError

    def results(self, bucket: dict[str, Any]) -> Any:
        return bucket.get("results")

    def rows(self, kind: str, start: datetime, end: datetime, bucket: dict[str, Any], where: str,
             fetched_at: str) -> list[dict[str, Any]]:
        """One record per result of a bucket, each checked to be an object (errors name the path)."""
        results = self.results(bucket)
        if results is None:
            return []
        if not isinstance(results, list):
            raise ProviderFormatError(f"{where}.results: expected a list, got {results!r:.80}")
        convert = self._usage if kind == "usage" else self._cost
        records = []
        for index, result in enumerate(results):
            at = f"{where}.results[{index}]"
            if not isinstance(result, dict):
                raise ProviderFormatError(f"{at}: expected an object")
            records.append(convert(result, at, start, end, fetched_at))
        return records

    def _usage(self, result: dict[str, Any], at: str, start: datetime, end: datetime,
               fetched_at: str) -> dict[str, Any]:
        raise NotImplementedError

    def _cost(self, result: dict[str, Any], at: str, start: datetime, end: datetime,
              fetched_at: str) -> dict[str, Any]:
        raise NotImplementedError

    async def fetch(self, client: AdminClient, kind: str, start: datetime, now: datetime) -> Window:
        window = Window()
        fetched_at = rfc3339(now)
        async for where, bucket in client.buckets(self.path(kind), self.params(kind, start)):
            begin, end = self.bucket_bounds(bucket, where)
            window.records.extend(self.rows(kind, begin, end, bucket, where, fetched_at))
            if end <= now and (window.complete_until is None or end > window.complete_until):
                window.complete_until = end
        return window


class PollState:
    """`{"usage": {"complete_until": ...}, "cost": {...}}`: where the next poll starts, per kind."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, dict[str, str]] = {}
        if path.exists():
            try:
                self.data = json.loads(path.read_text())
            except ValueError as exc:
                raise ProviderApiError(f"poll state {path} is not valid JSON ({exc}); fix or delete it") from None

    def start(self, kind: str, default: datetime) -> datetime:
        saved = self.data.get(kind, {}).get("complete_until")
        return parse_rfc3339(saved, f"{self.path}: {kind}.complete_until") if saved else default

    def advance(self, kind: str, complete_until: datetime | None) -> None:
        if complete_until is None:
            return
        self.data[kind] = {"complete_until": rfc3339(complete_until)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(temporary, self.path)  # atomic: a crash never leaves half a state file


class Publisher:
    """One JSON record per Kafka message on tokenmeter.provider-usage, key = provider; waits for acks."""

    def __init__(self, bootstrap_servers: str, topic: str = topics.PROVIDER_USAGE):
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self._producer: AIOKafkaProducer | None = None

    async def publish(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        try:
            if self._producer is None:
                self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap_servers, acks="all",
                                                  linger_ms=5)
                await self._producer.start()
            futures = [await self._producer.send(self.topic, orjson.dumps(r), key=r["provider"].encode())
                       for r in records]
            await asyncio.gather(*futures)
        except Exception:
            # After a failed send the producer's state is unknown: drop it, the next poll reconnects.
            await self.stop()
            raise

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.stop()
            except Exception:  # noqa: BLE001 - closing a broken producer must not mask the real error
                pass


async def poll_once(spec: ProviderSpec, client: AdminClient, publisher: Publisher, state: PollState,
                    since: datetime, now: datetime | None = None) -> int:
    """Fetch every kind from its last complete bucket (or `since`) to now, publish, then advance the state.
    The state moves only after Kafka acknowledged, so a crash re-fetches rather than loses a bucket."""
    now = now or datetime.now(timezone.utc)
    written = 0
    for kind in spec.kinds:
        start = state.start(kind, since)
        window = await spec.fetch(client, kind, start, now)
        await publisher.publish(window.records)
        state.advance(kind, window.complete_until)
        written += len(window.records)
        log.info("%s %s: %d record(s) from %s; complete until %s", spec.name, kind, len(window.records),
                 rfc3339(start), rfc3339(window.complete_until) if window.complete_until else "(unchanged)")
    return written


async def run_poller(spec: ProviderSpec, client: AdminClient, publisher: Publisher, state: PollState,
                     since: datetime, *, once: bool, interval_s: float, stop: asyncio.Event) -> None:
    """Poll now, then every `interval_s` until `stop`. Auth and format errors end the run (they need a human);
    transient failures are logged and retried at the next interval."""
    try:
        while True:
            try:
                await poll_once(spec, client, publisher, state, since)
            except (AuthError, ProviderFormatError):
                raise
            except Exception as exc:  # noqa: BLE001 - keep a long-running poller alive through outages
                if once:
                    raise
                log.error("%s poll failed, retrying in %.0fs: %s", spec.name, interval_s, exc)
            if once:
                return
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
                return
            except asyncio.TimeoutError:
                pass
    finally:
        await client.close()
        await publisher.stop()
