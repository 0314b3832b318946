"""Budgets inside the Faust worker: definitions followed live, amounts routed per budget, one owner per budget
evaluating thresholds and forecasts, alerts into the outbox, decisions to `tokenmeter.enforcement` and to the
`/v1/decision` endpoint.

    usage batch --(meter_and_price)--> priced + budget-spend entries (keyed by budget name)
    budget-spend --(evaluate_budgets: owner of the budget's partition)--> alerts, enforcement, budget-state
    enforcement --(every worker follows it)--> EnforcementView --> GET /v1/decision

Outputs of each step are acknowledged by Kafka before its input offsets are committed (at-least-once); the
owner's per-budget high marks of usage offsets make redelivered entries count once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import faust
import orjson

from tokenmeter import topics

from .decisions import (QUERY_DIMENSIONS, AttributeOutOfBounds, EnforcementView, attribute_values, http_status,
                        ignored_headers, ignored_parameters)
from streams.agent_health import AgentHealth, retry_until_done
from streams.gaps import OffsetGaps
from streams.topic_reader import follow_compacted, read_compacted, read_records
from streams.alerts.route_secrets import write_private
from .admin import install_admin_routes
from .model import Budget, BudgetError, parse_budget
from .store import BudgetStoreError, protect_budget, public_budget
from .owner import BudgetOwner, Outcome, _well_formed
from .readiness import Readiness, spend_partition
from .holds import hold_from_json
from .recent import records_since
from .routing import BudgetRouter, spend_messages
from .seed import BudgetSeeder, seeded_ids

log = logging.getLogger("tokenmeter.budgets")
TICK_SECONDS = 5.0
RECENT_MESSAGES = 2000  # budget-spend messages re-read per restored budget (~minutes of traffic at 5 batches/s)
CLOCK_MARGIN = timedelta(seconds=60)  # hold times (the owner's clock) against record timestamps (the producer's)
MIRROR_FILE = "budgets.json"


def _raw_topic(app: faust.App, name: str) -> Any:
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


def _write_mirror(data_dir: Path, budgets: dict[str, Budget]) -> None:
    """The embedded broker forgets everything on restart; `tokenmeter up` re-publishes definitions from here.
    Owner-only (0600), and notify routes in it are masked references (secrets: route-secrets.json)."""
    path = Path(data_dir).resolve() / MIRROR_FILE
    write_private(path, json.dumps([b.to_json() for b in budgets.values()], indent=1))


class BudgetService:
    """Attach budgets to a worker app: `BudgetService(app, settings).install()`; `route(origins)` gives the
    (key, value) messages the pricing agent must send (and await) before acking its batch."""

    def __init__(self, app: faust.App, settings: Any, owns_budgets: bool = True):
        self.app = app
        self.settings = settings
        # False on a pricing-role worker (streams/worker.py): it follows the definitions only, to route spend; the
        # budgets-role workers own the budgets, their decisions, holds, secrets and the mirror file
        self.owns_budgets = owns_budgets
        self.router = BudgetRouter()
        self.owner = BudgetOwner(dashboard_url=settings.dashboard_url)
        self.view = EnforcementView()
        self.budgets: dict[str, Budget] = {}
        self.ready = asyncio.Event()
        self.spend_topic = _raw_topic(app, topics.BUDGET_SPEND)
        self.state_topic = _raw_topic(app, topics.BUDGET_STATE)
        self.alerts_topic = _raw_topic(app, topics.ALERTS)
        self.enforcement_topic = _raw_topic(app, topics.ENFORCEMENT)
        self.budgets_topic = _raw_topic(app, topics.BUDGETS)
        self.gaps = OffsetGaps(topics.BUDGET_SPEND, fetch_wait=settings.fetch_wait)
        self.readiness = Readiness(settings.partitions)
        self.health = AgentHealth()  # the worker passes its own (served on /health)
        self._owner_lock = asyncio.Lock()  # the evaluate agent, the owned-budget loader and the tick share the owner
        self._load_wanted = asyncio.Event()
        self._ids_pending: set[str] = set()  # restored budgets whose recent event ids are not remembered yet
        self._partitions_checked = False
        self.spend_applied: dict[int, int] = {}  # budget-spend partition -> highest offset applied by this owner
        self.reservations: Any = None  # ReservationService (reservations.py) when mounted: holds are state too
        self.stats = {"budgets": 0, "alerts": 0, "decisions_published": 0, "decision_requests": 0,
                      "routed_entries": 0, "skipped_redelivered": 0, "refetched": 0}
        self._ignored_said: set[tuple[str, ...]] = set()  # unknown /v1/decision parameter sets already logged

    # Pricing side -----------------------------------------------------------------------------------------
    async def send_spend(self, origins: list[tuple[int, int, dict[str, Any]]],
                         sent: dict[bytes, Any] | None = None) -> list[Any]:
        """Route a priced batch; returns the send futures (the caller awaits them with its other outputs).

        A budget's messages of one batch attempt are stored in order, each sent only once the one before it is
        acknowledged (`sent`: the attempt's last message per budget, shared by its calls, one per pricing chunk).
        The owner skips entries at or below the highest usage offset it applied: a later message stored while an
        earlier one was refused made the retry's copy of the earlier one look applied, its spend lost (trust35)."""
        if not self.ready.is_set():
            await self.ready.wait()  # never price a batch before the definitions were read: its spend would be lost
        routed = self.router.route(origins)
        sent = {} if sent is None else sent
        futures = []
        for key, value in spend_messages(routed):
            before = sent.get(key)
            future = (await self.spend_topic.send(key=key, value=value) if before is None
                      else asyncio.ensure_future(self._send_after(before, key, value)))
            sent[key] = future
            futures.append(future)
        self.stats["routed_entries"] += sum(len(v) for v in routed.values())
        return futures

    async def _send_after(self, before: Any, key: bytes, value: bytes) -> Any:
        """Send once `before` is stored; raises its error instead if it was refused (this one is not sent)."""
        await before
        return await (await self.spend_topic.send(key=key, value=value))

    # Owner side ---------------------------------------------------------------------------------------------
    async def _publish(self, outcome: Outcome) -> None:
        futures = []
        for alert in outcome.alerts:
            futures.append(await self.alerts_topic.send(key=alert["dedup_key"].encode(), value=orjson.dumps(alert)))
            log.info("budget alert: %s", alert["title"])
        for name, record in outcome.enforcement:
            value = orjson.dumps(record) if record is not None else None
            futures.append(await self.enforcement_topic.send(key=f"budget:{name}".encode(), value=value))
            self.view.update(name, record)  # this worker answers at once; others when they read the topic
        for name, state in outcome.states:
            value = orjson.dumps(state) if state is not None else None
            futures.append(await self.state_topic.send(key=name.encode(), value=value))
        if futures:
            await asyncio.gather(*futures)
        if outcome.holds and self.reservations is not None:  # after the state that holds their settled spend
            await self.reservations.write_holds(outcome.holds, tombstone=True)
        self.stats["alerts"] += len(outcome.alerts)
        self.stats["decisions_published"] += len(outcome.enforcement)

    async def _read_holds(self) -> dict[str, list[dict[str, Any]]]:
        """Open holds per budget from `tokenmeter.budget-holds`, after this worker's own writes in flight."""
        if self.reservations is None:
            return {}
        await self.reservations.settle_writes()
        out: dict[str, list[dict[str, Any]]] = {}
        for value in (await read_compacted(self.settings.bootstrap_servers, topics.BUDGET_HOLDS,
                                                fetch_wait=self.settings.fetch_wait)).values():
            try:
                record = orjson.loads(value) if value else None
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("budget"), str):
                out.setdefault(record["budget"], []).append(record)
        return out

    def _lookback(self, admitted: list[datetime]) -> datetime | None:
        """Since when the budget-spend messages may hold the usage of restored holds admitted at `admitted`: from
        the oldest admission (usage follows its reservation), but no further back than a TTL: an older hold is
        expired (or a carried one, whose usage, if counted, was counted right before the owner died). Time, not a
        count of messages: under high traffic a count covers less than a hold's life."""
        if not admitted:
            return None
        ttl = timedelta(seconds=self.settings.reservation_ttl_seconds)
        return max(min(admitted), datetime.now(timezone.utc) - ttl) - CLOCK_MARGIN

    async def _counted_entries(self, names: list[str]) -> dict[str, list[list[Any]]]:
        """The entries of the `tokenmeter.budget-spend` messages, since the oldest open hold restored (`_lookback`),
        of those of `names` that have open holds restored (their usage may already be counted:
        owner.settle_counted), one read per partition."""
        with_holds = [n for n in names if self.owner.has(n) and self.owner.runtimes[n].holds]
        by_partition: dict[int, set[str]] = {}
        admitted: dict[int, list[datetime]] = {}
        for name in with_holds:
            partition = spend_partition(name, self.readiness.partitions)
            by_partition.setdefault(partition, set()).add(name)
            admitted.setdefault(partition, []).extend(h.created_at for h in self.owner.runtimes[name].holds.values())
        out: dict[str, list[list[Any]]] = {}
        for partition, wanted in sorted(by_partition.items()):
            since = self._lookback(admitted[partition])
            for record in await records_since(self.settings.bootstrap_servers, topics.BUDGET_SPEND, partition,
                                              since, fetch_wait=self.settings.fetch_wait):
                if record.key in wanted and record.value:
                    out.setdefault(record.key, []).extend(_entries(record.value))
        return out

    async def _load_states(self, first_seen: dict[str, tuple[int, int]]) -> tuple[list[str], list[Any]]:
        """Restore budgets this worker does not hold yet: state from the state topic, and the event ids of the
        budget's recent entries (the ledger's duplicate window) re-read from `tokenmeter.budget-spend` itself,
        so a source replaying events across a worker restart still counts them once. Returns the budgets
        restored here (their decisions are published again) and the restored holds whose usage those entries
        show counted already (settled: their tombstones are written with the batch's outputs)."""
        missing = {n: at for n, at in first_seen.items()
                   if n in self.budgets and (not self.owner.has(n) or n in self._ids_pending)}
        restored: list[str] = []
        settled: list[Any] = []
        if not missing:
            return restored, settled
        raw = await read_compacted(self.settings.bootstrap_servers, topics.BUDGET_STATE,
                                   fetch_wait=self.settings.fetch_wait)
        holds = await self._read_holds()
        recent: dict[str, list] = {}
        for name, (partition, offset) in missing.items():  # read everything first: a failed read restores nothing
            if raw.get(name):
                # the duplicate window (RECENT_MESSAGES), and back to the oldest open hold's admission (_lookback)
                admitted = [h.created_at for h in (hold_from_json(r) for r in holds.get(name, [])) if h is not None]
                if self.owner.has(name):
                    admitted += [h.created_at for h in self.owner.runtimes[name].holds.values()]
                since = self._lookback(admitted)
                recent[name] = (await records_since(
                    self.settings.bootstrap_servers, topics.BUDGET_SPEND, partition, since, end=offset,
                    at_least=RECENT_MESSAGES, fetch_wait=self.settings.fetch_wait) if since is not None
                    else await read_records(self.settings.bootstrap_servers, topics.BUDGET_SPEND, partition,
                                            max(0, offset - RECENT_MESSAGES), offset,
                                            fetch_wait=self.settings.fetch_wait))
        for name in missing:
            value = raw.get(name)
            if not self.owner.has(name):
                self.owner.restore(name, orjson.loads(value) if value else None, holds.get(name))
                restored.append(name)
            self._ids_pending.discard(name)
            ids = 0
            counted: list[list[Any]] = []
            for record in recent.get(name, []):
                if record.key == name and record.value:
                    entries = _entries(record.value)
                    rebuilt_at = self.owner.runtimes[name].rebuilt_at if self.owner.has(name) else None
                    ids += self.owner.remember_ids(name, seeded_ids(record.value, rebuilt_at))  # seed.py, rebuild.py
                    # only entries the restored state already counts (a loader-restored budget's later entries
                    # are still to be applied)
                    counted += [e for e in entries if int(e[1]) <= self.owner.applied_offset(name, e[0])]
            ids += self.owner.remember(name, counted)
            settled += self.owner.settle_counted(name, counted)
            if value:
                log.info("budget %r restored (%d recent event ids)", name, ids)
        return restored, settled

    async def _spend_partition_count(self) -> int:
        from tokenmeter.kafka_topics import topic_partitions

        return len(await topic_partitions(self.settings.bootstrap_servers, topics.BUDGET_SPEND))

    async def load_owned(self) -> None:
        """Restore every budget of this worker's budget-spend partitions from the state topic and publish its
        decision, before the worker answers decisions (streams/budgets/readiness.py)."""
        generation = self.readiness.generation
        if not self._partitions_checked:  # the topic's real partition count decides who owns what
            count = await retry_until_done("budget_owner", self.health, self._spend_partition_count,
                                           "reading the budget-spend partition count")
            if count != self.readiness.partitions:
                log.warning("%s has %d partitions (settings say %d): ownership follows the topic",
                            topics.BUDGET_SPEND, count, self.readiness.partitions)
            self.readiness.partitions, self._partitions_checked = count, True
        async with self._owner_lock:
            names = [n for n in self.budgets if self.readiness.owns(n) and not self.owner.has(n)]
            if names:
                raw = await retry_until_done("budget_owner", self.health, lambda: read_compacted(
                    self.settings.bootstrap_servers, topics.BUDGET_STATE, fetch_wait=self.settings.fetch_wait),
                    "reading budget state")
                holds = await retry_until_done("budget_owner", self.health, self._read_holds, "reading holds")
                outcome = Outcome()
                for name in names:
                    value = raw.get(name)
                    self.owner.restore(name, orjson.loads(value) if value else None, holds.get(name))
                    if value:
                        self._ids_pending.add(name)
                # A restored hold whose usage the restored spend counts already is settled before any admission
                # (owner.settle_counted): else a kill between spend and tombstone brings a settled hold back.
                counted = await retry_until_done("budget_owner", self.health, lambda: self._counted_entries(names),
                                                 "reading recent budget spend")
                for name, entries in counted.items():
                    outcome.holds += self.owner.settle_counted(name, entries)
                for name in names:
                    outcome.extend(self.owner.republish(name))
                await retry_until_done("budget_owner", self.health, lambda: self._publish(outcome),
                                       "publishing restored decisions")
                log.info("budgets owned here restored and decided: %s", ", ".join(sorted(names)))
        if generation == self.readiness.generation:
            self.readiness.loaded_generation = generation
            if self.reservations is not None:  # other workers forward this worker's budgets' reservations here
                await retry_until_done("budget_owner", self.health, self.reservations.announce, "announcing owner")

    async def evaluate(self, stream: Any) -> None:
        await self.ready.wait()  # amounts for a budget not yet read would be dropped
        async for events in stream.take_events(10_000, within=0.1):
            batch = [(e.message.partition, e.message.offset, e.message.value) for e in events]
            positions = [(p, o) for p, o, _ in batch]
            skipped = await retry_until_done("evaluate_budgets", self.health, lambda: self.gaps.missing_records(
                self.settings.bootstrap_servers, positions), "re-reading skipped spend")
            if skipped:  # spend the consumer skipped around a rebalance: applied first, before the batch is acked
                batch = [(r.partition, r.offset, r.value) for r in skipped] + batch
                self.stats["refetched"] += len(skipped)
            messages = []
            first_seen: dict[str, tuple[int, int]] = {}  # budget -> where its first message of this batch is
            for partition, offset, value in batch:
                try:
                    message = orjson.loads(value)
                except (orjson.JSONDecodeError, TypeError):
                    message = None
                if not isinstance(message, dict):
                    log.warning("unreadable budget-spend message at offset %s skipped", offset)
                    continue
                messages.append(message)
                first_seen.setdefault(message.get("budget"), (partition, offset))
            async with self._owner_lock:
                restored, settled = await retry_until_done("evaluate_budgets", self.health,
                                                           lambda: self._load_states(first_seen),
                                                           "restoring budget state")
                outcome = Outcome(holds=settled)
                for name in restored:  # decided from its state even if every entry turns out redelivered
                    outcome.extend(self.owner.republish(name))
                before = self.owner.stats["skipped_redelivered"]
                outcome.extend(self.owner.process(messages))  # once: a retry only publishes again
                for partition, offset in positions:  # how far this owner applied each partition (seed.py waits)
                    self.spend_applied[partition] = max(offset, self.spend_applied.get(partition, -1))
                self.stats["skipped_redelivered"] += self.owner.stats["skipped_redelivered"] - before
                await retry_until_done("evaluate_budgets", self.health, lambda: self._publish(outcome),
                                       "publishing alerts, decisions and state")

    async def tick(self) -> None:
        async with self._owner_lock:
            outcome = self.owner.tick()
            await retry_until_done("budget_tick", self.health, lambda: self._publish(outcome), "publishing")

    # Definitions and decisions --------------------------------------------------------------------------
    async def _on_budgets(self, changed: dict[str, bytes | None], caught_up: bool) -> None:
        for name, value in changed.items():
            if value is None:
                self.budgets.pop(name, None)
                continue
            try:
                budget = parse_budget(orjson.loads(value))
            except (orjson.JSONDecodeError, BudgetError) as exc:
                log.error("budget %r in %s is invalid and ignored: %s", name, topics.BUDGETS, exc)
                continue
            self.budgets[name] = self._protected(budget) if self.owns_budgets else budget
        self.router.set_budgets(self.budgets)
        self.stats["budgets"] = len(self.budgets)
        if not self.owns_budgets:  # routing is all a pricing worker does with them
            return
        async with self._owner_lock:
            outcome = self.owner.set_definitions(self.budgets)
            await retry_until_done("budget_definitions", self.health, lambda: self._publish(outcome), "publishing")
        self.readiness.definitions_read = self.readiness.definitions_read or caught_up
        self._load_wanted.set()  # budgets defined meanwhile in this worker's partitions get their decision
        if changed:
            log.info("budgets: %d defined (%s)", len(self.budgets), ", ".join(sorted(self.budgets)) or "none")
            try:
                _write_mirror(self.settings.data_dir, self.budgets)
            except OSError as exc:
                log.warning("cannot write the budget mirror file: %s", exc)

    def not_ready(self) -> str | None:
        return self.readiness.why_not(self.budgets, self.view.records)

    def not_ready_response(self, web: Any, why: str) -> Any:
        """503 + Retry-After: decisions are not derived from the current state yet (docs/budgets.md)."""
        return web.json({"action": "unavailable", "ready": False, "reason": f"not ready: {why}", "retry_after_s": 1},
                        status=503, headers={"Retry-After": "1", "Cache-Control": "no-store",
                                             "X-Tokenmeter-Action": "unavailable"})

    def _protected(self, budget: Budget) -> Budget:
        """A definition written to the topic with plain notify secrets (by hand, or before secrets had their
        store): secrets go to the store here, so alert records, the API and the mirror only see references."""
        try:
            protected = protect_budget(budget, self.settings.data_dir)
        except BudgetStoreError as exc:
            log.error("%s; its routes are shown masked but alerts carry them", exc)
            return budget
        if protected is not budget:
            log.warning("budget %r has plain notify secrets in %s: moved to the route secret store; re-apply it "
                        "(`tokenmeter budget apply`) so the topic holds references only", budget.name, topics.BUDGETS)
        return protected

    def decision_response(self, web: Any, request: Any, client_path: bool = False) -> Any:
        """`client_path`: Envoy's ext_authz route, whose query string is the end user's original one (Envoy appends
        the client's path and query to the prefix): only the gateway's headers attribute it, or a caller could
        name another team's budget with `?team=`."""
        self.stats["decision_requests"] += 1
        why = self.not_ready()
        if why is not None:
            self.stats["not_ready_answers"] = self.stats.get("not_ready_answers", 0) + 1
            return self.not_ready_response(web, why)
        query = {} if client_path else request.query
        try:
            attrs = attribute_values(query, request.headers, self.settings.decision_header_prefix,
                                     self.router.header_tag_keys)
        except AttributeOutOfBounds as exc:  # the event contract's bounds (trust34): named, never matched
            self.stats["attributes_out_of_bounds"] = self.stats.get("attributes_out_of_bounds", 0) + 1
            return web.json({"error": str(exc)}, status=400, headers={"Cache-Control": "no-store"})
        body = self.view.decide(attrs)
        ignored = ignored_parameters(query)
        if ignored:  # said in the answer (and counted, logged once per set) rather than silently answered for less
            body = {**body, "ignored_parameters": ignored}
            self.stats["ignored_parameters"] = self.stats.get("ignored_parameters", 0) + 1
            if tuple(ignored) not in self._ignored_said and len(self._ignored_said) < 100:
                self._ignored_said.add(tuple(ignored))
                log.warning("/v1/decision ignores unknown query parameter(s) %s (it reads %s, tag:<name> and "
                            "throttle_status)", ", ".join(ignored), ", ".join(QUERY_DIMENSIONS))
        prefix = self.settings.decision_header_prefix
        unread = ignored_headers(request.headers, prefix)
        if unread:  # the same for a misspelt attribution header (walk32)
            body = {**body, "ignored_headers": unread}
            self.stats["ignored_headers"] = self.stats.get("ignored_headers", 0) + 1
            if ("header",) + tuple(unread) not in self._ignored_said and len(self._ignored_said) < 100:
                self._ignored_said.add(("header",) + tuple(unread))
                log.warning("/v1/decision ignores unknown header(s) %s (it reads %s<dimension> for %s, and "
                            "%stag-<name>)", ", ".join(unread), prefix, ", ".join(QUERY_DIMENSIONS), prefix)
        headers = {"Cache-Control": "no-store", "X-Tokenmeter-Action": body["action"]}
        if body.get("retry_after_s") and body["action"] == "throttle":
            headers["Retry-After"] = str(body["retry_after_s"])
        status = http_status(body["action"])
        if body["action"] == "throttle" and query.get("throttle_status") == "403":
            status = 403  # nginx auth_request treats any status but 2xx/401/403 as an error (500)
        return web.json(body, status=status, headers=headers)

    def install(self) -> None:
        app, service = self.app, self

        @app.task
        async def follow_budgets() -> None:
            await follow_compacted(service.settings.bootstrap_servers, topics.BUDGETS, service._on_budgets,
                                   ready=service.ready, fetch_wait=service.settings.fetch_wait)

        if self.owns_budgets:
            self._install_owner()

    def _install_owner(self) -> None:
        """The budgets' side: spend in, alerts and decisions out, the decision and admin endpoints."""
        app, service = self.app, self
        install_admin_routes(app, service)  # PUT/DELETE /v1/budgets/{name}, admin token generated at first start

        @app.task
        async def follow_enforcement() -> None:
            def on_change(changed: dict[str, bytes | None], caught_up: bool) -> None:
                service.view.update_raw(changed)
                service.readiness.enforcement_read = service.readiness.enforcement_read or caught_up

            await follow_compacted(service.settings.bootstrap_servers, topics.ENFORCEMENT, on_change,
                                   fetch_wait=service.settings.fetch_wait)

        @app.task
        async def load_owned_budgets() -> None:
            await service.ready.wait()
            while True:
                await service._load_wanted.wait()
                service._load_wanted.clear()
                await service.load_owned()

        @app.agent(self.spend_topic)
        async def evaluate_budgets(stream):  # noqa: ANN001
            try:
                await service.evaluate(stream)
            except Exception as exc:  # outside a batch step: shown on /health until a batch succeeds again
                service.health.failed("evaluate_budgets", exc, 1)
                raise

        @app.timer(TICK_SECONDS)
        async def budget_tick() -> None:
            await service.tick()

        @app.task
        async def seed_budgets() -> None:  # the period's spend from before a budget existed (seed.py)
            await BudgetSeeder(service).run()

        @app.on_partitions_assigned.connect
        async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:  # noqa: ARG001
            service.owner.forget_all()  # partitions moved: reload owned budgets from the state topic
            service.gaps.forget()
            service._ids_pending.clear()
            service.readiness.assign(tp.partition for tp in assigned if tp.topic == topics.BUDGET_SPEND)
            service._load_wanted.set()  # decisions derived again before the worker answers (readiness.py)

        @app.page("/v1/decision")
        async def decision(web, request):  # noqa: ANN001
            return service.decision_response(web, request)

        @app.page("/ready")
        async def ready(web, request):  # noqa: ANN001
            why = service.not_ready()
            return web.json({"ready": True}) if why is None else service.not_ready_response(web, why)

        async def decision_ext_authz(request):  # noqa: ANN001
            # Envoy's HTTP ext_authz appends the original request path (and its query) to the configured prefix and
            # asks with the client's own method (an LLM call: POST; its body is not read): any method, not GET only
            # (walk32: every POST was refused by a 405 from here).
            from .reservations import LEAN_WEB

            return service.decision_response(LEAN_WEB, request, client_path=True)

        app.web.web_app.router.add_route("*", "/v1/decision/{path:.*}", decision_ext_authz)

        @app.page("/v1/budgets")
        async def budgets_page(web, request):  # noqa: ANN001
            return web.json({"budgets": [public_budget(b) for b in service.budgets.values()],
                             "decisions": list(service.view.records.values()), "stats": service.stats})


def _entries(value: bytes) -> list[list[Any]]:
    """The entries of a budget-spend message; [] for one that is not ours (anyone can write to a topic)."""
    try:
        message = orjson.loads(value)
    except orjson.JSONDecodeError:
        return []
    entries = message.get("entries") if isinstance(message, dict) else None
    return entries if _well_formed(entries) else []


def demo_budgets() -> list[Budget]:
    """Budgets for `tokenmeter up --demo`: one that the demo traffic crosses within minutes, one that blocks."""
    return [
        parse_budget({"name": "search-monthly", "scope": {"team": "search"}, "period": "month", "limit": "25",
                      "thresholds": [50, 80, 100], "action": "alert"}),
        # growth's agent key (collectors/demo_live.AGENT_KEY) alone: the live agent loop reaches it in ~4-5 minutes.
        # Scoped to the whole team it was reached by growth's usual traffic (~2.5 USD a weekday) in the first UTC
        # hours, and growth was blocked for the rest of each such day before any loop ran.
        parse_budget({"name": "growth-agent-daily", "scope": {"team": "growth", "api_key": "sk-glo-grow-agent"},
                      "period": "day", "limit": "0.10", "thresholds": [50, 80, 100], "action": "block"}),
        parse_budget({"name": "acme-tokens-daily", "scope": {"org": "acme"}, "period": "day", "metric": "tokens",
                      "limit": 50_000_000, "action": "throttle"}),
    ]


def load_mirror(data_dir: Path) -> list[Budget]:
    path = Path(data_dir).resolve() / MIRROR_FILE
    if not path.exists():
        return []
    budgets = []
    for item in json.loads(path.read_text()):
        try:
            budgets.append(parse_budget(item))
        except BudgetError as exc:
            log.warning("budget mirror: skipped an invalid budget: %s", exc)
    return budgets


__all__ = ["BudgetService", "demo_budgets", "load_mirror"]
