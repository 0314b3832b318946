"""The Faust worker: `tokenmeter.usage` -> validate, meter, price -> `tokenmeter.priced`, with dead letters, and the
budgets (streams/budgets/service.py). docs/worker.md describes it for operators. `TOKENMETER_WORKER_ROLE` runs
either half alone, as its own consumer group (pricing, or budgets: the owners and reservations, with no usage on
their event loop; ROLE_APP_IDS, docs/budgets.md "Worker roles").

Delivery is at-least-once: a batch's priced messages and dead letters are acknowledged by the broker BEFORE the
batch's input offsets are acked (take_events acks after the loop body returns), so a crash re-sends, never
loses. This is the protocol written in tokenmeter/commitloop.py, with Faust as its second driver: Faust owns
the consumer (in its own thread, with its own rebalance handling), so the agents cannot run on the shared loop,
and price_and_send awaits every produced record (`commitloop.await_acks`) before the body returns. Duplicates are
removed downstream on `event_id` (the warehouse). Bad input never raises (process_batch turns it into dead
letters); a failing send is retried, unacked, with the agent reported failing on /health
(streams/agent_health.py). Faust's own record losses around rebalances are patched in streams/faust_patches.py.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

# polars configures its allocator (jemalloc) to give freed pages back to the OS after 0.5-1 s (polars issue 18088),
# so each batch page-faulted its working set in again: ~50,000 faults and ~2 us of system time per event on
# 50,000-event batches, halved by keeping them 30 s. polars appends this variable to its own setting when it loads
# (streams.columnar below), so it must be set first; an operator's value wins. pyarrow's mimalloc (an Arrow
# worker's priced tables) likewise gave its pages back after 10 ms, each chunk's faulted in again as huge pages the
# kernel zeroed (inproc34); glibc's side of the same for Python's blocks. streams/allocator.py.
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:30000,muzzy_decay_ms:30000")

from streams.allocator import keep_freed_pages  # noqa: E402 - before polars and pyarrow load

keep_freed_pages()

import faust  # noqa: E402 - after the allocator setting
from aiohttp.web import Response

from streams import faust_patches
from streams.agent_health import AgentHealth, retry_until_done
from streams.assignment_guard import SourceAssignment
from streams.batch import RawRecord, process_batch, replayed_from
from streams.batch_overlap import OverlappedPricing
from streams.batch_take import take_batches
from streams.budgets.reservations import ReservationService
from streams.budgets.service import BudgetService
from streams.columnar import process_batch_columnar
from streams.gaps import OffsetGaps
from streams.priority import lower_cpu_priority, request_time_slice
from tokenmeter import deadletters, kafka_refused, topics
from tokenmeter.commitloop import await_acks
from tokenmeter.priced_wire import headers_for
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
        self.refused_batches = 0  # compressed usage batches over the inflation bound (also in deadlettered)
        self.usage_assumed = 0  # priced events whose usage a collector read under an assumption
        self.refetched = 0  # usage records the consumer skipped around a rebalance, re-read (streams/gaps.py)
        self.last_batch_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items()}


# Each role's Faust app id, i.e. its consumer group. Split roles are two groups, so tokenmeter.budget-spend is assigned
# only among members that own budgets and tokenmeter.usage only among pricing ones. The budgets role joins role all's
# group: all and budgets workers side by side (a rolling switch between the shapes) still share the budget-spend
# partitions, one owner per budget; all beside pricing only prices usage twice (exact: duplicates are removed by
# event id and usage offset). The pricing group adopts role all's usage offsets when it is new (role_offsets.py).
ROLE_APP_IDS = {"all": "tokenmeter-worker", "budgets": "tokenmeter-worker", "pricing": "tokenmeter-pricing"}


def create_worker_app(settings: Settings, book=None, app_id: str | None = None) -> faust.App:
    """The worker of `settings.worker_role`: all (pricing and budgets), pricing (usage in, priced records, dead
    letters and budget spend out) or budgets (budget spend in: the owners, /v1/decision, /v1/reservations)."""
    from streams import load_book

    role = settings.worker_role
    prices, owns_budgets = role in ("all", "pricing"), role in ("all", "budgets")
    app_id = app_id or ROLE_APP_IDS[role]
    book = book or load_book(settings)
    faust_patches.patch_classes()  # refuses to start on Faust/mode/aiokafka versions the patches do not know
    faust_dir = settings.data_dir.resolve() / "faust"
    faust_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level of its directories
    app = faust.App(
        app_id,
        datadir=str(faust_dir / app_id),  # Faust's default is `<app id>-data` in the working directory
        broker=f"kafka://{settings.bootstrap_servers}",
        store="memory://",
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        web_host=settings.host,
        web_bind=settings.host,  # Faust binds 0.0.0.0 unless told: the API listens where TOKENMETER_HOST says
        web_port=settings.api_port,
        web_in_thread=False,
        producer_linger_ms=5,
        # Faust's default 1 MB per partition and fetch made a burst of micro-batches (~150 KB each) arrive over
        # several fetch rounds: 15 MB of usage took ~0.4 s to reach the batch (tokenmeter bench, load ~10).
        consumer_max_fetch_size=8_000_000,
        producer_max_request_size=4_000_000,
        producer_compression_type=None if settings.worker_compression == "none" else settings.worker_compression,
        # aiokafka's default 16 KB batch holds one priced message per partition and request. Larger batches (1, 4,
        # 16 MB) were measured slower against the embedded broker: 108 messages of 300 KB acked in 220-350 ms with
        # 16 KB, 320-590 ms with 1 MB, 500-920 ms with 4 MB (the broker takes a large request in one piece).
        table_standby_replicas=0,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        # tansu holds a JoinGroup for the whole rebalance timeout; Faust's default made every start wait 30 s.
        broker_rebalance_timeout=3.0,
        broker_session_timeout=settings.kafka_session_timeout_seconds,
        broker_heartbeat_interval=settings.group_timeouts["heartbeat_interval_ms"] / 1000,
    )
    faust_patches.patch_app(app, settings)
    usage = app.topic(topics.USAGE, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    priced = app.topic(topics.PRICED, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    deadletter = app.topic(
        topics.DEADLETTER, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    budgets = BudgetService(app, settings, owns_budgets=owns_budgets)  # pricing: definitions only, to route spend
    budgets.install()
    if owns_budgets:
        budgets.reservations = ReservationService(budgets, book)  # POST /v1/reservations (issue 15)
        budgets.reservations.install()
    app.tokenmeter_budgets = budgets  # type: ignore[attr-defined]
    stats = WorkerStats()
    health = AgentHealth()
    app.tokenmeter_health = health  # type: ignore[attr-defined]
    budgets.health = health
    app.tokenmeter_stats = stats  # type: ignore[attr-defined]

    @app.on_before_shutdown.connect
    async def say_stopped(sender: Any, **kwargs: Any) -> None:  # noqa: ARG001
        # ops34: Faust's shutdown says only `Stopping...`; this replica's own account, for the log of a stop or restart
        log.info("worker stopped (role %s) after %.0f s: %d message(s), %d event(s) in, %d priced (%d unpriced), "
                 "%d dead letter(s), %d refused batch(es)", role, time.time() - stats.started, stats.messages,
                 stats.events_in, stats.priced, stats.unpriced, stats.deadlettered, stats.refused_batches)

    usage_gaps = OffsetGaps(topics.USAGE, fetch_wait=settings.fetch_wait)
    batch_step = process_batch_columnar if settings.worker_columnar else process_batch  # same output (issue 14)

    # a member holding no usage or budget-spend partition processes nothing: /health says so, and it re-joins
    sources = SourceAssignment(((topics.USAGE,) if prices else ()) + ((topics.BUDGET_SPEND,) if owns_budgets else ()))
    app.tokenmeter_sources = sources  # type: ignore[attr-defined]

    async def rejoin() -> bool:
        thread = app.consumer._thread  # noqa: SLF001 - Faust's consumer thread owns aiokafka's consumer
        return await thread.call_thread(faust_patches.request_rejoin_if_topics_exist, thread._ensure_consumer(),  # noqa: SLF001
                                        sources.source_topics)

    @app.on_partitions_assigned.connect
    async def usage_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:  # noqa: ARG001
        usage_gaps.forget()
        sources.on_assigned(assigned, rejoin)

    # Chunks of the batch are priced on a thread of their own while the loop sends those already priced and keeps
    # answering HTTP (streams/batch_overlap.py); the step is pure: a retry prices the same records again.
    pricing = OverlappedPricing(batch_step, book, priced_format=settings.priced_format)
    if prices and settings.worker_warm_up:  # queued on the pricing thread ahead of any batch (streams/warm_up.py)
        pricing.warm_up().add_done_callback(
            lambda done: log.info("pricing warmed up: %.2f CPU-s on the pricing thread", done.result()))
    priced_headers = headers_for(settings.priced_format)  # JSON: none, as before; Arrow: the format header

    async def send_outputs(result, messages: list[tuple[bytes, bytes]], letters: list[bytes]) -> list:  # noqa: ANN001
        futures = []
        for key, value in messages:
            futures.append(await priced.send(key=key, value=value, headers=priced_headers))
        for letter in letters:
            futures.append(await deadletter.send(key=b"worker", value=letter))
        futures += await budgets.send_spend(result.origins)
        return futures

    async def send_refused(markers: list) -> None:  # noqa: ANN001 - Faust's messages
        letters = [kafka_refused.dead_letter(m, "worker") for m in markers]
        await await_acks([await deadletter.send(key=b"worker", value=deadletters.encode(letter))
                          for letter in letters])
        stats.refused_batches += len(letters)
        stats.deadlettered += len(letters)

    async def price_and_send(records: list[RawRecord]):  # noqa: ANN202
        result, futures = await pricing.run(records, send_outputs)
        # Outputs must be stored before the input offsets are acked (at-least-once): a failure here raises, and
        # retry_until_done sends the batch again instead of letting Faust ack it.
        await await_acks(futures)
        return result

    async def meter_and_price(stream):  # noqa: ANN001 - Faust's stream type
        try:
            await _meter_and_price(stream)
        except Exception as exc:  # outside any batch step (Faust's machinery): shown until a batch succeeds again
            health.failed("meter_and_price", exc, 1)
            raise

    if prices:  # the budgets role subscribes to no usage: its loop and GIL serve admissions only
        app.agent(usage)(meter_and_price)

    async def _meter_and_price(stream) -> None:  # noqa: ANN001
        # a batch ends when the stream goes quiet (streams/batch_take.py), not on Faust's fixed take_events timer
        async for events in take_batches(stream, settings.worker_batch_size, within=settings.worker_batch_seconds):
            records, positions, refused = [], [], []
            for e in events:
                m = e.message
                about = kafka_refused.refusal(m) if m.value is None else None
                if about is None:
                    records.append(RawRecord(m.value, m.topic, m.partition, m.offset, replayed_from(m.headers)))
                    positions.append((m.partition, m.offset))
                else:  # a refused batch's marker (tokenmeter/kafka_refused.py): it stands for all its offsets
                    refused.append(m)
                    positions.append((m.partition, about["first_offset"], about["last_offset"]))
            if refused:  # its dead letter is acknowledged before Faust acks the batch past it
                await retry_until_done("meter_and_price", health, lambda: send_refused(refused))
            skipped = await retry_until_done("meter_and_price", health, lambda: usage_gaps.missing_records(
                settings.bootstrap_servers, positions), "re-reading skipped records")
            if skipped:  # processed with this batch, so their outputs are stored before it is acked
                records = [RawRecord(r.value, topics.USAGE, r.partition, r.offset, replayed_from(r.headers))
                           for r in skipped] + records
                stats.refetched += len(skipped)
            if not records:  # only refused batches: dead-lettered above, nothing to price
                stats.messages += len(events)
                continue
            result = await retry_until_done("meter_and_price", health, lambda: price_and_send(records))
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
    async def health_page(web, request):  # noqa: ANN001
        """200 while every agent works and the worker holds a source partition; 503 naming the failing agents
        (their batches are retried, not acked), or `idle` with the reason when it holds no source partition."""
        named = {"app": app_id} if role == "all" else {"app": app_id, "role": role}
        if not health.ok:
            return web.json({"status": "failing", **named, "failing": health.failing}, status=503)
        idle = sources.problem()
        if idle is not None:
            return web.json({"status": "idle", **named, "reason": idle, "assignment": sources.to_json()},
                            status=503)
        return web.json({"status": "ok", **named})

    @app.page("/v1/stats")
    async def stats_page(web, request):  # noqa: ANN001
        return web.json(stats.to_json() | {"budgets": budgets.stats, "failing": health.failing,
                                            "assignment": sources.to_json()} | ({} if role == "all" else {"role": role}))

    @app.page("/metrics")
    async def metrics(web, request):  # noqa: ANN001
        lines = [
            "# TYPE tokenmeter_worker_events_total counter",
            f"tokenmeter_worker_events_total {stats.events_in}",
            # ops34: every family typed (untyped ones became gauges in the OTel Collector's and Grafana Agent's
            # Prometheus receivers); tests/streams/test_worker_metrics_format.py
            "# TYPE tokenmeter_worker_priced_total counter",
            f'tokenmeter_worker_priced_total{{status="priced"}} {stats.priced - stats.unpriced}',
            f'tokenmeter_worker_priced_total{{status="unpriced"}} {stats.unpriced}',
            "# TYPE tokenmeter_worker_deadletter_total counter",
            f"tokenmeter_worker_deadletter_total {stats.deadlettered}",
            "# TYPE tokenmeter_worker_refused_batches_total counter",
            f"tokenmeter_worker_refused_batches_total {stats.refused_batches}",
            "# TYPE tokenmeter_worker_usage_assumed_total counter",
            f"tokenmeter_worker_usage_assumed_total {stats.usage_assumed}",
            "# TYPE tokenmeter_worker_agent_errors_total counter",
            f"tokenmeter_worker_agent_errors_total {health.errors_total}",
            "# TYPE tokenmeter_worker_agents_failing gauge",
            f"tokenmeter_worker_agents_failing {len(health.failing)}",
            "# TYPE tokenmeter_worker_source_partitions gauge",
            *(f'tokenmeter_worker_source_partitions{{topic="{t}"}} {len(p)}' for t, p in sources.held().items()),
            "# TYPE tokenmeter_worker_refetched_total counter",
            f"tokenmeter_worker_refetched_total {stats.refetched + budgets.stats['refetched']}",
            "# TYPE tokenmeter_budget_alerts_total counter",
            f"tokenmeter_budget_alerts_total {budgets.stats['alerts']}",
            "# TYPE tokenmeter_decision_requests_total counter",
            f"tokenmeter_decision_requests_total {budgets.stats['decision_requests']}",
            "# TYPE tokenmeter_budgets gauge",
            f"tokenmeter_budgets {budgets.stats['budgets']}",
            *(budgets.reservations.metrics_lines() if budgets.reservations is not None else ()),
        ]
        return Response(text="\n".join(lines) + "\n", content_type="text/plain")

    return app


def run_worker(settings: Settings) -> None:
    from tokenmeter.settings import ensure_port_free

    faust_patches.check()  # before anything is started or written
    lower_cpu_priority(settings.worker_nice)  # before its threads start: they inherit both
    request_time_slice(settings.worker_sched_slice_ms)
    ensure_port_free(settings.host, settings.api_port, "api_port")
    from tokenmeter.kafka_topics import require_listener

    require_listener(settings.bootstrap_servers)  # no broker: the CLI's clear error, not Faust's logged traceback
    if settings.budgets_file:  # definitions from a file join the shared topic; `tokenmeter budget` edits them live
        from streams.budgets import BudgetStoreError, parse_budget_file, write_budgets
        from tokenmeter.settings import SettingsError

        try:
            budgets = parse_budget_file(settings.budgets_file)
            write_budgets(settings.bootstrap_servers, budgets)
        except BudgetStoreError as exc:
            raise SettingsError(f"TOKENMETER_BUDGETS_FILE: {exc}") from None
        log.info("applied %d budget(s) from %s", len(budgets), settings.budgets_file)
    if settings.worker_role == "pricing":  # before it joins: a new pricing group starts where role all left usage
        import asyncio

        from streams.role_offsets import adopt_usage_offsets

        asyncio.run(adopt_usage_offsets(settings.bootstrap_servers, ROLE_APP_IDS["all"], ROLE_APP_IDS["pricing"]))
    app = create_worker_app(settings)
    faust_worker(app, settings).execute_from_commandline()


def faust_worker(app: faust.App, settings: Settings) -> faust.Worker:
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True, redirect_stdouts=False)
    # Faust's terminal spinner sets the root logger to DEBUG (to spin on every record) whenever the level is
    # WARNING or above: every debug call of Faust and aiokafka then built a LogRecord that the handler dropped
    # (~60 us per Kafka send, on every reservation). Services have no terminal to spin on.
    worker.spinner = None
    return worker
