"""The Faust worker: `tokenmeter.usage` -> validate, meter, price -> `tokenmeter.priced`, with dead letters and
live per-scope hourly aggregates in a Faust table.

Delivery is at-least-once: a batch's priced messages and dead letters are acknowledged by the broker BEFORE the
batch's input offsets are acked (take_events acks after the loop body returns), so a crash re-sends, never
loses. Duplicates are removed downstream on `event_id` (the warehouse); the live table aggregates are a fast
view that may count a redelivered batch twice after a crash, and are rebuilt from the warehouse when exactness
matters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
import orjson
from aiohttp.web import Response

from streams.batch import Aggregate, RawRecord, process_batch
from streams.budgets.service import BudgetService
from streams.columnar import process_batch_columnar
from streams.gaps import SEEK_POSITIONS, OffsetGaps
from tokenmeter import topics
from tokenmeter.settings import Settings

log = logging.getLogger("tokenmeter.worker")


class WorkerStats:
    def __init__(self) -> None:
        self.started = time.time()
        self.messages = 0
        self.events_in = 0
        self.priced = 0
        self.unpriced = 0
        self.deadlettered = 0
        self.usage_assumed = 0  # priced events whose usage a collector read under an assumption
        self.refetched = 0  # usage records the consumer skipped around a rebalance, re-read (streams/gaps.py)
        self.last_batch_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items()}


FETCH_MAX_WAIT_MS = 100


def _shorten_fetch_wait() -> None:
    """Faust hard-codes fetch_max_wait_ms=1500 for its consumer. The embedded broker answers a waiting fetch only
    when that wait ends, not when data arrives (measured: ~380 ms per hop at 1500, ~15 ms at 100), and a budget
    alert crosses three consumer hops. Set it on the consumer Faust builds, before it starts."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if getattr(AIOKafkaConsumerThread, "_tokenmeter_patched", False):
        return
    original = AIOKafkaConsumerThread._create_worker_consumer

    def create(self, transport):  # noqa: ANN001
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # noqa: SLF001 - read by consumer.start()
        return consumer

    AIOKafkaConsumerThread._create_worker_consumer = create
    AIOKafkaConsumerThread._tokenmeter_patched = True


def _rewind_uncommitted_partitions() -> None:
    """When flow stops (rebalance, table recovery) Faust drops the records it had fetched and relies on seeking
    every partition back to its committed offset. aiokafka's `seek_to_committed` skips partitions whose committed
    offset is None or 0, so the first records of a partition the group never committed were lost for good: a new
    team's first events, a budget's first spend (seen with two workers joining; tests/streams/test_worker_rewind.py).
    Rewind such stream partitions to their beginning, which is what auto_offset_reset=earliest means. Changelog
    partitions (acks disabled) are left to Faust's recovery."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if getattr(AIOKafkaConsumerThread, "_tokenmeter_rewinds", False):
        return
    original = AIOKafkaConsumerThread.seek_to_committed

    async def seek_to_committed(self):  # noqa: ANN001, ANN202
        committed = await original(self)
        acking = self.app.topics.acks_enabled_for
        uncommitted = [tp for tp, offset in committed.items() if not offset and acking(tp.topic)]
        for tp, offset in committed.items():  # where each partition's records must resume (streams/gaps.py)
            if offset:
                SEEK_POSITIONS[(tp.topic, tp.partition)] = offset
            else:
                SEEK_POSITIONS.pop((tp.topic, tp.partition), None)
        if uncommitted:
            log.debug("rewinding partitions without a committed offset to their beginning: %s", uncommitted)
            consumer = self._ensure_consumer()
            await self.call_thread(consumer.seek_to_beginning, *uncommitted)
            for tp in uncommitted:
                SEEK_POSITIONS[(tp.topic, tp.partition)] = await self.call_thread(consumer.position, tp)
        return committed

    AIOKafkaConsumerThread.seek_to_committed = seek_to_committed
    AIOKafkaConsumerThread._tokenmeter_rewinds = True


def _seek_back_records_cleared_on_resume(app: faust.App) -> None:
    """Faust's recovery seeks the stream partitions to their committed offsets, then resumes flow control, and
    resuming clears every agent queue (mode's FlowControlEvent.resume). Records the consumer delivered in between
    were dropped while Faust's read offset had moved past them, so they were never processed and later committed
    past as a "gap". Before the queues are cleared, note the lowest queued offset of each partition still
    assigned, and seek back there afterwards: those records are delivered again instead of lost. (Records of
    revoked partitions are cleared by Faust's own `flow_control.clear()` at revocation, not here.)"""
    flow = app.flow_control
    original = flow.resume

    def resume() -> None:
        lowest: dict[Any, int] = {}
        try:
            consumer = app.consumer
            assigned = consumer.assignment()
            acking = app.topics.acks_enabled_for
            for queue in list(flow._queues):  # noqa: SLF001 - the queues resume() is about to clear
                for item in list(getattr(queue, "_queue", ())):
                    message = getattr(item, "message", None)
                    tp = getattr(message, "tp", None)
                    if tp is not None and tp in assigned and acking(tp.topic):
                        lowest[tp] = min(lowest.get(tp, message.offset), message.offset)
        except Exception as exc:  # noqa: BLE001 - never break Faust's recovery; the gap guard still applies
            log.warning("could not inspect queued records before flow resumed: %r", exc)
        original()
        for tp, offset in sorted(lowest.items()):
            log.warning("%s[%d]: records from offset %d were still queued when flow resumed; re-reading them",
                        tp.topic, tp.partition, offset)
            app.consumer._thread.seek(tp, offset)  # noqa: SLF001 - what Faust's own Consumer.seek does
            app.consumer._read_offset[tp] = offset or None  # noqa: SLF001
            SEEK_POSITIONS[(tp.topic, tp.partition)] = offset

    flow.resume = resume


def create_worker_app(settings: Settings, book=None, app_id: str = "tokenmeter-worker") -> faust.App:
    from streams import load_book

    book = book or load_book(settings)
    _shorten_fetch_wait()
    _rewind_uncommitted_partitions()
    app = faust.App(
        app_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        store="memory://",
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        web_host=settings.host,
        web_port=settings.api_port,
        web_in_thread=False,
        producer_linger_ms=5,
        producer_max_request_size=4_000_000,
        table_standby_replicas=0,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        # tansu holds a JoinGroup for the whole rebalance timeout; Faust's default made every start wait 30 s.
        broker_rebalance_timeout=3.0,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
    )
    _seek_back_records_cleared_on_resume(app)
    usage = app.topic(topics.USAGE, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    priced = app.topic(topics.PRICED, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    deadletter = app.topic(
        topics.DEADLETTER, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    budgets = BudgetService(app, settings)
    budgets.install()
    app.tokenmeter_budgets = budgets  # type: ignore[attr-defined]
    spend = app.Table("spend_by_scope_hour", default=dict, partitions=settings.partitions, key_type=str)
    stats = WorkerStats()
    app.tokenmeter_stats = stats  # type: ignore[attr-defined]

    usage_gaps = OffsetGaps(topics.USAGE)
    batch_step = process_batch_columnar if settings.worker_columnar else process_batch  # same output (issue 14)

    @app.on_partitions_assigned.connect
    async def usage_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:  # noqa: ARG001
        usage_gaps.forget()

    @app.agent(usage)
    async def meter_and_price(stream):  # noqa: ANN001 - Faust's stream type
        async for events in stream.take_events(settings.worker_batch_size, within=settings.worker_batch_seconds):
            records = [
                RawRecord(e.message.value, e.message.topic, e.message.partition, e.message.offset) for e in events
            ]
            skipped = await usage_gaps.missing_records(
                settings.bootstrap_servers, [(r.partition, r.offset) for r in records])
            if skipped:  # processed with this batch, so their outputs are stored before it is acked
                records = [RawRecord(r.value, topics.USAGE, r.partition, r.offset) for r in skipped] + records
                stats.refetched += len(skipped)
            result = batch_step(records, book)
            futures = []
            for key, value in result.priced_messages():
                futures.append(await priced.send(key=key, value=value))
            for letter in result.deadletters:
                futures.append(await deadletter.send(key=b"worker", value=orjson.dumps(letter)))
            futures += await budgets.send_spend(result.origins)
            # Outputs must be stored before the input offsets are acked (at-least-once).
            await asyncio.gather(*futures)
            _update_table(stream, spend, events, result.aggregates)
            stats.messages += len(events)
            stats.events_in += result.events_in
            stats.priced += result.priced_count
            stats.unpriced += result.unpriced_count
            stats.deadlettered += len(result.deadletters)
            stats.usage_assumed += result.assumed_count
            stats.last_batch_at = time.time()
            if result.deadletters:
                log.warning("dead-lettered %d record(s); first reason: %s", len(result.deadletters),
                            result.deadletters[0]["reason"])

    @app.page("/health")
    async def health(web, request):  # noqa: ANN001
        return web.json({"status": "ok", "app": app_id})

    @app.page("/v1/stats")
    async def stats_page(web, request):  # noqa: ANN001
        return web.json(stats.to_json() | {"budgets": budgets.stats})

    @app.page("/metrics")
    async def metrics(web, request):  # noqa: ANN001
        lines = [
            "# TYPE tokenmeter_worker_events_total counter",
            f"tokenmeter_worker_events_total {stats.events_in}",
            f'tokenmeter_worker_priced_total{{status="priced"}} {stats.priced - stats.unpriced}',
            f'tokenmeter_worker_priced_total{{status="unpriced"}} {stats.unpriced}',
            f"tokenmeter_worker_deadletter_total {stats.deadlettered}",
            "# TYPE tokenmeter_worker_usage_assumed_total counter",
            f"tokenmeter_worker_usage_assumed_total {stats.usage_assumed}",
            "# TYPE tokenmeter_worker_refetched_total counter",
            f"tokenmeter_worker_refetched_total {stats.refetched + budgets.stats['refetched']}",
            "# TYPE tokenmeter_budget_alerts_total counter",
            f"tokenmeter_budget_alerts_total {budgets.stats['alerts']}",
            "# TYPE tokenmeter_decision_requests_total counter",
            f"tokenmeter_decision_requests_total {budgets.stats['decision_requests']}",
            f"tokenmeter_budgets {budgets.stats['budgets']}",
        ]
        return Response(text="\n".join(lines) + "\n", content_type="text/plain")

    app.tokenmeter_spend_table = spend  # type: ignore[attr-defined]
    return app


def _update_table(stream, table, events, aggregates: dict[tuple[int, str], Aggregate]) -> None:
    """One table write per scope and hour per batch (not per event: that drops Faust to ~1k events/s).

    Faust writes a table change to the changelog partition of the *current event*, so set the current event to
    one from the same input partition before writing its aggregates. Faust's take buffer may be parked on the
    next event meanwhile and reads `current_event` when it resumes: restore it afterwards, never leave None.
    """
    previous = stream.current_event
    last_event_of_partition = {e.message.partition: e for e in events}
    by_partition: dict[int, list[tuple[str, Aggregate]]] = {}
    for (partition, key), delta in aggregates.items():
        by_partition.setdefault(partition, []).append((key, delta))
    for partition, items in by_partition.items():
        stream._set_current_event(last_event_of_partition[partition])
        for key, delta in items:
            table[key] = Aggregate.from_json(table[key]).add(delta).to_json()
    stream._set_current_event(previous)


def run_worker(settings: Settings) -> None:
    from tokenmeter.settings import ensure_port_free

    ensure_port_free(settings.host, settings.api_port, "api_port")
    if settings.budgets_file:  # definitions from a file join the shared topic; `tokenmeter budget` edits them live
        from streams.budgets import BudgetStoreError, parse_budget_file, write_budgets
        from tokenmeter.settings import SettingsError

        try:
            budgets = parse_budget_file(settings.budgets_file)
            write_budgets(settings.bootstrap_servers, budgets)
        except BudgetStoreError as exc:
            raise SettingsError(f"TOKENMETER_BUDGETS_FILE: {exc}") from None
        log.info("applied %d budget(s) from %s", len(budgets), settings.budgets_file)
    app = create_worker_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
