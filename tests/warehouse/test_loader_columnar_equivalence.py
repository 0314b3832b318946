"""The loader's columnar path (arrow_rows.build_batch -> Warehouse.insert_table) stores exactly what the per-row
path (event_to_row per event -> Warehouse.insert_rows) stores: the same raw rows, the same rollup rows of every
materialized view, the same dedupe tables and the same dead letters, for one hostile + valid batch (worker output
of every usage kind, tier and attribution shape; mutated fields; duplicated event_ids; correlated events)."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest

from tests.warehouse.test_arrow_rows import _steady, hostile_batch, priced  # noqa: F401 (fixture)
from tokenmeter import topics
from warehouse.loader import _Batch, _store, _store_priced, build_priced
from warehouse.schema import RowError, event_to_row

pytestmark = pytest.mark.slow(seconds=17)  # rough seconds: longest files first (tests/suite_order.py)

TABLES = ("priced_events", "priced_event_ids", "spend_hourly", "spend_hourly_tags", "model_hourly", "spend_daily",
          "spend_daily_tags", "call_keys", "cross_source_duplicates", "rollup_rebuild_pending",
          "rollup_insert_pending")


def _record(offset: int) -> SimpleNamespace:
    return SimpleNamespace(topic=topics.PRICED, partition=0, offset=offset, value=b"")


def _old_path(wh, items) -> list[dict]:
    """The loader before issue 14's columnar build: a row per event, then `_store` with `insert_rows`."""
    batch, entries = _Batch(), []
    for offset, item in enumerate(items):
        try:
            entries.append((event_to_row(item), item, _record(offset)))
        except RowError as exc:
            batch.dead.append({"reason": str(exc), "offset": offset})
    _store(wh, topics.PRICED, entries, batch)
    return batch.dead


def _new_path(wh, items) -> list[dict]:
    batch = _Batch(items=[(item, _record(offset)) for offset, item in enumerate(items)])
    build_priced(batch)
    _store_priced(wh, batch)
    return batch.dead


def _contents(wh, tables: tuple[str, ...] = TABLES) -> dict[str, list]:
    """Every table the loader writes (or those named), merged and sorted, without load-time columns. Merged as
    OPTIMIZE ... FINAL merges (rows of one sorting key folded within their partition), but by SELECT ... FINAL,
    which writes no merged parts: the worker events span ~96 months, so OPTIMIZE rewrote ~96 parts per table per
    call, the largest cost of the loader equivalence files (suite5: the two gave equal contents in all their tests)."""
    engines = {row["name"]: row["engine"] for row in wh.backend.query_arrow(
        "SELECT name, engine FROM system.tables WHERE database = currentDatabase()").to_pylist()}
    contents = {}
    for table in tables:
        columns = [row["name"] for row in wh.backend.query_arrow(
            "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {t:String}"
            " AND default_expression NOT LIKE '%now%' ORDER BY position", {"t": table}).to_pylist()]
        merging = engines[table].endswith("MergeTree") and engines[table] != "MergeTree"  # Replacing, Summing, ...
        final = " FINAL SETTINGS do_not_merge_across_partitions_select_final = 1" if merging else ""
        listed = ", ".join(f"`{c}`" for c in columns)
        rows = wh.backend.query_arrow(f"SELECT {listed} FROM {table}{final}").to_pylist()
        contents[table] = sorted(orjson.dumps(row, default=str, option=orjson.OPT_SORT_KEYS) for row in rows)
    return contents


def _empty(wh) -> None:
    for table in TABLES:
        wh.backend.command(f"TRUNCATE TABLE {table}")


@pytest.mark.parametrize("correlated", [False, True], ids=["uncorrelated", "with-correlated"])
def test_columnar_loader_stores_what_the_per_row_loader_stores(wh, priced, correlated):  # noqa: F811
    # ~1,000 worker events moved into March 2026 (few partitions: each costs a part per table) + ~1,000 variants
    items = hostile_batch([{**event, "ts": "2026-03" + event["ts"][7:]} for event in priced[::4]])
    if not correlated:
        items = [item for item in items if not (isinstance(item, dict) and item.get("correlation") is not None)]
    items += items[:50]  # redelivered copies in the same batch: first copy wins
    _empty(wh)
    old_dead = _old_path(wh, items)
    old = _contents(wh)
    _empty(wh)
    new_dead = _new_path(wh, items)
    new = _contents(wh)
    assert len(old["priced_events"]) > 500 and len(old["spend_hourly"]) > 100
    for table in TABLES:
        assert new[table] == old[table], table
    assert (sorted((d["offset"], _steady(d["reason"])) for d in new_dead)
            == sorted((d["offset"], _steady(d["reason"])) for d in old_dead))
    assert len(old_dead) > 200
