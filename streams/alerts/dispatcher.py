"""The alert dispatcher: its own process (never inside the metering worker, so a dead endpoint cannot slow
metering). It consumes the outbox `tokenmeter.alerts` in consumer group "tokenmeter-alerts" and delivers every
alert to every route of its `notify` list. Anomaly, drift and completeness alerts are published without routes
(a route is a secret; the topic is read by many) and go to this process's Settings.anomaly_notify / finance_notify.

Exactly one delivery per (alert id, route), across duplicate records and restarts:
- every state change (retrying, delivered, failed) is written, acknowledged, to the compacted topic
  `tokenmeter.alert-deliveries`; at start that topic is read to its end, and routes already delivered or
  failed are skipped;
- an outbox offset is committed only when every alert up to it has all its deliveries final, so an alert still
  retrying when the process stops is read again after a restart and continues with its recorded attempts (the
  shared commit loop, tokenmeter/commitloop.py, runs the consumer; its docstring writes the protocol).
The one remaining window is a crash (kill -9) between an endpoint's 2xx and the acknowledgement of the
"delivered" record: that delivery is repeated, with the same PagerDuty dedup_key and X-Tokenmeter-Alert-Id, so
receivers can drop it.

Deliveries run as concurrent tasks: a route waiting for its retry holds no slot, and requests in flight are
bounded globally and per target (see delivery.py), so one slow route never holds the others."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from tokenmeter import deadletters
from tokenmeter.commitloop import Batch, CommitLoop, Offsets
from tokenmeter.records import RecordError, alert_record
from tokenmeter.settings import Settings
from tokenmeter.topics import ALERT_DELIVERIES, ALERTS, DEADLETTER

from .delivery import Counters, DeliveryState, Sender
from .route_secrets import RouteSecrets
from .routes import Route, parse_routes
from .state import OffsetTracker, is_final, load_delivery_state

log = logging.getLogger("tokenmeter.alerts")

GROUP_ID = "tokenmeter-alerts"
MAX_OPEN_ALERTS = 1000  # stop fetching while this many outbox records are unfinished (memory bound)
STATS_LOG_SECONDS = 60.0


class AlertInputError(ValueError):
    """An outbox record is not an alert record; dead-lettered with this reason."""


class StateNotSaved(Exception):
    """A final delivery state could not be written before shutdown; the alert stays open (retried on restart)."""


def parse_alert(value: bytes | None) -> dict[str, Any]:
    if value is None:
        raise AlertInputError("empty message (tombstone) on the alerts topic")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise AlertInputError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise AlertInputError(f"expected a JSON object, got {type(data).__name__}")
    try:
        alert = alert_record(**data)
    except RecordError as exc:
        raise AlertInputError(str(exc)) from None
    try:  # orjson reads JSON 1,024 levels deep but writes only 254: such a record could not be sent or shown
        orjson.dumps(alert, default=str)
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise AlertInputError(f"cannot be re-encoded: {exc}") from None
    return alert


_route_secrets: dict[str, RouteSecrets] = {}


def _secrets(settings: Settings) -> RouteSecrets:
    """The route secret store of the settings' data dir (one per dir: it caches the file until it changes)."""
    key = str(settings.data_dir)
    if key not in _route_secrets:
        _route_secrets[key] = RouteSecrets(settings.data_dir)
    return _route_secrets[key]


def routes_for(alert: dict[str, Any], settings: Settings) -> tuple[list[Route], list[DeliveryState]]:
    """Deliverable routes, and a failed state for each notify entry that cannot be delivered to."""
    notify = alert["notify"]
    if not notify and alert["source"] == "anomaly":
        notify = list(settings.anomaly_notify)
    elif not notify and alert["source"] in ("drift", "completeness"):  # finance alerts: one route list
        notify = list(settings.finance_notify)
    routes, bad = parse_routes(notify, _secrets(settings).resolve)
    failed = [DeliveryState(alert["id"], Route(kind, "", "invalid:" + hashlib.sha256(reason.encode()).hexdigest()[:8]),
                            "failed", 0, reason) for kind, reason in bad]
    return routes, failed


@dataclass
class _Job:
    alert: dict[str, Any]
    offsets: list[tuple[TopicPartition, int]] = field(default_factory=list)


class Dispatcher:
    def __init__(self, settings: Settings, *, alerts_topic: str = ALERTS, deliveries_topic: str = ALERT_DELIVERIES,
                 group_id: str = GROUP_ID):
        self.settings = settings
        self.alerts_topic, self.deliveries_topic, self.group_id = alerts_topic, deliveries_topic, group_id
        self.counters = Counters()
        self.tracker = OffsetTracker()
        self.deliveries: dict[str, dict[str, Any]] = {}  # `<alert id>|<route_id>` -> latest delivery record
        self.jobs: dict[str, _Job] = {}  # alert id -> job in progress
        # (dedup_key, route kind, target) -> the newest delivery of that condition to that route
        self.chains: dict[tuple[str, str, str], asyncio.Task] = {}
        self.tasks: set[asyncio.Task] = set()
        self.assigned: set[TopicPartition] = set()
        self.started = False
        self._producer: AIOKafkaProducer | None = None
        self._loop: CommitLoop | None = None
        self._next_stats = 0.0
        self._sender: Sender | None = None
        self._stop = asyncio.Event()

    # Service -------------------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        if s.webhook_secret is None:
            log.warning("TOKENMETER_WEBHOOK_SECRET is not set: generic webhooks are sent UNSIGNED")
        self._stop = stop
        self.deliveries = await load_delivery_state(s.bootstrap_servers, self.deliveries_topic,
                                                    fetch_wait=s.fetch_wait)
        log.info("alert dispatcher: %d delivery states loaded from %s", len(self.deliveries), self.deliveries_topic)
        self._producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, acks="all", linger_ms=2)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers, group_id=self.group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", **s.group_timeouts,
            max_poll_interval_ms=300_000,
            **s.fetch_wait)  # the embedded broker answers a waiting fetch only at its deadline
        # The shared loop (tokenmeter/commitloop.py has the protocol). Alerts finish when their deliveries are
        # final, after their batch: each round commits what the OffsetTracker says is final, and a revocation
        # commits the revoked partitions' final offsets while they are still ours.
        # producer: the dead letter of a refused compressed batch (commitloop.py, protocol 9)
        self._loop = CommitLoop(consumer, topics=[self.alerts_topic], producer=self._producer,
                                name="alert dispatcher", max_records=500,
                                fetch_timeout_ms=200, hold=self._hold, on_assigned=self.on_assigned,
                                on_revoked=self.on_revoked, on_committed=self._committed)
        await self._producer.start()
        try:
            async with self._loop:
                try:
                    async with aiohttp.ClientSession() as session:
                        self._sender = Sender(s, session, self.counters)
                        self._next_stats = time.monotonic() + STATS_LOG_SECONDS
                        await self._loop.run(self._process, stop)
                        await self._drain()
                finally:
                    await self._commit()
        finally:
            await self._producer.stop()
            log.info("alert dispatcher stopped: %s", self.counters.as_dict())

    def _hold(self, held: bool) -> bool:
        """Stop fetching while MAX_OPEN_ALERTS outbox records are unfinished; resume below half of it."""
        return self.tracker.open_count() >= (MAX_OPEN_ALERTS // 2 if held else MAX_OPEN_ALERTS)

    async def _process(self, batch: Batch) -> Offsets:
        """One round of the commit loop: start the deliveries of new alerts; commit what is final by now."""
        self.started = True
        for record in batch:
            await self._handle(record)
        if time.monotonic() >= self._next_stats:
            log.info("alert dispatcher: %s, open alerts %d", self.counters.as_dict(), self.tracker.open_count())
            self._next_stats = time.monotonic() + STATS_LOG_SECONDS
        return self._committable()

    async def _drain(self) -> None:
        """After stop: retry waits end at once; requests already on the wire finish and record their state."""
        if not self.tasks:
            return
        grace = self.settings.alert_timeout_seconds + 5
        _, left = await asyncio.wait(set(self.tasks), timeout=grace)
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left, timeout=2)
            log.warning("alert dispatcher: %d deliveries cut off at shutdown; they resume after a restart", len(left))

    # Records -------------------------------------------------------------------------------------------------
    async def _handle(self, record: Any) -> None:
        tp = TopicPartition(record.topic, record.partition)
        self.tracker.seen(tp, record.offset)
        try:
            alert = parse_alert(record.value)
        except AlertInputError as exc:
            self.counters.invalid += 1
            log.error("alerts %d/%d: unreadable alert record dead-lettered: %s", record.partition, record.offset, exc)
            await self._dead_letter(str(exc), record)
            self.tracker.finished(tp, record.offset)
            return
        job = self.jobs.get(alert["id"])
        if job is not None:  # a duplicate of an alert being delivered: finishes with it
            self.counters.duplicates += 1
            job.offsets.append((tp, record.offset))
            return
        routes, invalid = routes_for(alert, self.settings)
        todo = [r for r in routes if not is_final(self.deliveries.get(f"{alert['id']}|{r.route_id}"))]
        invalid = [st for st in invalid if not is_final(self.deliveries.get(st.key))]
        if not todo and not invalid:
            if routes:
                self.counters.duplicates += 1
            else:
                self.counters.unrouted += 1
                log.warning("alert %s (%s) has no route: set `notify` on its budget (anomalies: "
                            "TOKENMETER_ANOMALY_NOTIFY); it is kept on %s and in the warehouse", alert["id"],
                            alert.get("title", ""), ALERTS)
            self.tracker.finished(tp, record.offset)
            return
        job = _Job(alert, [(tp, record.offset)])
        self.jobs[alert["id"]] = job
        # Alerts of one condition (same dedup_key: a trigger, its escalations, its resolve) reach each route in
        # outbox order, so a PagerDuty resolve never overtakes the trigger that is still being retried there. The
        # order is per route (walk32): a 100 % alert's Slack message waited for the 50 % one's PagerDuty retries.
        chain_key = alert.get("dedup_key") or alert["id"]
        deliveries = [self._chained((chain_key, r.kind, r.target), alert, r) for r in todo]
        task = asyncio.create_task(self._run_job(job, deliveries, invalid), name=f"alert {alert['id']}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _chained(self, key: tuple[str, str, str], alert: dict[str, Any], route: Route) -> asyncio.Task:
        """The delivery of `alert` to `route`, started once the condition's previous delivery there is done."""
        before = self.chains.get(key)

        async def deliver() -> DeliveryState:
            if before is not None and not before.done():
                await asyncio.wait([before])
            return await self._deliver(alert, route)

        task = asyncio.create_task(deliver(), name=f"alert {alert['id']} -> {route.route_id}")
        self.chains[key] = task
        self.tasks.add(task)  # _drain waits for it (or cuts it off) like the job
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(lambda t: self.chains.pop(key, None) if self.chains.get(key) is t else None)
        return task

    async def _run_job(self, job: _Job, deliveries: list[asyncio.Task], invalid: list[DeliveryState]) -> None:
        final = True
        try:
            for state in invalid:
                self.counters.failed += 1
                log.error("alert %s: route %s cannot be delivered: %s", state.alert_id, state.route.kind, state.last_error)
                await self._save(state)
            results = await asyncio.gather(*deliveries, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    final = False
                    if not isinstance(result, (StateNotSaved, asyncio.CancelledError)):
                        log.error("alert %s: delivery crashed: %r", job.alert["id"], result)
                elif not result.final:
                    final = False
        except StateNotSaved:
            final = False
        finally:
            self.jobs.pop(job.alert["id"], None)
            if final:
                for tp, offset in job.offsets:
                    self.tracker.finished(tp, offset)

    async def _deliver(self, alert: dict[str, Any], route: Route) -> DeliveryState:
        assert self._sender is not None
        previous = self.deliveries.get(f"{alert['id']}|{route.route_id}")
        return await self._sender.deliver(alert, route, previous=previous, on_change=self._save, stop=self._stop)

    async def _save(self, state: DeliveryState) -> None:
        """Write a state change; a final state is retried until acknowledged (or shutdown: StateNotSaved)."""
        record = state.record()
        delay = 0.2
        while True:
            try:
                await self._send(self.deliveries_topic, state.key, record)
                self.deliveries[state.key] = record
                return
            except KafkaError as exc:
                if not state.final:
                    log.warning("alert %s: could not record state %s: %r", state.alert_id, state.status, exc)
                    return
                if self._stop.is_set():
                    raise StateNotSaved(state.key) from exc
                log.warning("alert %s: could not record final state, retrying: %r", state.alert_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _send(self, topic: str, key: str, value: dict[str, Any]) -> None:
        assert self._producer is not None
        await self._producer.send_and_wait(topic, key=key.encode(), value=deadletters.encode(value))

    async def _dead_letter(self, reason: str, record: Any) -> None:
        letter = deadletters.dead_letter(reason, record.value, "alerts", topic=record.topic,
                                         partition=record.partition, offset=record.offset)
        try:
            await self._send(DEADLETTER, f"{record.topic}|{record.partition}|{record.offset}", letter)
        except KafkaError as exc:  # the reason is in the log already; do not block the outbox on it
            log.error("could not dead-letter alerts %d/%d: %r", record.partition, record.offset, exc)

    # Offsets and rebalances --------------------------------------------------------------------------------
    def _committable(self, only: set[TopicPartition] | None = None) -> Offsets:
        return {tp: o for tp, o in self.tracker.to_commit().items()
                if tp in self.assigned and (only is None or tp in only)}

    async def _commit(self) -> None:
        if self._loop is not None:
            await self._loop.commit(self._committable())

    def _committed(self, offsets: Offsets) -> None:
        self.tracker.committed({tp: o for tp, o in offsets.items() if tp in self.assigned})

    async def on_revoked(self, revoked: set[TopicPartition]) -> Offsets:
        """The final offsets of the revoked partitions (the loop commits them while they are still ours)."""
        final = self._committable(set(revoked))
        self.tracker.forget(revoked)
        self.assigned -= set(revoked)
        return final

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        fresh = set(assigned) - self.assigned
        self.assigned |= set(assigned)
        if fresh and self.started:  # taking over partitions: learn what the previous owner delivered
            loaded = await load_delivery_state(self.settings.bootstrap_servers, self.deliveries_topic,
                                               fetch_wait=self.settings.fetch_wait)
            ours = {key: value for key, value in self.deliveries.items() if key.split("|", 1)[0] in self.jobs}
            self.deliveries = {**loaded, **ours}

    def health(self) -> dict[str, Any]:
        return {"status": "ok" if self.started else "starting", **self.counters.as_dict(),
                "open_alerts": self.tracker.open_count(), "partitions": len(self.assigned)}


async def run_dispatcher(settings: Settings, stop: asyncio.Event) -> None:
    """The alert dispatcher service, until `stop` is set (optionally with /health and /metrics)."""
    dispatcher = Dispatcher(settings)
    if settings.alerts_port is None:
        await dispatcher.run(stop)
        return
    from .http_api import serve

    async with serve(dispatcher, settings.host, settings.alerts_port):
        await dispatcher.run(stop)
