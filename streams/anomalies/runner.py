"""`tokenmeter anomalies run`: the anomaly detector as a process role.

One replica: the engine needs every partition of `tokenmeter.priced` (a team's scopes can span partitions), so the
consumer assigns all of them itself (no group rebalance) and uses its group only to record offsets. Batches run on
the shared commit loop (tokenmeter/commitloop.py writes the protocol): decode -> engine.observe -> anomaly records
to `tokenmeter.anomalies` and alert records to `tokenmeter.alerts` -> every one acknowledged -> the input offsets
committed (at-least-once; anomaly and alert ids are stable, so a redelivered batch re-publishes the same ids, which
consumers deduplicate). Event time is tracked per (partition, message key) substream (substreams.py: Kafka and the
worker keep order per key, not per partition), idle substreams stop holding the watermark, and the wall clock closes
buckets only once every partition is read to its end (so a backfill of weeks, on any number of partitions, builds
the baselines instead of being late).

The engine state is saved to `<data_dir>/anomalies/engine.json` (atomic replace) with the input offsets it
reflects; at start the runner restores it and seeks to those offsets, so the engine sees every event once even
when the group's committed offsets are ahead of the last snapshot. Acks/mutes (`tokenmeter.anomaly-acks`) are
read from the beginning and followed; a muted (kind, scope) gets no pages (it is still detected and recorded), and
a resolve follows its page (`Detector._withheld`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from streams.alerts.outbox import routes_note
from tokenmeter import deadletters
from tokenmeter.priced_wire import decode_value, record_headers
from tokenmeter.commitloop import Batch, CommitLoop
from tokenmeter.kafka_topics import partitions_behind, topic_partitions
from tokenmeter.settings import Settings
from tokenmeter.topics import ALERTS, ANOMALIES, DEADLETTER, PRICED

from .acks import MuteTable, follow_acks
from .engine import AnomalyEngine
from .publish import alert_for
from .substreams import IDLE_AFTER_S, TRAIL_S, TRAIL_SOURCE, Substreams, substream_id

log = logging.getLogger("tokenmeter.anomalies")
GROUP_ID = "tokenmeter-anomalies"
STATS_LOG_SECONDS = 60.0
LATE_KEYS_KEPT = 100  # keys named in the late-event counts (bounded)
WITHHELD_KEPT = 100_000  # dedup keys of pages a mute withheld, whose resolves are withheld too (oldest dropped)


def state_path(settings: Settings) -> Path:
    return settings.data_dir.resolve() / "anomalies" / "engine.json"


def save_state(path: Path, engine: AnomalyEngine, offsets: dict[int, int],
               withheld: dict[str, int] | None = None) -> None:
    """Write engine + offsets (+ the dedup keys of pages a mute withheld) atomically: a crash leaves the previous
    file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(orjson.dumps({"engine": engine.snapshot(), "offsets": {str(p): o for p, o in offsets.items()},
                                  "withheld": withheld or {}}))
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_state(path: Path) -> tuple[AnomalyEngine, dict[int, int], dict[str, int]]:
    """The saved engine, offsets and withheld pages, or a fresh engine when there is none or it cannot be read
    (logged). A state saved before 2026-12-07's withheld pages has none: a resolve of a page withheld then goes out."""
    if not path.exists():
        return AnomalyEngine(), {}, {}
    try:
        data = orjson.loads(path.read_bytes())
        engine = AnomalyEngine.restore(data["engine"])
        if engine.restored_note:
            log.warning("anomaly state %s restored with today's defaults: %s", path, engine.restored_note)
        return engine, {int(p): int(o) for p, o in data["offsets"].items()}, _withheld_pages(data.get("withheld"))
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        log.error("cannot restore anomaly state from %s (%s); starting fresh", path, exc)
        return AnomalyEngine(), {}, {}


def decode(value: bytes | None, headers: Any = None) -> list[dict]:
    """A `tokenmeter.priced` message: one priced event or a JSON array of them, or their Arrow rows (the header
    names the format; tokenmeter.priced_wire is the topic's one decode)."""
    data = decode_value(value or b"null", headers)
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list) and all(isinstance(item, dict) for item in data):
        return data
    raise ValueError(f"expected a priced event object or an array of them, got {type(data).__name__}")


def _withheld_pages(saved: Any) -> dict[str, int]:
    """The saved withheld pages; an unreadable entry is dropped alone (its resolve then goes out), never the engine."""
    if not isinstance(saved, dict):
        return {}
    return {str(k): v for k, v in saved.items() if isinstance(v, int) and not isinstance(v, bool)}


class Detector:
    def __init__(self, settings: Settings, group_id: str = GROUP_ID, snapshot_every_s: float = 30.0,
                 max_records: int = 10000, idle_after_s: float = IDLE_AFTER_S, trail_s: float = TRAIL_S):
        self.settings = settings
        self.group_id = group_id
        self.snapshot_every_s = snapshot_every_s
        self.max_records = max_records
        self.path = state_path(settings)
        self.engine, self.offsets, self.withheld = load_state(self.path)
        # Substreams are learnt again as they deliver (a saved engine may carry other ids, or partition numbers);
        # until each partition has delivered, it holds the watermark (substreams.py). The watermark itself stays.
        self.engine.sources.clear()
        # trail_s: tests whose events are all on the topic before the detector starts pass a short trail, so an
        # anomaly closes ~1 s after the last read instead of 10 (substreams.py's tests cover the trail itself)
        self.inputs = Substreams(idle_after_s, trail_s=trail_s)
        self.late_keys: dict[str, int] = {}  # key -> events that arrived behind the watermark
        self.mutes = MuteTable()
        self.counters = {"messages": 0, "bad_messages": 0, "anomaly_records": 0, "alerts": 0, "alerts_muted": 0,
                         "send_retries": 0}

    async def run(self, stop: asyncio.Event) -> None:
        bootstrap = self.settings.bootstrap_servers
        note = routes_note("TOKENMETER_ANOMALY_NOTIFY", self.settings.anomaly_notify)
        if note:
            log.info(note)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=self.group_id, enable_auto_commit=False,
                                    auto_offset_reset="earliest", max_poll_records=self.max_records,
                                    **self.settings.group_timeouts, **self.settings.fetch_wait)
        acks = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", **self.settings.fetch_wait)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        # The shared loop (tokenmeter/commitloop.py has the protocol); partitions assigned here, not subscribed.
        loop = CommitLoop(consumer, producer=producer, name="anomaly detector", max_records=self.max_records,
                          fetch_timeout_ms=500)
        started = []
        try:
            for client in (acks, producer):
                await client.start()
                started.append(client)
            async with loop:
                tps = await topic_partitions(bootstrap, PRICED)
                consumer.assign(tps)
                for tp in tps:
                    if tp.partition in self.offsets:
                        consumer.seek(tp, self.offsets[tp.partition])
                    else:
                        committed = await consumer.committed(tp)
                        if committed is not None:
                            consumer.seek(tp, committed)
                        else:
                            await consumer.seek_to_beginning(tp)
                await follow_acks(bootstrap, acks, self.mutes)  # standing mutes hold from the first batch
                log.info("anomaly detector reading %s (%d partitions) from %s", PRICED, len(tps),
                         "its saved state" if self.offsets else "committed offsets")
                self._last_save = self._last_log = time.monotonic()
                await loop.run(lambda batch: self._process(batch, acks, consumer, stop, tps), stop)
            save_state(self.path, self.engine, self.offsets, self.withheld)
        finally:
            for client in reversed(started):
                await client.stop()
            for client in (consumer, acks, producer):  # made but never started (a start failed): closed too
                if client not in started:
                    await client.stop()
            log.info("anomaly detector stopped: %s, engine %s", self.counters, self.engine.stats)

    async def _process(self, batch: Batch, acks: AIOKafkaConsumer, consumer: AIOKafkaConsumer, stop: asyncio.Event,
                       tps: list) -> None:
        """One batch of the commit loop: follow mutes, detect, publish and await acks; the loop then commits."""
        for records in (await acks.getmany(timeout_ms=0)).values():
            for record in records:
                self.mutes.apply(record.value)
        await self._handle(batch, consumer, stop, tps)
        if time.monotonic() - self._last_log >= STATS_LOG_SECONDS:
            self.inputs.forget_silent(self.engine.sources)
            late = sorted(self.late_keys.items(), key=lambda item: -item[1])[:5]
            log.info("anomaly detector: %s; engine %s; event time %s%s%s", self.counters, self.engine.stats,
                     iso_or_none(self.engine.watermark), f"; late events by key: {dict(late)}" if late else "",
                     f"; last bad event: {self.engine.last_error}" if self.engine.last_error else "")
            self._last_log = time.monotonic()
        if time.monotonic() - self._last_save >= self.snapshot_every_s:
            save_state(self.path, self.engine, self.offsets, self.withheld)
            self._last_save = time.monotonic()

    async def _behind(self, consumer: AIOKafkaConsumer, tps: list) -> set[int]:
        """Partitions with records not yet returned: position below the high watermark of the last fetch (no
        remembered ends: a live follower). Unknown = behind."""
        return {tp.partition for tp in await partitions_behind(consumer, tps, {})}

    async def _handle(self, batch: Batch, consumer: AIOKafkaConsumer, stop: asyncio.Event,
                      tps: list | None = None) -> None:
        per_substream: dict[int, list[dict]] = {}
        delivered: dict[int, dict[int, str]] = {}  # partition -> {substream id: key text}
        outputs: list[tuple[str, bytes | None, bytes]] = []  # (topic, key, value)
        for tp, records in batch.records.items():
            for record in records:
                self.counters["messages"] += 1
                try:
                    events = decode(record.value, record_headers(record))
                except (orjson.JSONDecodeError, ValueError) as exc:
                    # Bad input never stops the detector: dead-letter it with the reason, count it, go on.
                    self.counters["bad_messages"] += 1
                    outputs.append((DEADLETTER, None, deadletters.encode(deadletters.dead_letter(
                        f"anomalies: {exc}", record.value, "anomalies", topic=tp.topic, partition=tp.partition,
                        offset=record.offset))))
                    continue
                if events:
                    sid = substream_id(tp.partition, record.key)
                    per_substream.setdefault(sid, []).extend(events)
                    delivered.setdefault(tp.partition, {})[sid] = (record.key or b"").decode(errors="replace")
        # Event time per (partition, key) substream (substreams.py): Kafka and the worker keep a key's records in
        # order, not a partition's. The substreams of this batch hold the watermark until all of it is folded.
        partitions = [tp.partition for tp in (tps or list(batch.records))]
        behind = await self._behind(consumer, tps or list(batch.records))
        self.inputs.delivered({p: substreams.items() for p, substreams in delivered.items()})
        sources = self.engine.sources
        updates = self.engine.set_behind(self.inputs.holders(partitions, behind) | {TRAIL_SOURCE})
        for sid, events in per_substream.items():
            late = self.engine.stats["late_events"]
            updates += self.engine.observe(events, source=sid, early=False)
            if self.engine.stats["late_events"] > late:
                self._late(sid, self.engine.stats["late_events"] - late)
        if per_substream:
            self.engine.judge_running(updates)  # once per poll, not per substream (each reads the running bucket)
        newest = max((t for s, t in sources.items() if s != TRAIL_SOURCE), default=0)
        live = not behind and bool(newest) and time.time() - newest <= self.engine.cfg.live_lag_s
        if live:
            self.inputs.live_tick()  # quiet live input: keys that delivered long ago stop holding (liveness)
        holders = self.inputs.holders(partitions, behind, known=sources, live=live)
        updates += self.engine.set_behind(self.inputs.trailed(holders, sources))
        if not per_substream and not behind:
            # Quiet input, every partition read to its end: let wall-clock time close buckets (minus the grace),
            # so an anomaly still resolves. Never while history is still being read (that would make it late);
            # the engine also refuses when its newest event is far behind the wall clock (a finished backfill).
            updates += self.engine.advance_to(time.time() - self.engine.cfg.grace_s)
        now = datetime.now(timezone.utc)
        for update in updates:
            record = update.record
            outputs.append((ANOMALIES, record["id"].encode(), orjson.dumps(record)))
            self.counters["anomaly_records"] += 1
            alert = alert_for(update, self.settings.dashboard_url)
            if alert is None:
                continue
            if self._withheld(update, alert, record, now):
                self.counters["alerts_muted"] += 1
                continue
            outputs.append((ALERTS, alert["dedup_key"].encode(), orjson.dumps(alert)))
            self.counters["alerts"] += 1
        if outputs:
            await self._send_all(batch, outputs, stop)
        # The engine has folded these offsets, whatever becomes of the commit (the snapshot records them).
        self.offsets.update({tp.partition: offset for tp, offset in batch.next_offsets().items()})

    def _withheld(self, update, alert: dict, record: dict, now: datetime) -> bool:
        """Whether a mute withholds this alert. A page (of several kinds, kinds.py) is withheld only when every kind
        on it is muted, a joining kind's trigger when its own kind is. A resolve follows its page, whatever the mutes
        say when it comes: a page muted after it went out (the mute command is in the page) still resolves, so the
        PagerDuty incident and the Slack thread close; a page that was withheld gets no "Resolved" either, even
        when the mute ended before the anomaly did. The withheld pages' dedup keys are in the saved state."""
        key = alert["dedup_key"]
        if alert["action"] == "resolve":
            return self.withheld.pop(key, None) is not None
        joins = (update.incident or {}).get("role") == "join"
        kinds = [record["kind"]] if joins else alert["details"].get("kinds") or [record["kind"]]
        if not all(self.mutes.muted(kind, record["scope_dim"], record["scope_value"], now) for kind in kinds):
            self.withheld.pop(key, None)  # a joining kind's trigger opens the incident's page after all
            return False
        if not joins:  # a withheld join leaves its incident's page (and so its resolve) as it was
            self.withheld[key] = int(now.timestamp())
            while len(self.withheld) > WITHHELD_KEPT:  # bounded: anomalies close, but state must not grow unseen
                self.withheld.pop(next(iter(self.withheld)))
        return True

    def _late(self, sid: int, count: int) -> None:
        """Events of one key arrived behind the watermark: count them per key and say, once per key, why."""
        name = self.inputs.names.get(sid, "?")
        if name not in self.late_keys and len(self.late_keys) >= LATE_KEYS_KEPT:
            name = "(other keys)"
        first = name not in self.late_keys
        self.late_keys[name] = self.late_keys.get(name, 0) + count
        if first:
            log.warning("%d event(s) of key %r arrived behind the detector's event time (%s) and were counted in the "
                        "oldest open bucket. A backfill must be produced in event-time order per key, all keys at "
                        "once (merged, or files replayed concurrently), not one key's history after another's on "
                        "the same partition: see docs/anomalies.md, Backfill", count, name,
                        iso_or_none(self.engine.watermark))

    async def _send_all(self, batch: Batch, outputs: list, stop: asyncio.Event) -> None:
        """Send and await every output. The engine has already folded this batch, so on a Kafka error the same
        records are sent again (their ids make duplicates harmless) until they are acknowledged; the loop commits
        the input only after that. If stopped meanwhile, the error ends the run: nothing committed or saved."""
        delay = 0.5
        while True:
            try:
                for topic, key, value in outputs:
                    await batch.send(topic, value, key=key)
                await batch.acked()
                return
            except KafkaError as exc:
                self.counters["send_retries"] += 1
                log.warning("could not publish %d anomaly records (%r); retrying in %.1f s", len(outputs), exc, delay)
                if stop.is_set():
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)


def iso_or_none(epoch_s: int) -> str | None:
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat().replace("+00:00", "Z") if epoch_s else None


async def run_anomaly_detector(settings: Settings, stop: asyncio.Event) -> None:
    """Run the detector until `stop` is set (for `tokenmeter up` / the supervisor, or the CLI)."""
    await Detector(settings).run(stop)
