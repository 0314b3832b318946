"""Re-pricing stored history on columns: read the stored rows as Arrow in large chunks, price them with the
caller's columnar pricer (`RepriceColumnsFn`, e.g. `streams.columnar.reprice.price_stored`), diff old and new
pricing as columns, and hand the changed rows to the owner as one Arrow table (no dict, no JSON per row).

Same plan, same report, same apply as `warehouse.reprice.plan_and_apply` (whose module doc describes the apply
and why a crash is safe); rows the pricer leaves (`columnar` false) take that module's per-row path
(`reprice_fn`), so its errors are unchanged too. The warehouse still never imports the pricing stage.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Callable, Iterator

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from warehouse.reprice import (PRICING_COLUMNS, ModelDiff, RepriceFn, RepriceReport, _aware, _COLUMN_LIST, _repriced,
                               arrow_rows)
from warehouse.schema import ARROW_SCHEMA, COLUMNS, rows_to_arrow

# Stored rows (every `priced_events` column) -> per row: `columnar` (false: leave the row to `reprice_fn`), the
# PRICING_COLUMNS, catalog_version and priced_at, with the warehouse's types (REPLACED_SCHEMA).
RepriceColumnsFn = Callable[[pa.Table], pa.Table]
REPLACED = (*PRICING_COLUMNS, "catalog_version", "priced_at")  # what a re-price writes into the new copy
REPLACED_SCHEMA = pa.schema([ARROW_SCHEMA.field(name) for name in REPLACED])
CHUNK_ROWS = 500_000  # stored rows read and priced at once (whole UTC days, unless one day holds more)


def _map_as_list(column: pa.ChunkedArray) -> pa.Array:
    """A Map column as a list of {key, value} structs, which polars reads as a list (it has no list operations on
    maps)."""
    maps = column.combine_chunks()
    entries = pa.StructArray.from_arrays([maps.keys, maps.items], ["key", "value"])
    return pa.ListArray.from_arrays(maps.offsets, entries)


def _sorted_lines(lines: pl.Series, rows: pl.Series) -> pl.DataFrame:
    """The breakdown lines of `rows` (indices into `lines`), one (row, key, value) per line, sorted."""
    frame = pl.DataFrame({"row": rows, "line": lines.gather(rows)}).explode("line").unnest("line")
    return frame.sort("row", "key", "value")


def breakdowns_differ(old: pa.ChunkedArray, new: pa.ChunkedArray) -> pl.Series:
    """Per row: the two breakdown maps differ as dicts (`warehouse.reprice._pricing_of`). Equal lists are equal
    dicts; only unequal lists of the same length (maybe the same lines in another order) are compared sorted.

    Those (nearly every changed row: a price change keeps the lines and changes their amounts) are compared as
    columns: both sides' lines exploded to (row, key, value) and sorted, so with equal lengths per row the i-th
    lines of the two sides belong to the same row, and a row differs iff one of its line pairs does. The text
    form this replaced (each row's lines joined as sorted strings) cost ~14 µs per row and side, so the diff grew
    with the changed rows (28 µs each, against ~0.6 per unchanged row)."""
    old_lines, new_lines = pl.Series(_map_as_list(old)), pl.Series(_map_as_list(new))
    differ = old_lines != new_lines
    lengths = old_lines.list.len()
    reordered = differ & (lengths == new_lines.list.len()) & (lengths > 1)
    if reordered.any():
        rows = reordered.arg_true()
        old_sorted, new_sorted = _sorted_lines(old_lines, rows), _sorted_lines(new_lines, rows)
        pair_differs = (old_sorted.get_column("key").ne_missing(new_sorted.get_column("key"))
                        | old_sorted.get_column("value").ne_missing(new_sorted.get_column("value")))
        differing = old_sorted.get_column("row").filter(pair_differs).unique()
        differ = differ.scatter(rows, rows.is_in(differing))
    return differ


def changed_mask(old: pa.Table, new: pa.Table) -> pl.Series:
    """Rows whose PRICING_COLUMNS differ (catalog_version left out, as in `warehouse.reprice._pricing_of`)."""
    flat = [name for name in PRICING_COLUMNS if name != "cost_breakdown"]
    frame = pl.from_arrow(pa.table({**{f"old_{name}": old.column(name) for name in flat},
                                    **{f"new_{name}": new.column(name) for name in flat}}))
    assert isinstance(frame, pl.DataFrame)
    differs = frame.select(pl.any_horizontal([pl.col(f"old_{name}") != pl.col(f"new_{name}") for name in flat]))
    return (differs.to_series() | breakdowns_differ(old.column("cost_breakdown"), new.column("cost_breakdown"))
            ).alias("changed")


def _chunks(warehouse: Any, where: str, params: dict[str, Any], since: datetime,
            until: datetime | None) -> Iterator[tuple[datetime, datetime]]:
    """[start, end) windows of whole UTC days (cut at since/until) holding about CHUNK_ROWS stored rows each."""
    days = warehouse.backend.query_arrow(
        f"SELECT toDateTime64(toStartOfDay(ts), 3, 'UTC') AS day, count() AS n FROM priced_events WHERE {where}"
        " GROUP BY day ORDER BY day",
        params).to_pylist()
    start, rows = None, 0
    for item in days:
        day = _aware(item["day"])
        if start is None:
            start = max(day, since)
        elif rows + item["n"] > CHUNK_ROWS:
            yield start, day
            start, rows = day, 0
        rows += item["n"]
    if start is not None:
        end = _aware(days[-1]["day"]) + timedelta(days=1)
        yield start, (min(end, until) if until else end)


def _per_row(rows: pa.Table, reprice_fn: RepriceFn) -> pa.Table:
    """REPLACED columns of rows the columnar pricer left, priced one by one (`warehouse.reprice._repriced`)."""
    new_rows = [_repriced(row, reprice_fn)[1] for row in arrow_rows(rows)]
    return rows_to_arrow([{**row, **new} for row, new in zip(arrow_rows(rows), new_rows)]).select(list(REPLACED))


def _add_to_report(report: RepriceReport, stored: pa.Table, new: pa.Table, changed: pl.Series) -> None:
    frame = pl.from_arrow(pa.table({
        "provider": stored.column("provider"), "model": stored.column("model"),
        "old_cost": stored.column("cost_usd"), "new_cost": new.column("cost_usd"),
        "old_unpriced": stored.column("pricing_status"), "new_unpriced": new.column("pricing_status"),
    }))
    assert isinstance(frame, pl.DataFrame)
    groups = frame.with_columns(changed).group_by("provider", "model").agg(
        pl.len().alias("events"), pl.col("changed").sum().alias("changed"),
        pl.col("old_cost").sum(), pl.col("new_cost").sum(),
        (pl.col("old_unpriced") == "unpriced").sum().alias("old_unpriced"),
        (pl.col("new_unpriced") == "unpriced").sum().alias("new_unpriced"),
    )
    for provider, model, events, changes, old_cost, new_cost, old_unpriced, new_unpriced in groups.iter_rows():
        diff = report.models.setdefault((provider, model), ModelDiff(provider, model))
        diff.events += events
        diff.changed += changes
        diff.old_cost += Decimal(old_cost)
        diff.new_cost += Decimal(new_cost)
        report.events += events
        report.changed += changes
        report.old_total += Decimal(old_cost)
        report.new_total += Decimal(new_cost)
        report.old_unpriced += old_unpriced
        report.new_unpriced += new_unpriced


def _new_copies(stored: pa.Table, new: pa.Table) -> pa.Table:
    """The stored rows with their REPLACED columns taken from `new`, as ARROW_SCHEMA."""
    columns = [new.column(name) if name in REPLACED else stored.column(name) for name in COLUMNS]
    return pa.Table.from_arrays(columns, names=list(COLUMNS)).cast(ARROW_SCHEMA)


def plan_and_apply_columns(warehouse: Any, since: datetime, until: datetime | None, reprice_fn: RepriceFn,
                           reprice_columns: RepriceColumnsFn, dry_run: bool,
                           apply_table: Callable[[pa.Table], int] | None,
                           apply_keys: Callable[[list[dict[str, Any]]], int] | None, apply_batch: int,
                           finish: Callable[[], int] | None = None) -> RepriceReport:
    """`warehouse.reprice.plan_and_apply` on columns: the same report; unless dry_run, the changed rows go to
    `apply_table` (the owner: new copies as one Arrow table) or `apply_keys` (a reader: {event_id, ts} for the
    owner to price again), in calls of at most `apply_batch` rows gathered across chunks. With `finish` (the owner's
    `Warehouse.finish_repriced`), `apply_table` only stages its rows and `finish()` applies them all at the end; its
    count is then `applied`."""
    report = RepriceReport(since=since, until=until, dry_run=dry_run)
    where, params = "ts >= {since:DateTime64(3, 'UTC')}", {"since": since}
    if until is not None:
        where += " AND ts < {until:DateTime64(3, 'UTC')}"
        params["until"] = until
    pending: list[pa.Table] = []
    pending_rows = 0

    def flush() -> None:
        nonlocal pending, pending_rows
        if pending and not dry_run:
            changes = pa.concat_tables(pending)
            if apply_table is not None:
                report.applied += apply_table(changes)
            elif apply_keys is not None:
                keys = changes.select(["event_id", "ts"]).to_pylist()
                for i in range(0, len(keys), apply_batch):
                    report.applied += apply_keys([{"event_id": k["event_id"], "ts": _aware(k["ts"]).isoformat()}
                                                  for k in keys[i:i + apply_batch]])
        pending, pending_rows = [], 0

    for start, end in _chunks(warehouse, where, params, since, until):
        stored = warehouse.backend.query_arrow(
            f"SELECT {_COLUMN_LIST} FROM priced_events"
            " WHERE ts >= {start:DateTime64(3, 'UTC')} AND ts < {end:DateTime64(3, 'UTC')}",
            {"start": start, "end": end})
        if stored.num_rows == 0:
            continue
        priced = reprice_columns(stored)
        columnar = priced.column("columnar")
        new = priced.select(list(REPLACED)).cast(REPLACED_SCHEMA)
        if columnar.null_count or not pc.all(columnar).as_py():
            left = pc.invert(pc.fill_null(columnar, False))
            stored = pa.concat_tables([stored.filter(columnar), stored.filter(left)])
            new = pa.concat_tables([new.filter(columnar), _per_row(stored.slice(new.filter(columnar).num_rows),
                                                                   reprice_fn).cast(REPLACED_SCHEMA)])
        changed = changed_mask(stored, new)
        _add_to_report(report, stored, new, changed)
        if not dry_run and changed.any():
            if changed.all():  # a catalog correction changes every row: no copy of every column through a filter
                copies = _new_copies(stored, new)
            else:
                mask = changed.to_arrow()
                copies = _new_copies(stored.filter(mask), new.filter(mask))
            pending.append(copies)
            pending_rows += copies.num_rows
            if pending_rows >= apply_batch:
                flush()
    flush()
    if finish is not None and not dry_run:
        report.applied = finish()
    return report


__all__ = ["CHUNK_ROWS", "REPLACED", "RepriceColumnsFn", "changed_mask", "plan_and_apply_columns"]
