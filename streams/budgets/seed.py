"""A budget defined while the stack runs counts its period's spend from the period's start (seed32).

The pricing workers route an event's amount to a budget only once they know the budget, so a budget defined on the
20th of the month would otherwise count from its definition on (walk31: 0.0015 USD read while the team had spent
0.1688 USD that day). The spend from before lies in the warehouse, which lags the workers by the loader's flush.
The seam, per budget whose state has no seed yet (new, or its scope, metric, period or zone changed):

1. The owner counts live entries as always and keeps the event ids it applied meanwhile (`seed_live`).
2. After SETTLE_SECONDS (every pricing worker follows the definitions topic and routes the budget by then; a batch
   priced before it knew the budget has been written to tokenmeter.priced), the end offsets of tokenmeter.priced
   and of the budget's budget-spend partition are taken; once the loader's committed offsets reach the former, the
   warehouse holds every event not routed live; once this owner has applied the latter (or the worker group had
   committed it before this process started), every event routed until then is in `seed_live` (a backlog of
   entries, e.g. budgets workers down while pricing workers ran, is applied first: otherwise its events, already in
   the warehouse, would be added by the seed and again when applied).
3. Under the owner's lock, over the window's rows loaded until the newest one then (one consistent set while the
   loader goes on): their spend per hour, less the warehouse's copies of the `seed_live` events, is added; their
   newest SEED_IDS ids are remembered as counted (a resend of one, or a routed entry applied after its row was
   loaded, counts once; a row loaded later is not in the seed, so its id must not be remembered); the thresholds
   passed alert once (owner._seeded_alert).

Each event thus counts once whether it reached the warehouse before the seed or after. What this assumes: a pricing
worker follows a new definition within SETTLE_SECONDS (it reads the definitions topic continuously; one stalled for
longer would leave its unrouted events out of both counts until `tokenmeter budget rebuild --all`). A replay of an
event older than the SEED_IDS newest would count twice, as any replay older than the ledger's id window does.
Without a loader serving the warehouse (no endpoint, no ClickHouse URL) the seed waits, and the budget says
`spend_before_definition: pending` in its decision record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from streams.agent_health import retry_until_done
from tokenmeter import topics

from .readiness import spend_partition
from .recent import high_watermark, records_since

log = logging.getLogger("tokenmeter.budgets")
SETTLE_SECONDS = 5.0  # after the owner took the budget: every router knows it, batches priced before it are written
POLL_SECONDS = 1.0
SEED_IDS = 50_000  # newest loaded ids remembered as counted (the ledger's window keeps 100,000 per budget)
LOADER_GROUP = "tokenmeter-loader"  # warehouse.loader.GROUP_ID (not imported: the worker never loads the loader)
CLOCK_MARGIN = timedelta(seconds=60)  # the seed's start (owner clock) against budget-spend record timestamps


class BudgetSeeder:
    """The seed task of a budgets-owning worker (`run`, one per BudgetService)."""

    def __init__(self, service: Any):
        self.service = service
        self._said_no_warehouse = False

    async def run(self) -> None:
        await self.service.ready.wait()
        while True:
            try:
                await self.step()
            except Exception as exc:  # noqa: BLE001 - a broker or warehouse hiccup: the next poll tries again
                log.warning("budget seed: %s (retrying)", exc)
            await asyncio.sleep(POLL_SECONDS)

    async def step(self) -> None:
        owner, settings = self.service.owner, self.service.settings
        due = [n for n in owner.seeds_pending()
               if time.monotonic() - owner.runtimes[n].seed_taken >= SETTLE_SECONDS]
        if not due:
            return
        from warehouse.endpoint import live_reader

        reader = await asyncio.to_thread(live_reader, settings)
        if reader is None:
            if not self._said_no_warehouse:
                log.info("budget(s) %s: the spend from before their definition waits for the loader's warehouse",
                         ", ".join(sorted(due)))
                self._said_no_warehouse = True
            return
        self._said_no_warehouse = False
        try:
            untargeted = [n for n in due if owner.runtimes[n].seed_target is None]
            if untargeted:
                ends = await priced_ends(settings)
                for name in untargeted:
                    partition = spend_partition(name, self.service.readiness.partitions)
                    spend_end = await high_watermark(settings.bootstrap_servers, topics.BUDGET_SPEND, partition,
                                                     fetch_wait=settings.fetch_wait)
                    owner.runtimes[name].seed_target = {"priced": ends, "spend": (partition, spend_end)}
            stored = await committed_offsets(settings, LOADER_GROUP, topics.PRICED)
            owned: dict[int, int] | None = None
            for name in due:
                rt = owner.runtimes.get(name)
                if rt is None or rt.seed_target is None:
                    continue
                if any(stored.get(p, -1) < end for p, end in rt.seed_target["priced"].items() if end > 0):
                    continue  # the loader has not stored every event priced before the budget was routed
                partition, spend_end = rt.seed_target["spend"]
                if self.service.spend_applied.get(partition, -1) + 1 < spend_end:
                    # not applied by this process; maybe before it started (committed by the group, never read again)
                    owned = owned if owned is not None else await committed_offsets(
                        settings, self.service.app.conf.id, topics.BUDGET_SPEND)
                    if owned.get(partition, -1) < spend_end:
                        continue  # entries routed before then are not applied yet: they would not be in `seed_live`
                await self._seed(name, rt, reader)
        finally:
            await asyncio.to_thread(reader.close)

    async def _seed(self, name: str, rt: Any, reader: Any) -> None:
        from warehouse.analytics import budget_loaded_until, budget_newest_ids, budget_spend_by_hour

        service, owner = self.service, self.service.owner
        async with service._owner_lock:  # nothing is applied live between the queries and the addition
            if owner.runtimes.get(name) is not rt or rt.seed_since is None:
                return  # forgotten in a rebalance, or seeded meanwhile
            if not rt.seed_live_complete:
                await self._read_live_ids(name, rt)
            budget, now = rt.budget, datetime.now(timezone.utc)
            start, end = owner.seed_window(name, now)
            scope = dict(budget.scope)
            # One set of rows for the three queries, however long they take while the loader goes on: those loaded
            # until the newest one now (a row loaded in between was subtracted without being added, and its id
            # remembered as counted while only its live entry, still to come, counts it). The loader stored every
            # unrouted event before it committed the target offsets, which `step` saw before this.
            until = await asyncio.to_thread(budget_loaded_until, reader, scope, start, end)
            stored, stored_live, newest = {}, {}, []
            if until is not None:
                stored = await asyncio.to_thread(budget_spend_by_hour, reader, scope, budget.metric, start, end,
                                                 None, until)
                live = sorted(rt.seed_live)
                stored_live = (await asyncio.to_thread(budget_spend_by_hour, reader, scope, budget.metric, start,
                                                       end, live, until) if live else {})
                newest = await asyncio.to_thread(budget_newest_ids, reader, scope, start, end, SEED_IDS, until)
            # the ids first: on budget-spend, where a restarted owner re-reads its window of counted ids (RECENT_MESSAGES)
            await retry_until_done("budget_seed", service.health, lambda: self._send_ids(name, newest),
                                   "writing the seeded event ids")
            outcome = owner.complete_seed(name, stored, stored_live, newest, now)
            # once: the owner's state moved on, so its records must reach the topics (a retry only publishes again)
            await retry_until_done("budget_seed", service.health, lambda: service._publish(outcome),
                                   "publishing the seeded state")

    async def _send_ids(self, name: str, event_ids: list[str]) -> None:
        futures = [await self.service.spend_topic.send(key=name.encode(), value=value)
                   for value in seeded_messages(name, event_ids)]
        await asyncio.gather(*futures)

    async def _read_live_ids(self, name: str, rt: Any) -> None:
        """After a restore, the ids this budget's owner counted live since the seed began: the budget-spend entries
        since then that the restored state has applied (later ones are applied, and kept, as they come)."""
        settings = self.service.settings
        partition = spend_partition(name, self.service.readiness.partitions)
        for record in await records_since(settings.bootstrap_servers, topics.BUDGET_SPEND, partition,
                                          rt.seed_since - CLOCK_MARGIN, fetch_wait=settings.fetch_wait):
            if record.key == name and record.value:
                from .service import _entries

                rt.seed_live.update(e[2] for e in _entries(record.value)
                                    if int(e[1]) <= rt.applied.get(str(e[0]), -1))
        rt.seed_live_complete = True


IDS_PER_MESSAGE = 5000  # ~200 KB of ids: far below Kafka's 1 MB default message size


def seeded_messages(name: str, event_ids: list[str], rebuilt_at: str | None = None) -> list[bytes]:
    """budget-spend messages carrying the ids a seed (or the rebuild of `rebuilt_at`, rebuild.py) counted, oldest
    first (no entries: nothing to apply)."""
    ordered = list(reversed(event_ids))
    extra = {"rebuilt_at": rebuilt_at} if rebuilt_at else {}
    return [orjson.dumps({"budget": name, "entries": [], "counted_ids": ordered[i:i + IDS_PER_MESSAGE], **extra})
            for i in range(0, len(ordered), IDS_PER_MESSAGE)]


def seeded_ids(value: bytes, rebuilt_at: str | None = None) -> list[str]:
    """The ids of a seed's budget-spend message, or of the rebuild of `rebuilt_at` (the one the reader's state
    descends from; another rebuild's are not the reader's to skip); [] for any other message."""
    try:
        message = orjson.loads(value)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(message, dict) or message.get("rebuilt_at", rebuilt_at) != rebuilt_at:
        return []
    ids = message.get("counted_ids")
    return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []


async def priced_ends(settings: Any) -> dict[int, int]:
    """tokenmeter.priced's end offset per partition (from fetch responses: recent.high_watermark)."""
    from tokenmeter.kafka_topics import topic_partitions

    out = {}
    for tp in await topic_partitions(settings.bootstrap_servers, topics.PRICED):
        out[tp.partition] = await high_watermark(settings.bootstrap_servers, topics.PRICED, tp.partition,
                                                 fetch_wait=settings.fetch_wait)
    return out


async def committed_offsets(settings: Any, group: str, topic: str) -> dict[int, int]:
    """A consumer group's committed offset per partition of `topic` (-1: none): for the loader's group and
    tokenmeter.priced, what the warehouse holds; for the worker's and tokenmeter.budget-spend, what its owners
    applied."""
    from aiokafka.admin import AIOKafkaAdminClient

    from tokenmeter.kafka_topics import topic_partitions

    partitions = await topic_partitions(settings.bootstrap_servers, topic)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in committed.items()}


__all__ = ["BudgetSeeder", "LOADER_GROUP", "SETTLE_SECONDS", "seeded_ids", "seeded_messages"]
