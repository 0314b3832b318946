"""Admission by reservation: `POST /v1/reservations` holds a call's worst-case cost on every budget whose scope
matches, decided by each budget's one owner, before the call is made (docs/budgets.md, issue 15).

    gateway --POST /v1/reservations--> any worker (the coordinator)
        prices the worst case (worst_case.py), finds the matching budgets, groups them by owner
        --(local call, or POST /v1/reservations/_hold to the owning worker)--> owner.admit: all or none
           hold records written to tokenmeter.budget-holds and acknowledged, then 201
        a refusal anywhere: the holds placed on other owners are released, 403 / 429 like /v1/decision
    usage with the same request id --(pricing worker, budget-spend)--> owner: spend committed, hold dropped

Why the coordinator forwards instead of answering 307/421 with the owner's address: a call can match budgets of
several owners (a per-team and a per-model budget), which no single redirect can name, and the gateways' HTTP
clients (Kong's resty.http, APISIX's, Envoy's ext_authz, httpx by default) do not follow redirects of a POST. So
any worker answers every reservation in one round trip for the gateway; the extra hop between workers is
internal. The owner's address comes from Faust's assignor (each worker publishes its URL in the group metadata).

A reservation id names the `budget-spend` partitions that hold it (`rsv_<hex>_p<partitions>`), so GET and
DELETE reach the right owners even after a rebalance moved those partitions.
"""

from __future__ import annotations

import asyncio
import contextvars
import difflib
import gc
import logging
import time
import secrets
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
from aiohttp.web import Response
from faust.utils import json as faust_json

from tokenmeter import topics
from tokenmeter.events import Attribution
from tokenmeter.records import iso, money

from .decisions import (AttributeOutOfBounds, ConflictingAttributes, attributes_from_request, check_attribute,
                        check_tag_count, header_tag_form, ignored_headers, ignored_parameters)
from .holds import Hold, hold_log_record
from .journal import HoldJournal
from .looplag import GcPauses, LoopLagProbe
from .murmur import DefaultPartitioner
from .owner import RESERVATION_COUNTS
from .readiness import spend_partition
from .reservation_answer import admitted_answer
from .worst_case import WorstCaseError, count_prompt_tokens, worst_case

log = logging.getLogger("tokenmeter.reservations")
FORWARD_TIMEOUT_S = 2.0
ID_PREFIX = "rsv_"
MAX_ID = 200  # request ids, reservation ids
ATTRIBUTION_KEYS = tuple(name for name in Attribution.model_fields if name != "tags")  # the usage event's
RESERVATION_FIELDS = ("provider", "model", "attribution", "prompt_tokens", "prompt", "max_output_tokens", "request_id",
                      "service_tier")  # docs/budgets.md, "The reservation API"
LOG_FLUSH_SECONDS = 0.1  # hold log records are sent in batches this often (the journal has them at once)
LOG_BATCH = 500  # log records per Kafka record (a JSON array, ~150 KB)
GC_YOUNG_THRESHOLD = 7_000  # the cyclic GC's generation-0 threshold once the heap is frozen (freeze_startup_heap)
# A request carrying this header gets its phases in Server-Timing (phase_timing): where a slow reservation's time went
TIMING_HEADER = "X-Tokenmeter-Timing"
# the phase marks of the reservation being handled (perf_counter seconds: handler start, hold write asked, its
# records queued, acknowledged), set only for a request that asked for them; each aiohttp handler is a task of its
# own, so each has its own value
_PHASE_MARKS: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("reservation_phases", default=None)


class ReservationError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# A prompt in a body larger than this, or any prompt before a tokenizer is loaded (the first load takes 0.5-4 s), is
# counted in a thread: tiktoken encodes without the GIL, so the event loop keeps answering decisions and smaller
# reservations meanwhile. On the loop, one ~850 KB prompt took 0.5 s of the loop's CPU and held it 2 s (hostile32);
# a small prompt stays on the loop, where counting costs less than the hop to a thread.
COUNT_OFF_LOOP_BYTES = 32 * 1024


async def _count_off_loop(body: dict[str, Any], size: int) -> int | None:
    """The prompt's tokens counted in a thread when it is long, else None (`parse` counts it, or refuses the body)."""
    prompt, model = body.get("prompt"), body.get("model")
    if body.get("prompt_tokens") is not None or prompt is None or not isinstance(model, str) or not model:
        return None
    tokenizers = sys.modules.get("streams.metering.tokenizers")  # imported by the first count, not here (tiktoken)
    if size <= COUNT_OFF_LOOP_BYTES and tokenizers is not None and tokenizers.get_encoding.cache_info().currsize:
        return None
    return await asyncio.to_thread(count_prompt_tokens, prompt, model)


def _json(web: Any, body: dict[str, Any], status: int, **headers: str) -> Any:
    return web.json(body, status=status, headers={"Cache-Control": "no-store", **headers})


def reservation_partitions(reservation_id: str) -> list[int] | None:
    """The budget-spend partitions named in a reservation id; None when the id is not one of ours."""
    if not reservation_id.startswith(ID_PREFIX) or len(reservation_id) > MAX_ID:
        return None
    _, _, tail = reservation_id.rpartition("_p")
    if tail == "":
        return []
    try:
        return sorted({int(p) for p in tail.split(".")})
    except ValueError:
        return None


def new_reservation_id(partitions: list[int]) -> str:
    return f"{ID_PREFIX}{secrets.token_hex(16)}_p{'.'.join(str(p) for p in sorted(set(partitions)))}"


def provider_request(body: dict[str, Any], headers: Any, path: str, header_prefix: str) -> dict[str, Any]:
    """A reservation from the provider request itself, as Envoy's ext_authz forwards it (`with_request_body`):
    OpenAI chat completions / responses / completions and Anthropic messages. The provider comes from the
    `<prefix>provider` header, else the path (`/v1/messages` is Anthropic), else openai; the request id from
    `x-request-id` (Envoy sets one on every request); the output bound from max_completion_tokens,
    max_output_tokens or max_tokens; attribution from the `<prefix>*` headers as for /v1/decision."""
    provider = headers.get(f"{header_prefix}provider") or ("anthropic" if path.rstrip("/").endswith("messages")
                                                           and "chat" not in path else "openai")
    prompt: Any = body.get("messages")
    if prompt is not None and isinstance(body.get("system"), str):  # Anthropic's system prompt sits beside
        prompt = [{"role": "system", "content": body["system"]}, *prompt]
    if prompt is None:
        prompt = body.get("input", body.get("prompt"))
    if isinstance(prompt, list) and not all(isinstance(item, dict) for item in prompt):
        prompt = " ".join(str(item) for item in prompt)
    max_output = next((body[k] for k in ("max_completion_tokens", "max_output_tokens", "max_tokens")
                       if body.get(k) is not None), None)
    return {"provider": provider, "model": body.get("model"), "prompt": prompt, "max_output_tokens": max_output,
            "service_tier": body.get("service_tier"), "request_id": headers.get("x-request-id")}


def freeze_startup_heap() -> None:
    """Move every object alive now (the imported modules, the catalog, Faust's and aiokafka's structures: most of
    the worker's heap) out of the cyclic GC's reach, once, when the worker first owns budgets (before it admits).
    A full collection otherwise rescans all of them every few seconds under reservation traffic: 56-250 ms pauses of
    the event loop (the bench's p99, measured with a probe of gc.callbacks), with nothing to collect. Objects freed
    by reference counting are still freed; only cyclic garbage among them would stay (documented by gc.freeze).

    Then the young generation's threshold goes up from CPython's 700 to GC_YOUNG_THRESHOLD: under open-loop traffic
    the objects of the requests in flight rise and fall in bursts, and at 700 every rise collected the young
    generation (138-418 collections per 10,000 reservations), promoting whatever was in flight (requests, holds) to
    the older generations, whose collections followed (13-38 and 1-3 full ones, pauses up to ~20 ms at load 20);
    at 7,000, 4-11 young collections and no full one in the same bench, GC time per reservation ~10-50x less
    (docs/rounds/budgets.md, reserve7). Each young collection scans more objects: 1-2 ms of wall time at load 17-20."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    log.info("froze %d startup objects out of the cyclic GC in %.0f ms; young generation collected every %d net "
             "allocations", gc.get_freeze_count(), (time.perf_counter() - started) * 1000, GC_YOUNG_THRESHOLD)


GC_PAUSES = GcPauses()  # installed by the worker's reservation service (install); one per process, as the GC is


def gc_status(window_s: float | None = None) -> dict[str, Any]:
    """The cyclic GC as the latency tail sees it: objects kept out of it (freeze_startup_heap), collections so
    far per generation (a full one, the third, is the long pause) and their pauses (`pauses`: count, total and
    longest ms per generation, since the service started)."""
    return {"frozen_objects": gc.get_freeze_count(), "collections": [g["collections"] for g in gc.get_stats()],
            "thresholds": list(gc.get_threshold()), "pauses": GC_PAUSES.summary(window_s)}


class ReservationService:
    """Mounted on the worker beside BudgetService (`service`), sharing its owner, readiness and definitions."""

    def __init__(self, service: Any, book: Any):
        self.service = service
        self.book = book
        self.settings = service.settings
        self.revoked = False  # set when partitions are revoked, cleared by announce() after the next load
        self._revoked_in_generation = 0
        self._producers: dict[str, Any] = {}  # "holds" (awaited by reservations), "log" (hold log batches)
        self._producer_lock = asyncio.Lock()
        self._inflight: set[asyncio.Future] = set()
        self.journal = HoldJournal(self.settings.data_dir)
        self._log_pending: list[dict[str, Any]] = []
        self._log_task: asyncio.Future | None = None
        self._session: aiohttp.ClientSession | None = None
        self.owner_urls: dict[int, str] = {}  # budget-spend partition -> URL of its owner (announce / on_owners)
        self._aliases: dict[tuple[str, str], list[Any]] = {}  # (provider, catalog entry) -> budgets (_matching)
        self._aliases_version = -1
        self._me: str | None = None  # this worker's URL as announced (canonical_url, without a trailing slash)
        self.latencies: list[float] = []
        self.hold_acks: list[float] = []  # seconds from a hold write's start to the broker's acknowledgement
        self.stats = {"reservations": 0, "admitted": 0, "refused": 0, "forwarded": 0, "released": 0,
                      "not_ready": 0, "bad_requests": 0}
        self._heap_frozen = False
        self.loop_lag = LoopLagProbe()  # the event loop's lag (looplag.py), shown by GET /v1/reservations

    # Persistence of holds -------------------------------------------------------------------------------
    async def producer(self, purpose: str = "holds") -> Any:
        """A producer of its own with no linger: a reservation waits for its hold's acknowledgement. The hold log's
        batches (up to LOG_BATCH records each, every LOG_FLUSH_SECONDS) go through a second one ("log"): aiokafka
        sends one produce request at a time per connection, so on the holds' producer every hold arriving while a
        log batch was in flight waited for that batch's acknowledgement too."""
        if purpose not in self._producers:
            async with self._producer_lock:
                if purpose not in self._producers:
                    from aiokafka import AIOKafkaProducer

                    # the default partitioning with a murmur2 3x faster than aiokafka's (murmur.py): the same
                    # partition for every key, ~17 us less CPU per hold key
                    producer = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap_servers, linger_ms=0,
                                                acks="all", enable_idempotence=False, partitioner=DefaultPartitioner())
                    await producer.start()
                    self._producers[purpose] = producer
        return self._producers[purpose]

    async def write_holds(self, holds: list[Hold], tombstone: bool = False) -> None:
        """Write hold records (or their tombstones) and wait for the acknowledgements. The write counts as in flight
        from the call on, before its first await: a restore (`settle_writes`) that starts while the producer is
        still being started or the records are being queued must wait for them too, or it reads the topic without
        them (a hold admitted but not restored, or a released one restored)."""
        if not holds:
            return
        logged = [hold_log_record(h) for h in holds if tombstone or not h.carried]  # a carried hold's admission
        if logged:  # is in the warehouse already
            self.journal.append(logged)  # before the answer: survives a broker loss
            self._log(logged)
        # In flight from here (a plain future, not a task per write: a reservation's CPU); once queued, the
        # records' own send futures stay in flight until acknowledged, even if this caller is cancelled meanwhile.
        # A caller cancelled before its records are queued (a worker shutting down) writes nothing: it was never
        # answered, and its hold stays in this owner's memory only (held until its TTL here, safe).
        queuing = asyncio.get_running_loop().create_future()
        self._inflight.add(queuing)
        started = time.perf_counter()
        marks = None if tombstone else _PHASE_MARKS.get()
        try:
            sends = await self._queue_holds(holds, tombstone)
        finally:
            self._inflight.discard(queuing)
            queuing.set_result(None)
        queued = time.perf_counter() if marks is not None else 0.0
        if len(sends) == 1:  # the usual admission: one budget, no gather future to build
            await sends[0]
        else:
            await asyncio.gather(*sends)
        acked = time.perf_counter()
        _keep_last(self.hold_acks, acked - started)
        if marks is not None:
            marks += (started, queued, acked)

    async def _queue_holds(self, holds: list[Hold], tombstone: bool) -> list[asyncio.Future]:
        producer = await self.producer()
        sends = []
        for h in holds:
            sent = await producer.send(topics.BUDGET_HOLDS, key=h.key,
                                       value=None if tombstone else orjson.dumps(h.to_json()))
            self._inflight.add(sent)
            sent.add_done_callback(self._inflight.discard)
            sends.append(sent)
        return sends

    def _log(self, records: list[dict[str, Any]]) -> None:
        """Queue log records for `tokenmeter.budget-hold-log` (the warehouse's `budget_holds`). Not waited for by
        the reservation (the journal has them): sent every LOG_FLUSH_SECONDS as JSON arrays, one Kafka record per
        up to LOG_BATCH log records, since a Kafka send per reservation cost ~2 ms of its median under load."""
        self._log_pending.extend(records)
        if self._log_task is None or self._log_task.done():
            self._log_task = asyncio.ensure_future(self._flush_log(LOG_FLUSH_SECONDS))

    async def _flush_log(self, wait: float) -> None:
        while self._log_pending:
            await asyncio.sleep(wait)
            pending, self._log_pending = self._log_pending, []
            try:
                producer = await self.producer("log")
                sends = [await producer.send(topics.BUDGET_HOLD_LOG, value=orjson.dumps(pending[at:at + LOG_BATCH]))
                         for at in range(0, len(pending), LOG_BATCH)]
                await asyncio.gather(*sends)
            except Exception as exc:  # noqa: BLE001 - the journal still has them; never a reason to refuse
                log.warning("%d hold log record(s) not sent to %s (%s); the hold journal has them", len(pending),
                            topics.BUDGET_HOLD_LOG, exc)

    async def settle_writes(self) -> None:
        """Wait for hold records in flight: a restore must read every hold admitted before it."""
        if self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def stop(self) -> None:
        await self.loop_lag.stop()
        if self._log_pending and self._producers:
            await self._flush_log(0)
        if self._session is not None:
            await self._session.close()
        for producer in self._producers.values():
            await producer.stop()
        self.journal.close()

    # Owner side ---------------------------------------------------------------------------------------------
    def _not_owner(self, names: list[str]) -> str | None:
        readiness, owner = self.service.readiness, self.service.owner
        why = self.service.not_ready()
        if why is not None:
            return why
        if self.revoked or readiness.loaded_generation != readiness.generation:
            return "budget ownership is moving (rebalance)"
        for name in names:
            if not readiness.owns(name) or not owner.has(name):
                return f"budget {name!r} is not owned here (yet)"
        return None

    async def hold_here(self, wanted: dict[str, Decimal | int], reservation_id: str, request_id: str,
                        expires_at: datetime) -> tuple[int, dict[str, Any]]:
        """Admit on budgets this worker owns: 201 with the holds, 403/429 refusal, 421 when not the owner."""
        why = self._not_owner(list(wanted))
        if why is not None:
            return 421, {"error": f"not the owner: {why}"}
        placed, refusal = self.service.owner.admit(wanted, reservation_id, request_id, expires_at)
        replaced = self.service.owner.superseded_holds()
        if replaced:  # the same request reserved again (a retry): its earlier hold is released, logged like a DELETE
            await self.write_holds(replaced, tombstone=True)
        if refusal is not None:
            return (403 if refusal["action"] == "block" else 429), refusal
        try:
            await self.write_holds(placed)
        except Exception as exc:  # noqa: BLE001 - a hold that is not stored must not be admitted
            dropped = self.service.owner.release(reservation_id, "released")
            self.journal.append([hold_log_record(h) for h in dropped])  # its `held` line is there: never carried
            log.warning("reservation %s: hold not stored (%s), refused", reservation_id, exc)
            return 503, {"error": f"hold not stored: {exc}"}
        return 201, {"holds": [{"budget": h.budget, "amount": money(h.amount)} for h in placed]}

    async def release_here(self, reservation_id: str, why: str = "released") -> list[Hold]:
        dropped = self.service.owner.release(reservation_id, why)
        if dropped:
            await self.write_holds(dropped, tombstone=True)
        return dropped

    # Coordinator -------------------------------------------------------------------------------------------
    def _owner_urls(self) -> dict[int, str]:
        return self.owner_urls

    async def announce(self) -> None:
        """Tell every worker that this one decides the budgets of its budget-spend partitions now (after their
        state and holds are loaded). Faust assigns agent topics round-robin without publishing the members'
        URLs, so the owners' addresses travel on the compacted topic `tokenmeter.budget-owners`."""
        assigned = self.service.readiness.assigned or set()
        me = str(self.service.app.conf.canonical_url)
        producer = await self.producer()
        sends = [await producer.send(topics.BUDGET_OWNERS, key=f"partition:{p}".encode(), value=orjson.dumps(
            {"partition": p, "url": me, "generation": self.service.readiness.generation,
             "at": iso(datetime.now(timezone.utc))})) for p in sorted(assigned)]
        await asyncio.gather(*sends)
        for p in assigned:
            self.owner_urls[p] = me
        if self.revoked and self.service.readiness.generation > self._revoked_in_generation:
            self.revoked = False  # a NEW assignment's budgets and holds are loaded: admit again (not before)
        if not self._heap_frozen:
            self._heap_frozen = True
            freeze_startup_heap()
        log.info("announced as the owner of budget-spend partitions %s at %s", sorted(assigned), me)

    def on_owners(self, changed: dict[str, bytes | None], caught_up: bool) -> None:  # noqa: ARG002
        for key, value in changed.items():
            try:
                record = orjson.loads(value) if value else None
                partition = int(key.removeprefix("partition:"))
            except (orjson.JSONDecodeError, ValueError):
                continue
            if isinstance(record, dict) and isinstance(record.get("url"), str):
                self.owner_urls[partition] = record["url"]

    def _assigned_here(self, partition: int) -> bool:
        """The consumer group assigned `partition` to this worker and no revocation is pending. The group's
        assignment decides who owns a partition, not the last record on `tokenmeter.budget-owners`: that topic is
        read from its start, so a previous owner's record (a restart at another address, a new pod's IP) can be
        applied after this worker's own announcement, and a late writer can name itself; following it sent this
        worker's own reservations to a dead address (the client got 503 "owner ... unreachable") until its
        announcement was read back."""
        assigned = self.service.readiness.assigned
        return not self.revoked and assigned is not None and partition in assigned

    def _is_me(self, url: str) -> bool:
        if self._me is None:  # str() of the URL object costs more than the rest of the routing
            self._me = str(self.service.app.conf.canonical_url).rstrip("/")
        return url.rstrip("/") == self._me

    async def _session_get(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S))
        return self._session

    async def _call_owner(self, partition: int, method: str, path: str, payload: Any, local: Any
                          ) -> tuple[int, dict[str, Any]]:
        """`local()` when this worker owns `partition`, else the owner's answer to `payload` (a dict, None, or a
        callable that builds it: only a forwarded call needs its body)."""
        url = self._owner_urls().get(partition)
        if url is None or self._is_me(url) or self._assigned_here(partition):
            return await local()
        if self.revoked:  # the group revoked every member's partitions: nobody owns one until the next assignment,
            # and the last owner record read may name a dead address (a previous owner): nothing to forward to
            return 421, {"error": "budget ownership is moving (rebalance)"}
        self.stats["forwarded"] += 1
        try:
            session = await self._session_get()
            body = payload() if callable(payload) else payload
            async with session.request(method, url.rstrip("/") + path, data=orjson.dumps(body or {}),
                                       headers={"Content-Type": "application/json"}) as response:
                return response.status, orjson.loads(await response.read())
        except (aiohttp.ClientError, asyncio.TimeoutError, orjson.JSONDecodeError) as exc:
            return 421, {"error": f"owner of partition {partition} at {url} unreachable: {exc}"}

    def parse(self, body: dict[str, Any], query: Any, headers: Any, counted: int | None = None) -> dict[str, Any]:
        """The call a request describes; `counted`: its prompt's tokens when already counted (`_count_off_loop`).
        Its attribution (headers, query, body) and names are held to the event contract's bounds (trust34)."""
        try:
            return self._parse(body, query, headers, counted)
        except AttributeOutOfBounds as exc:
            raise ReservationError(400, str(exc)) from None

    def _parse(self, body: dict[str, Any], query: Any, headers: Any, counted: int | None) -> dict[str, Any]:
        for key in body:
            # refused, not dropped (walk32): `attribtion` was dropped and the call admitted with no attribution,
            # past every team's hard budget; `attribution.<typo>` was refused already
            if key not in RESERVATION_FIELDS:
                close = difflib.get_close_matches(str(key), RESERVATION_FIELDS, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ReservationError(400, f"{str(key)[:64]} is not a reservation field{hint} (use "
                                            f"{', '.join(RESERVATION_FIELDS)}; team, user, ... go in attribution)")
        unread = ignored_headers(headers, self.settings.decision_header_prefix) + ignored_parameters(query)
        if unread:  # a misspelt header or parameter named no team: the call was admitted past its budget (walk32)
            raise ReservationError(400, f"{', '.join(unread)}: not an attribution header or parameter (use "
                                        f"{self.settings.decision_header_prefix}<{'|'.join(ATTRIBUTION_KEYS)}>, "
                                        f"{self.settings.decision_header_prefix}tag-<name>, or the body's attribution)")
        router = getattr(self.service, "router", None)  # the scope tag keys a tag header may name
        try:
            attrs = attributes_from_request(query, headers, self.settings.decision_header_prefix,
                                            router.header_tag_keys if router is not None else None)
        except ConflictingAttributes as exc:
            raise ReservationError(400, str(exc)) from None
        attribution = body.get("attribution") or {}
        if not isinstance(attribution, dict):
            raise ReservationError(400, "attribution must be an object (team, user, ..., tags)")
        for key, value in attribution.items():
            # a key or value budgets cannot match with is refused, not dropped: dropped, no budget's scope matched
            # and a hard budget was admitted without a hold (the event contract refuses unknown fields likewise)
            if key == "tags":
                if value is not None and not isinstance(value, dict):
                    raise ReservationError(400, "attribution.tags must be an object of strings ({\"env\": \"prod\"})")
                check_tag_count(value or {}, "attribution.tags")
                for tag, tag_value in (value or {}).items():  # the gateway's headers win here too, as below
                    if tag_value is not None:
                        check_attribute(f"attribution.tags.{str(tag)[:40]}", "tag", str(tag), str(tag_value))
                        attrs.setdefault(f"tag:{tag}", str(tag_value))
            elif key not in ATTRIBUTION_KEYS:
                raise ReservationError(400, f"attribution.{key} is not an attribution field (use "
                                            f"{', '.join(ATTRIBUTION_KEYS)} or tags; provider and model are "
                                            "top-level fields)")
            elif value is not None and not isinstance(value, str):
                raise ReservationError(400, f"attribution.{key} must be a string")
            elif value:
                check_attribute(f"attribution.{key}", key, None, value)
                attrs.setdefault(key, value)
        # the call's tags from headers, parameters and body together, as the event it settles with carries them (at
        # most MAX_TAGS): each source alone was bounded, 100 + 100 passed (trust35). One tag per header form: a
        # header's scope spellings (`tag:cost_center` for `...-tag-cost-center`) and a body copy of it are one tag
        prefix = self.settings.decision_header_prefix
        check_tag_count({header_tag_form(k[4:]) for k in attrs if k.startswith("tag:")},
                        f"{prefix}tag-* headers, tag: parameters and attribution.tags together")
        provider, model = body.get("provider"), body.get("model")
        if not isinstance(provider, str) or not provider or not isinstance(model, str) or not model:
            raise ReservationError(400, "provider and model are required strings")
        check_attribute("provider", "provider", None, provider)
        check_attribute("model", "model", None, model)
        request_id = body.get("request_id") or headers.get("x-request-id")
        if not isinstance(request_id, str) or not request_id or len(request_id) > MAX_ID:
            raise ReservationError(400, "request_id is required (the gateway's request id its usage log carries, "
                                        f"at most {MAX_ID} characters)")
        prompt_tokens, estimated = body.get("prompt_tokens"), False
        if prompt_tokens is None:
            if body.get("prompt") is None:
                raise ReservationError(400, "give prompt_tokens, or prompt (text or chat messages) to count")
            try:
                prompt_tokens = counted if counted is not None else count_prompt_tokens(body["prompt"], model)
                estimated = True
            except WorstCaseError as exc:
                raise ReservationError(exc.status, exc.reason) from None
        max_output = body.get("max_output_tokens")
        for name, value in (("prompt_tokens", prompt_tokens), ("max_output_tokens", max_output)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ReservationError(400, f"{name} must be a whole number")
        tier = body.get("service_tier")
        if tier is not None and not isinstance(tier, str):
            raise ReservationError(400, "service_tier must be a string")
        if tier is not None:
            check_attribute("service_tier", "service_tier", None, tier)
        attrs["model"], attrs["provider"] = model, provider
        return {"attributes": attrs, "provider": provider, "model": model, "request_id": request_id,
                "prompt_tokens": prompt_tokens, "max_output_tokens": max_output, "estimated": estimated,
                "service_tier": tier}

    async def reserve(self, web: Any, request: Any, path: str | None = None) -> Any:
        started = time.perf_counter()
        response = None
        marks = [started] if TIMING_HEADER in request.headers else None
        # reset after the answer: aiohttp handles a keep-alive connection's requests in one task (one context)
        token = _PHASE_MARKS.set(marks) if marks is not None else None
        try:
            response = await self._reserve(web, request, path)
            return response
        finally:
            ended = time.perf_counter()
            if token is not None:
                _PHASE_MARKS.reset(token)
            took = ended - started
            _keep_last(self.latencies, took)
            if response is not None:  # the worker's own share of the call (W3C Server-Timing), for the caller
                timing = f"reserve;dur={took * 1000:.3f}"
                response.headers["Server-Timing"] = timing if marks is None else phase_timing(timing, marks, ended)

    async def _reserve(self, web: Any, request: Any, ext_authz_path: str | None = None) -> Any:
        self.stats["reservations"] += 1
        why = self.service.not_ready()
        if why is not None:
            self.stats["not_ready"] += 1
            return self.service.not_ready_response(web, why)
        try:
            raw = await request.read()
            body = orjson.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise ReservationError(400, "body must be a JSON object")
            if ext_authz_path is not None:  # Envoy ext_authz: the provider's own request body
                body = provider_request(body, request.headers, ext_authz_path, self.settings.decision_header_prefix)
            # Envoy appends the client's own path and query to the prefix: that query is the end user's, so
            # only the gateway's <prefix>* headers attribute an ext_authz call (a `?team=` would pick the budget)
            counted = await _count_off_loop(body, len(raw))
            call = self.parse(body, {} if ext_authz_path is not None else request.query, request.headers, counted)
            case = worst_case(self.book, call["provider"], call["model"], call["prompt_tokens"],
                              call["max_output_tokens"], org=call["attributes"].get("org"),
                              service_tier=call["service_tier"], prompt_estimated=call["estimated"])
        except orjson.JSONDecodeError as exc:
            self.stats["bad_requests"] += 1
            return _json(web, {"error": f"body is not JSON: {exc}"}, 400)
        except ReservationError as exc:
            self.stats["bad_requests"] += 1
            return _json(web, {"error": exc.message}, exc.status)
        except WorstCaseError as exc:
            self.stats["bad_requests"] += 1
            return _json(web, {"error": exc.reason}, exc.status)
        budgets = self._matching(call["attributes"], case.entry)
        wanted = {b.name: (case.tokens if b.metric == "tokens" else case.cost_usd) for b in budgets}
        partitions = self.service.readiness.partitions
        groups: dict[int, dict[str, Decimal | int]] = {}
        for name, amount in wanted.items():
            groups.setdefault(spend_partition(name, partitions), {})[name] = amount
        reservation_id = new_reservation_id(list(groups))
        expires_at = datetime.now(timezone.utc) + timedelta(seconds=self.settings.reservation_ttl_seconds)
        placed: list[int] = []
        holds: list[dict[str, Any]] = []
        for partition in sorted(groups):
            group = groups[partition]
            def payload(group: dict[str, Decimal | int] = group) -> dict[str, Any]:
                return {"reservation_id": reservation_id, "request_id": call["request_id"],
                        "expires_at": iso(expires_at), "wanted": {k: money(v) for k, v in group.items()}}

            status, answer = await self._call_owner(
                partition, "POST", "/v1/reservations/_hold", payload,
                lambda group=group: self.hold_here(group, reservation_id, call["request_id"], expires_at))
            if status == 201:
                placed.append(partition)
                holds += answer.get("holds", [])
                continue
            await self._release_partitions(reservation_id, placed)
            if status in (403, 429):
                self.stats["refused"] += 1
                answer["reservation_id"] = None
                headers = {"X-Tokenmeter-Action": answer.get("action", "block")}
                if status == 429:
                    headers["Retry-After"] = str(answer.get("retry_after_s") or 1)
                return _json(web, answer, status, **headers)
            self.stats["not_ready"] += 1
            return self.service.not_ready_response(web, answer.get("error", f"owner answered {status}"))
        self.stats["admitted"] += 1
        if ext_authz_path is not None:  # ext_authz admits on 200 only; the id goes upstream as a header
            return _json(web, {"reservation_id": reservation_id, "request_id": call["request_id"]}, 200,
                         **{"X-Tokenmeter-Action": "allow", "X-Tokenmeter-Reservation": reservation_id})
        return _json(web, admitted_answer(reservation_id, call, iso(expires_at), case, budgets, holds), 201,
                     **{"X-Tokenmeter-Action": "allow", "Location": f"/v1/reservations/{reservation_id}"})

    def _matching(self, attributes: dict[str, str], entry: str) -> list[Any]:
        """The budgets a reservation holds, found through the router's index of scopes (a scan of every budget cost
        ~4 ms per reservation with 1,000 budgets defined), in definition order. Model-scoped budgets naming another
        name of the same catalog entry (`_matches`) come from a cache per (provider, entry), kept until the
        definitions change."""
        router = self.service.router
        if self._aliases_version != router.version:
            self._aliases, self._aliases_version = {}, router.version
        provider = attributes.get("provider", "")
        aliases = self._aliases.get((provider, entry))
        if aliases is None:
            aliases = self._aliases[(provider, entry)] = [
                b for b in router.model_scoped if self._resolves_to(provider, b.scope["model"], entry)]
        found = {b.name: b for b in router.candidates_for_attributes(attributes) + aliases
                 if self._matches(b, attributes, entry)}
        return sorted(found.values(), key=lambda b: router.position.get(b.name, 0))

    def _resolves_to(self, provider: str, model: str, entry: str) -> bool:
        resolved = self.book.resolve(provider, model).entry
        return resolved is not None and resolved.key == entry

    def _matches(self, budget: Any, attributes: dict[str, str], entry: str) -> bool:
        """The budget's scope matches the call. A `model` scope also matches when it names the same catalog entry
        as the reserved model (an alias or dated snapshot the usage log may carry, e.g. claude-sonnet-4-5 and
        claude-sonnet-4-5-20250929): such a budget is held, never skipped, whichever name the log uses."""
        if budget.matches(attributes):
            return True
        scoped = budget.scope.get("model")
        if scoped is None or scoped == attributes.get("model"):
            return False
        resolved = self.book.resolve(attributes.get("provider", ""), scoped).entry
        return resolved is not None and resolved.key == entry and budget.matches({**attributes, "model": scoped})

    async def _release_partitions(self, reservation_id: str, partitions: list[int],
                                  failures: list[str] | None = None) -> list[dict[str, Any]]:
        released: list[dict[str, Any]] = []
        for partition in partitions:
            async def local() -> tuple[int, dict[str, Any]]:
                dropped = await self.release_here(reservation_id)
                return 200, {"released": [{"budget": h.budget, "amount": money(h.amount)} for h in dropped]}

            status, answer = await self._call_owner(partition, "DELETE", f"/v1/reservations/_hold/{reservation_id}",
                                                    None, local)
            if status == 200:
                released += answer.get("released", [])
            else:  # the hold stays until its TTL: conservative (it can only refuse more, never admit more)
                log.warning("reservation %s: release on partition %d failed: %s", reservation_id, partition, answer)
                if failures is not None:
                    failures.append(str(answer.get("error", f"owner answered {status}")))
        return released

    async def delete(self, web: Any, reservation_id: str) -> Any:
        partitions = reservation_partitions(reservation_id)
        if partitions is None:
            return _json(web, {"error": f"{reservation_id!r} is not a reservation id"}, 404)
        failures: list[str] = []
        released = await self._release_partitions(reservation_id, partitions, failures)
        self.stats["released"] += bool(released)
        if not released and failures:  # not "no open hold": its owner did not answer (a rebalance): retry
            return self.service.not_ready_response(web, failures[0])
        if not released:
            return _json(web, {"error": "no open hold (settled, expired, released or unknown)",
                               "reservation_id": reservation_id}, 404)
        return _json(web, {"reservation_id": reservation_id, "released": released}, 200)

    async def inspect(self, web: Any, reservation_id: str) -> Any:
        partitions = reservation_partitions(reservation_id)
        if partitions is None:
            return _json(web, {"error": f"{reservation_id!r} is not a reservation id"}, 404)
        holds: list[dict[str, Any]] = []
        for partition in partitions:
            async def local() -> tuple[int, dict[str, Any]]:
                return 200, {"holds": [h.to_json() for h in self.service.owner.holds_of(reservation_id)]}

            status, answer = await self._call_owner(partition, "GET", f"/v1/reservations/_hold/{reservation_id}",
                                                    None, local)
            holds += answer.get("holds", []) if status == 200 else []
        seen, unique = set(), []
        for hold in holds:
            if hold["budget"] not in seen:
                seen.add(hold["budget"])
                unique.append(hold)
        if not unique:
            return _json(web, {"error": "no open hold (settled, expired, released or unknown)",
                               "reservation_id": reservation_id}, 404)
        return _json(web, {"reservation_id": reservation_id, "holds": unique}, 200)

    def metrics_lines(self) -> list[str]:
        """Prometheus lines: reservations answered here, and the holds of the budgets owned here by outcome."""
        totals = dict.fromkeys(RESERVATION_COUNTS, 0)
        open_holds = 0
        for rt in self.service.owner.runtimes.values():
            open_holds += len(rt.holds)
            for key in totals:
                totals[key] += rt.reservations.get(key, 0)
        lines = ["# TYPE tokenmeter_reservation_requests_total counter"]
        lines += [f'tokenmeter_reservation_requests_total{{result="{k}"}} {self.stats[k]}'
                  for k in ("admitted", "refused", "not_ready", "bad_requests")]
        lines.append("# TYPE tokenmeter_reservation_holds_total counter")
        lines += [f'tokenmeter_reservation_holds_total{{outcome="{k}"}} {v}' for k, v in totals.items()]
        lines += ["# TYPE tokenmeter_reservation_holds_open gauge", f"tokenmeter_reservation_holds_open {open_holds}"]
        return lines

    def latency_ms(self, samples: list[float] | None = None) -> dict[str, float | None]:
        """Server-side time of the last (up to 10,000-20,000) reservations, from request to answer (or of other
        `samples`: the hold writes' acknowledgements)."""
        ordered = sorted(self.latencies if samples is None else samples)
        if not ordered:
            return {"p50": None, "p99": None, "samples": 0}
        return {"p50": round(ordered[len(ordered) // 2] * 1000, 3),
                "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
                "samples": len(ordered)}

    def budgets_here(self) -> list[dict[str, Any]]:
        owner = self.service.owner
        return [owner.headroom(name) for name in sorted(self.service.budgets) if owner.has(name)]

    # Routes --------------------------------------------------------------------------------------------
    def install(self) -> None:
        import faust

        app, svc = self.service.app, self

        class Reservations(faust.web.View):  # POST: the lean route below
            async def get(self, request):  # noqa: ANN001
                try:  # the loop lag over the last `window_s` seconds (the bench asks for its open loop's)
                    window = float(request.query.get("window_s") or 0) or None
                except ValueError:
                    window = None
                return _json(self, {"budgets": svc.budgets_here(), "stats": svc.stats, "latency_ms": svc.latency_ms(),
                                    "hold_ack_ms": svc.latency_ms(svc.hold_acks),
                                    "loop_lag_ms": svc.loop_lag.summary(window),
                                    "gc": gc_status(window),
                                    "me": str(svc.service.app.conf.canonical_url),
                                    "owners": {str(p): u for p, u in sorted(svc._owner_urls().items())}}, 200)

        class Reservation(faust.web.View):
            async def get(self, request, reservation_id):  # noqa: ANN001
                return await svc.inspect(self, reservation_id)

            async def delete(self, request, reservation_id):  # noqa: ANN001
                return await svc.delete(self, reservation_id)

        async def owner_hold(request):  # noqa: ANN001 - worker to worker: the owner's side of a forwarded hold
            try:
                data = orjson.loads(await request.read())
                wanted = {str(k): (v if isinstance(v, int) else Decimal(str(v))) for k, v in data["wanted"].items()}
                expires_at = datetime.fromisoformat(data["expires_at"])
                status, body = await svc.hold_here(wanted, str(data["reservation_id"]), str(data["request_id"]),
                                                   expires_at)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, ArithmeticError) as exc:
                status, body = 400, {"error": f"bad hold request: {exc}"}
            return _json(LEAN_WEB, body, status)

        class OwnerHoldOne(faust.web.View):
            async def get(self, request, reservation_id):  # noqa: ANN001
                return _json(self, {"holds": [h.to_json() for h in svc.service.owner.holds_of(reservation_id)]}, 200)

            async def delete(self, request, reservation_id):  # noqa: ANN001
                dropped = await svc.release_here(reservation_id)
                return _json(self, {"released": [{"budget": h.budget, "amount": money(h.amount)} for h in dropped]},
                             200)

        app.page("/v1/reservations")(Reservations)
        # The admission routes (the gateway's reserve call, Envoy's ext_authz with the provider's body, the owner's
        # side of a forwarded hold) go straight to aiohttp's router, without Faust's View dispatch and web sensors,
        # which cost each reservation CPU the bench counts; same paths, methods, status codes, headers and bodies
        # (Faust's JSON encoder).
        async def reserve(request):  # noqa: ANN001
            return await svc.reserve(LEAN_WEB, request)

        async def ext_authz(request):  # noqa: ANN001 - Envoy ext_authz (HTTP service, with_request_body)
            return await svc.reserve(LEAN_WEB, request, "/" + request.match_info["path"])

        router = app.web.web_app.router
        router.add_route("POST", "/v1/reservations", reserve)
        router.add_route("POST", "/v1/reservations/ext_authz/{path:.*}", ext_authz)  # prefix + the provider's path
        router.add_route("POST", "/v1/reservations/_hold", owner_hold)  # a forwarded hold: lean like the gateway's
        app.page("/v1/reservations/_hold/{reservation_id}")(OwnerHoldOne)
        app.page("/v1/reservations/{reservation_id}")(Reservation)

        @app.task
        async def probe_loop_lag() -> None:
            svc.loop_lag.start()
            GC_PAUSES.install()

        @app.task
        async def follow_owners() -> None:
            from streams.topic_reader import follow_compacted

            await follow_compacted(svc.settings.bootstrap_servers, topics.BUDGET_OWNERS, svc.on_owners,
                                   fetch_wait=svc.settings.fetch_wait)

        @app.on_before_shutdown.connect
        async def close(sender: Any, **kwargs: Any) -> None:  # noqa: ARG001
            await svc.settle_writes()
            await svc.stop()

        @app.on_partitions_revoked.connect
        async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:  # noqa: ARG001
            svc.revoked = True  # no admission until the next assignment's budgets are loaded
            svc._revoked_in_generation = svc.service.readiness.generation
            await svc.settle_writes()  # holds admitted so far are on the topic before the new owner reads it


class _LeanWeb:
    """What the reservation code asks of Faust's View (`json`), answered as Faust's aiohttp driver does (its JSON
    encoder, `application/json; charset=utf-8`) for the routes mounted on aiohttp directly."""

    @staticmethod
    def json(value: Any, *, status: int = 200, headers: Any = None) -> Any:
        return Response(body=faust_json.dumps(value), content_type="application/json", charset="utf-8", status=status,
                        headers=headers)


LEAN_WEB = _LeanWeb()


def phase_timing(timing: str, marks: list[float], ended: float) -> str:
    """Server-Timing with the reservation's phases, for a request that asked (TIMING_HEADER): `prep` (handler start
    to the hold's write: body, parse, worst case, matching budgets, admission, journal line), `queue` (the hold's
    records handed to the producer), `ack` (queued until the broker's acknowledgement woke this handler: the produce
    request's round trip and the event loop's turns for aiokafka's connection reader, its sender task and this
    handler), `answer` (acknowledged to the answer built), and `start` (the handler's start on the machine's
    CLOCK_MONOTONIC, in seconds: a client on the same machine sets it against its own write of the request to get
    the queueing before the handler). A reservation without a local hold (refused, forwarded to another owner, a
    bad request) has only `reserve` and `start`."""
    started = marks[0]
    if len(marks) == 4:
        write, queued, acked = marks[1:]
        timing += (f", prep;dur={(write - started) * 1000:.3f}, queue;dur={(queued - write) * 1000:.3f}"
                   f", ack;dur={(acked - queued) * 1000:.3f}, answer;dur={(ended - acked) * 1000:.3f}")
    return timing + f', start;desc="{started:.6f}"'


def _keep_last(samples: list[float], value: float) -> None:
    samples.append(value)
    if len(samples) > 20_000:
        del samples[:10_000]


__all__ = ["ReservationService", "new_reservation_id", "reservation_partitions"]
