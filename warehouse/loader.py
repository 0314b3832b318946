"""Loader: `tokenmeter.priced` and the record topics (alerts, deliveries, enforcement, anomalies, acks,
provider usage; see warehouse.records_load) -> warehouse, at-least-once in, exact totals out.

Per batch, on the shared commit loop (tokenmeter/commitloop.py writes the protocol): fetch (up to
`load_batch_rows` rows or `load_flush_seconds`), validate each event (bad ones go to the dead-letter topic with the
reason), insert with the warehouse's dedupe, send the dead letters, and only once they are acknowledged commit the
offsets. A crash anywhere before the commit means redelivery, which the dedupe absorbs.
While running, the loader owns the warehouse and serves its query endpoint to other processes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from streams.allocator import keep_freed_pages

keep_freed_pages()  # before polars loads (below): the loader's windows keep their freed pages (streams/allocator.py)

import numpy as np  # noqa: E402 - after the allocator setting
import orjson  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from tokenmeter import deadletters, priced_arrow, topics
from tokenmeter.priced_wire import ARROW, PricedFormatError, format_of, record_headers
from tokenmeter.commitloop import Batch, CommitLoop, Offsets
from warehouse.arrow_rows import build_batch
from warehouse.loader_arrow import build_arrow
from warehouse.loader_frames import build_table, certify, read_message
from warehouse.backends import WarehouseError
from warehouse.price_history import price_catalog_rows
from warehouse.records_load import RECORD_TOPICS, RecordRowError, record_to_row
from warehouse.schema import RowError, event_to_row
from warehouse.store import Warehouse, open_warehouse

log = logging.getLogger(__name__)

GROUP_ID = "tokenmeter-loader"
PROGRESS_EVERY_SECONDS = 10.0


@dataclass
class LoaderStats:
    batches: int = 0
    rows_seen: int = 0
    rows_inserted: int = 0
    records_inserted: int = 0  # rows of the record topics (alerts, enforcement, anomalies, ...)
    duplicates_skipped: int = 0
    dead_letters: int = 0
    refused_batches: int = 0  # compressed batches over the inflation bound (also in dead_letters; kafka_refused.py)
    commit_failures: int = 0
    insert_seconds: list[float] = field(default_factory=list)  # recent insert latencies (bounded)
    lag: int = 0

    def record_insert(self, seconds: float) -> None:
        self.insert_seconds.append(seconds)
        del self.insert_seconds[:-200]

    def insert_latency(self) -> dict[str, float]:
        ordered = sorted(self.insert_seconds)
        if not ordered:
            return {}
        return {"p50_ms": ordered[len(ordered) // 2] * 1000, "max_ms": ordered[-1] * 1000}


@dataclass
class _Batch:
    # Priced events as decoded, with their Kafka record; `build_priced` turns them into `table` (one row per
    # storable item, input order) and `sources` (each table row's (decoded event, Kafka record)) plus dead letters.
    items: list[tuple[Any, Any]] = field(default_factory=list)
    table: pa.Table | None = None
    sources: list[tuple[Any, Any]] = field(default_factory=list)
    # record topic -> (table row, decoded record, Kafka record): the last two to dead-letter a row the table refuses
    records: dict[str, list[tuple[dict[str, Any], Any, Any]]] = field(default_factory=dict)
    dead: list[dict[str, Any]] = field(default_factory=list)
    # Priced messages read into columns on arrival, in arrival order: JSON ones by polars (warehouse.loader_frames,
    # certified in `build_priced`; frame: a polars DataFrame) and Arrow ones (tokenmeter.priced_arrow; frame: the
    # validated pyarrow Table): (Kafka record, frame, len(items) and len(dead) when it arrived: its place among the
    # dict-path items and the dead letters)
    reads: list[tuple[Any, Any, int, int]] = field(default_factory=list)


def _dead_letter(reason: str, payload: Any, record: Any) -> dict[str, Any]:
    return deadletters.dead_letter(reason, payload, "load", topic=record.topic, partition=record.partition,
                                   offset=record.offset)


def _decode(raw: Any) -> Any:
    """orjson.loads with the cyclic GC paused: a message of 500 priced events is ~3,000 new dicts, and a window
    keeps ~120,000 of them alive, so the GC ran every 700 allocations and rescanned the growing window (decoding
    20,000 events cost ~150 ms CPU, ~50 ms with the GC paused; issue 14, loader5). JSON values are acyclic: the
    pause frees nothing late."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return orjson.loads(raw)
    finally:
        if enabled:
            gc.enable()


def parse_record(record: Any, batch: _Batch) -> None:
    """Add one Kafka record (a PricedEvent object or a JSON array of them; or a record of a record topic) to
    the batch; never raises."""
    raw = record.value
    if record.topic != topics.PRICED:
        if raw is not None:  # None: a tombstone on a compacted topic (a deleted budget): nothing to store
            _parse_other(record, raw, batch)
        return
    if record_headers(record):
        table = _read_arrow(record, batch)
        if table is not _JSON:  # None: dead-lettered
            if table is not None:
                batch.items.extend((item, record) for item in priced_arrow.to_events(table))
            return
    try:
        decoded = _decode(raw) if raw is not None else None
    except orjson.JSONDecodeError as exc:
        text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
        batch.dead.append(_dead_letter(f"invalid JSON: {exc}", text[:10000], record))
        return
    for item in decoded if isinstance(decoded, list) else [decoded]:
        batch.items.append((item, record))


_JSON = object()  # `_read_arrow`: the message is JSON


def _read_arrow(record: Any, batch: _Batch) -> Any:
    """The validated rows of an Arrow message (tokenmeter.priced_arrow), `_JSON` for a JSON message, or None when
    the message cannot be read (its dead letter, with the reason, is added to the batch)."""
    try:
        if format_of(record_headers(record)) != ARROW:
            return _JSON
        if not isinstance(record.value, bytes):
            raise priced_arrow.ArrowMessageError("invalid Arrow IPC: empty message")
        return priced_arrow.read_table(record.value)
    except (PricedFormatError, priced_arrow.ArrowMessageError) as exc:
        batch.dead.append(_dead_letter(str(exc), record.value, record))
        return None


def _row_error_reason(exc: Exception) -> str:
    if isinstance(exc, RowError):
        return str(exc)
    # hostile input must never stop the loader: it is this record's problem
    return f"cannot be stored: {type(exc).__name__}: {str(exc)[:500]}"


def build_priced(batch: _Batch) -> None:
    """The batch's priced events as one Arrow table, column by column (warehouse.arrow_rows; the rows it cannot
    prove take `event_to_row` one by one; messages polars read take warehouse.loader_frames where certified);
    events that cannot be stored become dead letters with the reason."""
    if batch.reads:
        _build_with_frames(batch)
        return
    if not batch.items:
        return
    table, indices, errors = build_batch([item for item, _ in batch.items])
    for index, exc in errors:
        item, record = batch.items[index]
        batch.dead.append(_dead_letter(_row_error_reason(exc), item, record))
    batch.table, batch.sources = table, [batch.items[i] for i in indices]
    batch.items = []


ROW_BITS = 20  # (message << ROW_BITS | position) keys of loader_frames


class _Sources:
    """Each table row's (decoded event, Kafka record) without decoding the certified rows' messages: `messages[i]`
    is -1 for a dict-path row (`refs[i]` indexes `entries`) or the read whose message holds row `refs[i]`; that
    message is decoded with orjson only when a row of it is asked for (a refused or expired row's dead letter)."""

    def __init__(self, reads: list[tuple[Any, Any, int, int]], entries: list[tuple[Any, Any]],
                 messages: np.ndarray, refs: np.ndarray, decoded: dict[int, list[Any]] | None = None):
        self.reads, self.entries, self.messages, self.refs = reads, entries, messages, refs
        self.decoded = decoded if decoded is not None else {}

    def __len__(self) -> int:
        return len(self.messages)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return _Sources(self.reads, self.entries, self.messages[index], self.refs[index], self.decoded)
        message, ref = int(self.messages[index]), int(self.refs[index])
        if message < 0:
            return self.entries[ref]
        record, frame = self.reads[message][:2]
        if message not in self.decoded:
            self.decoded[message] = _items(record, frame)
        return self.decoded[message][ref], record

    def __iter__(self) -> Any:
        return (self[i] for i in range(len(self)))

    def filter(self, keep: np.ndarray) -> "_Sources":
        return _Sources(self.reads, self.entries, self.messages[keep], self.refs[keep], self.decoded)


def _items(record: Any, frame: Any) -> list[Any]:
    """The items of a message read into columns, as the dict path decodes them."""
    if isinstance(frame, pa.Table):
        return priced_arrow.to_events(frame)
    return _decode(record.value)


def _json_reads(reads: list[tuple[Any, Any, int, int]], subset: np.ndarray, entries: list, late: list,
                decoded: dict[int, list[Any]]) -> tuple[pa.Table, np.ndarray]:
    """(table, (message << ROW_BITS | position) keys) of the certified rows of the JSON reads `subset` (message: the
    index in `reads`); the other rows join `entries` as orjson decodes them, undecodable messages `late`."""
    local = [reads[i] for i in subset.tolist()]
    frames = certify([record.value for record, _, _, _ in local], [frame for _, frame, _, _ in local])
    take = frames.ok.copy()
    table, keys = build_table(frames, take)  # may refuse more rows (times): `take` says which it kept
    heights = np.array(frames.heights, np.int64)
    row_message = np.repeat(np.arange(len(local)), heights)
    dropped: list[int] = []  # messages whose certified rows are given up (orjson does not see the same rows)
    for index in np.unique(row_message[~take]).tolist():
        record, frame, items_before, mark = local[index]
        message = int(subset[index])
        try:
            items = _decode(record.value)
        except orjson.JSONDecodeError as exc:
            late.append((mark, message, _dead_letter(f"invalid JSON: {exc}",
                                                     record.value.decode("utf-8", "replace")[:10000], record)))
            dropped.append(index)
            continue
        if not isinstance(items, list) or len(items) != frame.height:
            items = items if isinstance(items, list) else [items]
            dropped.append(index)
            left = range(len(items))
        else:
            decoded[message] = items
            left = np.flatnonzero(~take[row_message == index]).tolist()
        entries.extend(((items_before, 0, message, position), items[position], record) for position in left)
    if dropped:
        keep = ~np.isin(keys >> ROW_BITS, dropped)
        table, keys = table.filter(pa.array(keep)), keys[keep]
    positions = keys & ((1 << ROW_BITS) - 1)
    return table, (subset[keys >> ROW_BITS].astype(np.int64) << ROW_BITS) | positions


def _arrow_reads(reads: list[tuple[Any, Any, int, int]], subset: np.ndarray, entries: list, late: list,  # noqa: ARG001
                 decoded: dict[int, list[Any]]) -> tuple[pa.Table, np.ndarray]:
    """(table, keys) of the rows of the Arrow reads `subset` that loader_arrow takes; the others join `entries` as
    the dicts their JSON would decode to (`priced_arrow.to_events`)."""
    tables = [reads[i][1] for i in subset.tolist()]
    table, ok = build_arrow(tables)
    heights = np.array([t.num_rows for t in tables], np.int64)
    row_message = np.repeat(subset.astype(np.int64), heights)
    positions = np.arange(int(heights.sum()), dtype=np.int64) - np.repeat(np.cumsum(heights) - heights, heights)
    for message in np.unique(row_message[~ok]).tolist():
        record, frame, items_before, _ = reads[message]
        items = decoded[message] = priced_arrow.to_events(frame)
        left = np.flatnonzero(~ok[row_message == message]).tolist()
        entries.extend(((items_before, 0, message, position), items[position], record) for position in left)
    return table, (row_message[ok] << ROW_BITS) | positions[ok]


def _build_with_frames(batch: _Batch) -> None:
    """build_priced for a batch with messages read into columns: certified rows of JSON messages as loader_frames
    builds them, rows of Arrow messages that pass loader_arrow's checks as it builds them, every other row (and the
    dict-path items) through build_batch, all in arrival order; dead letters in today's order."""
    reads = batch.reads
    is_arrow = np.array([isinstance(frame, pa.Table) for _, frame, _, _ in reads], bool)
    before = np.array([items_before for _, _, items_before, _ in reads], np.int64)
    # dict-path entries: (arrival key, item, record); arrival = (items before, 0, message, position) for rows of a
    # read message, (index, 1, 0, 0) for items decoded on arrival
    entries: list[tuple[tuple[int, int, int, int], Any, Any]] = [
        ((index, 1, 0, 0), item, record) for index, (item, record) in enumerate(batch.items)]
    late: list[tuple[int, int, dict[str, Any]]] = []  # (dead-letter mark, message, letter) of undecodable reads
    decoded: dict[int, list[Any]] = {}
    built = [read(reads, np.flatnonzero(subset), entries, late, decoded)
             for read, subset in ((_json_reads, ~is_arrow), (_arrow_reads, is_arrow)) if subset.any()]
    table = pa.concat_tables([t for t, _ in built]) if len(built) > 1 else built[0][0]
    keys = np.concatenate([k for _, k in built]) if len(built) > 1 else built[0][1]
    entries.sort(key=lambda entry: entry[0])
    dict_table, indices, errors = build_batch([item for _, item, _ in entries])
    if late:  # letters of messages orjson refuses where polars did not: where decoding on arrival had put them
        dead = list(batch.dead)
        for mark, _, letter in sorted(late, key=lambda entry: entry[:2], reverse=True):
            dead.insert(mark, letter)
        batch.dead[:] = dead
    for index, exc in errors:
        _, item, record = entries[index]
        batch.dead.append(_dead_letter(_row_error_reason(exc), item, record))
    messages = keys >> ROW_BITS
    positions = keys & ((1 << ROW_BITS) - 1)
    order_keys = [before[messages], np.zeros(len(keys), np.int64), messages, positions]
    kept = [entries[i] for i in indices]
    dict_keys = np.array([key for key, _, _ in kept], np.int64).reshape(-1, 4).T
    combined_keys = [np.concatenate([a, b]) for a, b in zip(order_keys, dict_keys)]
    order = np.lexsort(combined_keys[::-1])
    combined = pa.concat_tables([table, dict_table]) if dict_table.num_rows else table
    source_messages = np.concatenate([messages, np.full(len(kept), -1, np.int64)])
    source_refs = np.concatenate([positions, np.arange(len(kept), dtype=np.int64)])
    if not np.array_equal(order, np.arange(len(order))):
        combined, source_messages, source_refs = combined.take(pa.array(order)), source_messages[order], source_refs[order]
    batch.table = combined
    batch.sources = _Sources(reads, [(item, record) for _, item, record in kept], source_messages, source_refs,
                             decoded)
    batch.items, batch.reads = [], []


def _parse_other(record: Any, raw: bytes, batch: _Batch) -> None:
    try:
        decoded = _decode(raw)
    except orjson.JSONDecodeError as exc:
        batch.dead.append(_dead_letter(f"invalid JSON: {exc}", raw.decode("utf-8", "replace")[:10000], record))
        return
    for item in decoded if isinstance(decoded, list) else [decoded]:
        try:
            row = record_to_row(record.topic, item)[1]
        except RecordRowError as exc:
            batch.dead.append(_dead_letter(f"{record.topic}: {exc}", item, record))
        except Exception as exc:  # never raised by design; a bug here must still not crash-loop the loader
            batch.dead.append(_dead_letter(f"{record.topic}: cannot be stored: {type(exc).__name__}: "
                                           f"{str(exc)[:500]}", item, record))
        else:
            batch.records.setdefault(record.topic, []).append((row, item, record))


def _accept(window: Batch, records: list[Any]) -> int:
    """The commit loop's `accept`: parse records as they arrive; the window is measured in rows."""
    batch: _Batch = window.state
    before = len(batch.items)
    read = 0
    # The GC paused for the whole fetch, not only inside each orjson.loads: the (event, record) tuples and the
    # collections deferred to the next allocation still rescanned the window (20,000 events: ~145 ms CPU with the
    # GC, ~110 paused per message, ~50 paused per fetch). Decoded JSON and these tuples are acyclic.
    enabled = gc.isenabled()
    gc.disable()
    try:
        for record in records:
            if record.topic == topics.PRICED and record_headers(record):
                table = _read_arrow(record, batch)
                if table is None:  # dead-lettered
                    continue
                if table is not _JSON:  # the worker's micro-batch as Arrow columns: checked in build_priced
                    if table.num_rows:
                        batch.reads.append((record, table, len(batch.items), len(batch.dead)))
                        read += table.num_rows
                    continue
            frame = read_message(record.value) if record.topic == topics.PRICED else None
            if frame is None:
                parse_record(record, batch)
            else:  # the worker's micro-batch, read into columns; certified (or decoded) in build_priced
                batch.reads.append((record, frame, len(batch.items), len(batch.dead)))
                read += frame.height
    finally:
        if enabled:
            gc.enable()
    return len(batch.items) - before + read


async def _lag(consumer: AIOKafkaConsumer) -> int:
    """Records not yet consumed, from the fetch responses' high watermark (the embedded broker's
    ListOffsets under-reports the end of a partition, so end_offsets() is not used)."""
    total = 0
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is not None:
            total += max(0, highwater - await consumer.position(tp))
    return total


async def _flush(
    batch: _Batch,
    warehouse: Warehouse,
    window: Batch,
    stats: LoaderStats,
    stop: asyncio.Event,
) -> bool:
    """Store the batch and send its dead letters through the commit loop's batch; False when stopped first."""
    if batch.items or batch.reads:
        await asyncio.to_thread(build_priced, batch)
    if batch.sources:
        started = time.perf_counter()
        letters_before = len(batch.dead)
        inserted = await _retry(lambda: _store_priced(warehouse, batch), f"{len(batch.sources)} rows", stop)
        if inserted is None:
            return False  # stopped before the insert succeeded: no commit, the batch is redelivered
        stats.record_insert(time.perf_counter() - started)
        stats.rows_inserted += inserted
        refused = len(batch.dead) - letters_before  # expired or refused rows: dead letters, not duplicates
        stats.duplicates_skipped += len(batch.sources) - inserted - refused
    for topic, entries in batch.records.items():
        stored = await _retry(lambda entries=entries, topic=topic: _store(warehouse, topic, entries, batch),
                              f"{len(entries)} {topic} records", stop)
        if stored is None:
            return False
        stats.records_inserted += stored
    for letter in batch.dead:  # after the inserts: they may add letters for rows the warehouse refused
        await window.send(topics.DEADLETTER, deadletters.encode(letter))  # acked before the loop commits
        stats.dead_letters += 1
        log.warning("dead letter (%s[%s]@%s): %s", letter["topic"], letter["partition"], letter["offset"],
                    letter["reason"])
    stats.batches += 1
    stats.rows_seen += len(batch.sources)
    return True


async def _retry(insert: Callable[[], int], what: str, stop: asyncio.Event) -> int | None:
    """Insert, retrying with backoff while the warehouse fails (offsets stay uncommitted meanwhile)."""
    delay = 0.5
    while True:
        try:
            return await asyncio.to_thread(insert)
        except WarehouseError as exc:
            log.error("warehouse insert of %s failed, retrying in %.1fs: %s", what, delay, exc)
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
            return None
        except asyncio.TimeoutError:
            delay = min(delay * 2, 30.0)


_REFUSALS = (WarehouseError, pa.ArrowException, ValueError, TypeError, OverflowError)


def _store_halving(insert: Callable[[list[Any]], int], entries: list[Any], refused: Callable[[Any, str], None],
                   warehouse: Warehouse) -> int:
    """Insert `entries`; if the warehouse refuses them while it answers `SELECT 1`, find the refused entries by
    halving and hand each to `refused` (a row the warehouse cannot hold would otherwise be retried forever).
    A warehouse that does not answer raises WarehouseError, and the caller retries the whole batch (the
    dedupe and the Replacing tables absorb the halves already stored)."""
    try:
        return insert(entries)
    except _REFUSALS as exc:
        warehouse.query("SELECT 1")  # raises WarehouseError when the warehouse itself is down
        if len(entries) == 1:
            refused(entries[0], f"refused by the warehouse: {type(exc).__name__}: {str(exc)[:500]}")
            return 0
    middle = len(entries) // 2
    return (_store_halving(insert, entries[:middle], refused, warehouse)
            + _store_halving(insert, entries[middle:], refused, warehouse))


def _store(warehouse: Warehouse, topic: str, entries: list[tuple[dict[str, Any], Any, Any]], batch: _Batch) -> int:
    """Store (row, decoded item, Kafka record) entries of `topic` (PRICED or a record topic); dead letters for
    refused rows join the batch only once the whole attempt succeeded (a retried attempt would repeat them)."""
    letters: list[dict[str, Any]] = []

    def insert(part: list[tuple[dict[str, Any], Any, Any]]) -> int:
        rows = [row for row, _, _ in part]
        return warehouse.insert_rows(rows) if topic == topics.PRICED else warehouse.insert_records(topic, rows)

    def refused(entry: tuple[dict[str, Any], Any, Any], reason: str) -> None:
        _, item, record = entry
        letters.append(_dead_letter(reason if topic == topics.PRICED else f"{topic}: {reason}", item, record))

    if topic == topics.PRICED and warehouse.retention_days:
        # The raw row would expire at once while the rollups kept it; Warehouse.insert_rows would skip it.
        horizon = datetime.now(timezone.utc) - timedelta(days=warehouse.retention_days)
        expired = [entry for entry in entries if entry[0]["ts"] < horizon]
        for entry in expired:
            refused(entry, f"ts: {entry[0]['ts'].isoformat()} is older than the raw retention "
                           f"({warehouse.retention_days} days, TOKENMETER_RAW_RETENTION_DAYS)")
        if expired:
            entries = [entry for entry in entries if entry[0]["ts"] >= horizon]
    stored = _store_halving(insert, entries, refused, warehouse) if entries else 0
    batch.dead.extend(letters)
    return stored


class _TableEntries:
    """A priced table with each row's (decoded event, Kafka record), sliced together by `_store_halving`."""

    def __init__(self, table: pa.Table, sources: list[tuple[Any, Any]]):
        self.table, self.sources = table, sources

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            start, stop, _ = index.indices(len(self.sources))
            return _TableEntries(self.table.slice(start, stop - start), self.sources[index])
        return self.sources[index]


def _store_priced(warehouse: Warehouse, batch: _Batch) -> int:
    """Store the batch's priced table (`build_priced`); rows the warehouse refuses, and rows older than the raw
    retention, become dead letters (joining the batch only once the whole attempt succeeded)."""
    letters: list[dict[str, Any]] = []
    table, sources = batch.table, batch.sources

    def refused(entry: tuple[Any, Any], reason: str) -> None:
        item, record = entry
        letters.append(_dead_letter(reason, item, record))

    if warehouse.retention_days and table is not None and table.num_rows:
        # The raw row would expire at once while the rollups kept it; Warehouse.insert_table would skip it.
        horizon = datetime.now(timezone.utc) - timedelta(days=warehouse.retention_days)
        # The table holds ts in ms: rows within a ms of the horizon are decided on their exact ts.
        limit = pa.scalar(horizon + timedelta(milliseconds=1), table.schema.field("ts").type)
        candidates = np.flatnonzero(pc.less(table.column("ts"), limit).to_numpy(zero_copy_only=False))
        expired = []
        for index in candidates.tolist():
            ts = event_to_row(sources[index][0])["ts"]
            if ts < horizon:
                expired.append(index)
                refused(sources[index], f"ts: {ts.isoformat()} is older than the raw retention "
                                        f"({warehouse.retention_days} days, TOKENMETER_RAW_RETENTION_DAYS)")
        if expired:
            keep = np.ones(len(sources), bool)
            keep[expired] = False
            table = table.filter(pa.array(keep))
            sources = (sources.filter(keep) if isinstance(sources, _Sources)
                       else [source for source, kept in zip(sources, keep.tolist()) if kept])
    stored = (_store_halving(lambda part: warehouse.insert_table(part.table), _TableEntries(table, sources),
                             refused, warehouse) if sources else 0)
    batch.dead.extend(letters)
    return stored


# How long a starting loader waits for another process's hold on the warehouse to end: a reader that found no
# owner opened chDB itself and lets go within seconds; a second loader beside `up`'s never does.
OWNER_WAIT_SECONDS = 60.0
# How often a running loader deletes the dedupe and call keys past the raw retention (also done at each start).
# Retention counts whole days; each prune costs a count and a delete scan of the key tables and, when keys went, a
# rebuild of the in-process filter (~1 CPU-us per key left: warehouse/stored_ids.py).
PRUNE_EVERY_SECONDS = 6 * 3600


async def run_loader(
    settings: Any, stop: asyncio.Event | None = None, ready: Callable[[], Any] | None = None,
    price_book: Any = None,
) -> LoaderStats:
    """Run until `stop` is set (without one, until cancelled; `tokenmeter.cli_support.run_service` sets it on
    SIGTERM/SIGINT); returns the counters.
    `price_book` (a streams.pricing PriceBook, optional): its entry versions go to price_catalog_history."""
    stop = stop or asyncio.Event()
    stats = LoaderStats()
    warehouse = await asyncio.to_thread(open_warehouse, settings, True, wait_seconds=OWNER_WAIT_SECONDS)
    # The in-process filter of the dedupe keys (warehouse/stored_ids.py) is built from a scan of them now, before
    # the first window, which would otherwise pay it (~1 CPU us per stored id, once per start).
    await asyncio.to_thread(warehouse.load_stored_ids)
    if price_book is not None:
        try:
            written = await asyncio.to_thread(warehouse.record_price_catalog, price_catalog_rows(price_book))
            log.info("price catalog %s: %d new entry versions recorded", price_book.catalog_version, written)
        except WarehouseError as exc:  # history is for explanations: never stop loading over it
            log.error("could not record the price catalog: %s", exc)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=GROUP_ID,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        **settings.group_timeouts,
        **settings.fetch_wait,
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    # The shared loop (tokenmeter/commitloop.py has the protocol): a window of up to `load_batch_rows` rows or
    # `load_flush_seconds`, stored and its dead letters acknowledged before its offsets are committed.
    commit_loop = CommitLoop(consumer, topics=[topics.PRICED, *RECORD_TOPICS], producer=producer, name="loader",
                             max_records=5000, fetch_timeout_ms=500, window_s=settings.load_flush_seconds,
                             max_size=settings.load_batch_rows, start_batch=_Batch, accept=_accept,
                             stage="load", on_refused=lambda letter: _count_refused(stats))
    progress = {"started": time.monotonic(), "rows": 0, "prune_at": time.monotonic() + PRUNE_EVERY_SECONDS}

    async def process(window: Batch) -> Offsets | None:
        if len(window):
            if not await _flush(window.state, warehouse, window, stats, stop):
                return {}  # stopped before the rows were stored: nothing committed
            progress["rows"] += len(window.state.sources)
        if time.monotonic() >= progress["prune_at"]:  # between windows: no insert of this loader in flight
            progress["prune_at"] = time.monotonic() + PRUNE_EVERY_SECONDS
            await _prune_keys(warehouse)
        elapsed = time.monotonic() - progress["started"]
        if elapsed >= PROGRESS_EVERY_SECONDS:
            stats.lag, stats.commit_failures = await _lag(consumer), commit_loop.stats.commit_failures
            log.info("loader: %.0f rows/s, %d inserted, %d duplicates skipped, %d dead letters, lag %d, insert %s",
                     progress["rows"] / elapsed, stats.rows_inserted, stats.duplicates_skipped, stats.dead_letters,
                     stats.lag, stats.insert_latency())
            progress.update(started=time.monotonic(), rows=0)
        return None

    try:
        await producer.start()
        async with commit_loop:
            log.info("loader consuming %s and %d record topics as group %s into %s", topics.PRICED,
                     len(RECORD_TOPICS), GROUP_ID, warehouse.kind)
            if ready is not None:
                ready()
            await commit_loop.run(process, stop)
    except KafkaError as exc:
        log.error("loader stopped by a Kafka error: %s", exc)
        raise
    finally:
        stats.commit_failures = commit_loop.stats.commit_failures
        await _stop_quietly(producer.stop(), "producer")
        await _stop_quietly(consumer.stop(), "consumer")  # never started when the producer's start failed
        await asyncio.to_thread(warehouse.close)
        log.info("loader stopped: %d rows inserted, %d duplicates skipped, %d dead letters",
                 stats.rows_inserted, stats.duplicates_skipped, stats.dead_letters)
    return stats


async def _prune_keys(warehouse: Warehouse) -> None:
    """The dedupe and call keys past the raw retention, deleted by the running loader (they were only at its start:
    a loader running for weeks kept every key, and its filter of them, trust35). Logged with what it cost."""
    started, cpu = time.perf_counter(), time.process_time()
    try:
        deleted = await asyncio.to_thread(warehouse.prune_expired_keys)
    except WarehouseError as exc:  # tried again at the next interval; loading goes on meanwhile
        log.error("pruning the keys past the raw retention failed: %s", exc)
        return
    log.info("keys past the raw retention (%s days) pruned: %s in %.2f s (%.2f CPU-s of this process)",
             warehouse.retention_days, ", ".join(f"{n} {t}" for t, n in deleted.items()) or "none",
             time.perf_counter() - started, time.process_time() - cpu)


def _count_refused(stats: LoaderStats) -> None:
    """A refused compressed batch's dead letter, sent by the commit loop (protocol 9): one dead letter more."""
    stats.dead_letters += 1
    stats.refused_batches += 1


async def _stop_quietly(awaitable: Any, what: str) -> None:
    try:
        await awaitable
    except Exception as exc:  # shutting down: report, do not mask the original error
        log.warning("error stopping the loader's %s: %s", what, exc)


def main() -> None:
    """`python -m warehouse.loader`: run the loader with the environment's settings until SIGTERM."""
    from tokenmeter.cli_support import configure_logging, run_service
    from tokenmeter.settings import load_settings

    settings = load_settings()
    configure_logging(settings)
    run_service(lambda stop: run_loader(settings, stop=stop))


if __name__ == "__main__":
    main()
