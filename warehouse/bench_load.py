"""Loader benchmark (issue 14): the per-row path and the columnar path side by side in one process, and where
chDB's time goes in one insert.

`python -m warehouse.bench_load [--rows 100000] [--batch 20000] [--steps] [--views]` prints JSON:
- `per_row` / `columnar`: rows/s wall and per CPU second (chDB runs in-process, so CPU time counts it) of
  `event_to_row` per event + `Warehouse.insert_rows` (the loader before issue 14) and of
  `Warehouse.insert_priced` (`arrow_rows.build_batch` + `Warehouse.insert_table`), alternating, best of 2;
- `--steps`: CPU ms per batch of the columnar build and of each chDB statement of the insert;
- `--views`: CPU ms of the `INSERT ... SELECT` into `priced_events` with every materialized view, with none,
  and with each alone (the cap the views put on the loader).
Events are `warehouse.bench`'s load events (one regular worker shape), decoded from JSON as the loader gets them.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import orjson

from warehouse.arrow_rows import build_batch
from warehouse.bench import _load_events
from warehouse.schema import event_to_row


def _events(count: int, prefix: str, end: datetime) -> list[dict[str, Any]]:
    events = _load_events(count, end - timedelta(hours=3))
    return orjson.loads(orjson.dumps([dict(e, event_id=f"{prefix}-{e['event_id']}") for e in events]))


def _clock(run: Callable[[], Any]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    run()
    return time.process_time() - cpu, time.perf_counter() - wall


def compare_paths(wh: Any, rows: int, batch: int, end: datetime) -> dict[str, Any]:
    paths = {"per_row": lambda part: wh.insert_rows([event_to_row(item) for item in part]),
             "columnar": wh.insert_priced}
    best: dict[str, dict[str, float]] = {}
    for round_ in range(2):
        for name, insert in paths.items():
            events = _events(rows, f"{name}{round_}", end)
            stored = []
            cpu, wall = _clock(lambda: stored.extend(insert(events[i:i + batch]) for i in range(0, rows, batch)))
            if sum(stored) != rows:
                raise RuntimeError(f"{name}: stored {sum(stored)} of {rows}")
            figures = {"rows_per_s": round(rows / wall), "rows_per_cpu_s": round(rows / cpu)}
            if name not in best or figures["rows_per_cpu_s"] > best[name]["rows_per_cpu_s"]:
                best[name] = figures
    best["ratio_wall"] = round(best["columnar"]["rows_per_s"] / best["per_row"]["rows_per_s"], 2)
    best["ratio_cpu"] = round(best["columnar"]["rows_per_cpu_s"] / best["per_row"]["rows_per_cpu_s"], 2)
    return best


def insert_steps(wh: Any, batch: int, end: datetime, rounds: int = 3) -> dict[str, float]:
    """CPU ms per batch of the columnar build and of each chDB call of `insert_table`."""
    spent: dict[str, float] = collections.defaultdict(float)
    backend = wh.backend
    originals = {name: getattr(backend, name) for name in ("command", "query_arrow", "insert_arrow")}

    def timed(name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def run(first: Any, *args: Any, **kwargs: Any) -> Any:
            key = f"{name}: {' '.join(first.split())[:60]}" if name != "insert_arrow" else f"insert_arrow: {first}"
            cpu = time.process_time()
            try:
                return call(first, *args, **kwargs)
            finally:
                spent[key] += time.process_time() - cpu
        return run

    for name, call in originals.items():
        setattr(backend, name, timed(name, call))
    try:
        for round_ in range(rounds):
            events = _events(batch, f"steps{round_}", end)
            cpu = time.process_time()
            table, _, _ = build_batch(events)
            spent["build_batch (arrow_rows)"] += time.process_time() - cpu
            cpu = time.process_time()
            wh.insert_table(table)
            spent["insert_table (all chDB calls)"] += time.process_time() - cpu
    finally:
        for name in originals:
            delattr(backend, name)  # the instance attributes shadowed the class's methods
    return {key: round(value / rounds * 1000, 1) for key, value in sorted(spent.items(), key=lambda kv: -kv[1])}


def view_costs(wh: Any, batch: int, end: datetime) -> dict[str, float]:
    """CPU ms of INSERT ... SELECT of `batch` staged rows into priced_events: all views, none, each alone."""
    from warehouse.store import _COLUMN_LIST

    backend = wh.backend
    views = [row["name"] for row in backend.query_arrow(
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine = 'MaterializedView'"
        " AND create_table_query LIKE '%FROM %priced_events%'").to_pylist()]
    wh._ensure_staging()
    staging = wh._staging
    counter = iter(range(1_000_000))

    def insert_cpu() -> float:
        table, _, _ = build_batch(_events(batch, f"views{next(counter)}", end))
        backend.command(f"TRUNCATE TABLE {staging}")
        backend.insert_arrow(staging, table)
        cpu, _ = _clock(lambda: backend.command(
            f"INSERT INTO priced_events ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {staging}"))
        return round(cpu * 1000, 1)

    result = {f"all {len(views)} views": min(insert_cpu(), insert_cpu())}
    for view in views:
        backend.command(f"DETACH TABLE {view}")
    try:
        result["no views"] = min(insert_cpu(), insert_cpu())
        for view in views:
            backend.command(f"ATTACH TABLE {view}")
            result[f"only {view}"] = min(insert_cpu(), insert_cpu())
            backend.command(f"DETACH TABLE {view}")
    finally:
        for view in views:
            try:
                backend.command(f"ATTACH TABLE {view}")
            except Exception:  # already attached
                pass
    backend.command(f"TRUNCATE TABLE {staging}")
    return result


def main() -> None:
    from tokenmeter.settings import Settings
    from warehouse.store import open_warehouse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--steps", action="store_true")
    parser.add_argument("--views", action="store_true")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="tokenmeter-bench-load-")
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    wh = open_warehouse(Settings(data_dir=base), writer=True, serve=False)
    try:
        result: dict[str, Any] = {"rows": args.rows, "batch": args.batch,
                                  "paths": compare_paths(wh, args.rows, args.batch, end)}
        if args.steps:
            result["steps_cpu_ms_per_batch"] = insert_steps(wh, args.batch, end)
        if args.views:
            result["views_insert_select_cpu_ms"] = view_costs(wh, args.batch, end)
    finally:
        wh.close()
        shutil.rmtree(base, ignore_errors=True)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
