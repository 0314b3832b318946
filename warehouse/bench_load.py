"""Loader benchmark (issue 14): the per-row path and the columnar path side by side in one process, and where
chDB's time goes in one insert.

`python -m warehouse.bench_load [--rows 100000] [--batch 20000] [--steps] [--views]` prints JSON:
- `per_row` / `columnar`: rows/s wall and per CPU second (chDB runs in-process, so CPU time counts it) of
  `event_to_row` per event + `Warehouse.insert_rows` (the loader before issue 14) and of
  `Warehouse.insert_priced` (`arrow_rows.build_batch` + `Warehouse.insert_table`), alternating, best of 2;
- `--steps`: CPU ms per batch of the columnar build and of each chDB statement of the insert;
- `--views`: CPU ms of the `INSERT ... SELECT` into `priced_events` with every materialized view, with none,
  and with each alone (the cap the views put on the loader);
- `--insert-settings`: CPU and wall µs per row of the raw insert (`insert_arrow("priced_events", ...)`, views
  included) with chDB's defaults, with `optimize_on_insert=0`, and with that plus `max_threads=1` (the loader's
  since loader6), alternating, median of `--repeats`, with background merges running and stopped;
- `--decoders`: CPU µs per row of three JSON decoders over the same worker-framed messages: orjson (the loader's,
  to dicts), chDB's `JSONEachRow` into typed columns and `pyarrow.json` with the explicit schema (what issue 14
  item 1 weighed; see docs/rounds/benchmarks.md for why neither replaces orjson + `arrow_rows` exactly).
- `--loader-paths`: the loader's own path from worker-framed message bytes, the dict path (`parse_record`: orjson
  per message, then `arrow_rows`) and the polars path (`_accept`: `loader_frames`), alternating, best of
  `--repeats` rounds by CPU; CPU µs per row of decode (on arrival), build and store, rows/s wall and per CPU-s;
  the two paths' tables are checked equal first.
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
from warehouse.bench import _load_events, priced_windows
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
    """CPU ms of INSERT ... SELECT of `batch` staged rows into priced_events (with the loader's insert settings): all
    views, none, each alone."""
    from warehouse.backends import _settings_clause
    from warehouse.store import _COLUMN_LIST, PRICED_INSERT_SETTINGS

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
            f"INSERT INTO priced_events ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {staging}"
            + _settings_clause(PRICED_INSERT_SETTINGS)))  # as the loader inserts
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


INSERT_VARIANTS = {"chDB defaults": {}, "optimize_on_insert=0": {"optimize_on_insert": 0},
                   "optimize_on_insert=0, max_threads=1": {"optimize_on_insert": 0, "max_threads": 1}}


def insert_settings(wh: Any, batch: int, end: datetime, repeats: int = 8) -> dict[str, Any]:
    """µs per row (CPU, wall) of the raw insert into priced_events under each of INSERT_VARIANTS, alternating the
    order every round, median of `repeats`; with merges running (as the loader runs) and stopped (the insert alone)."""
    import statistics

    backend = wh.backend
    counter = iter(range(1_000_000))

    def table() -> Any:
        return build_batch(_events(batch, f"settings{next(counter)}", end))[0]

    result: dict[str, Any] = {}
    for merges in ("running", "stopped"):
        if merges == "stopped":
            backend.command("SYSTEM STOP MERGES")
        spent: dict[str, list[tuple[float, float]]] = {name: [] for name in INSERT_VARIANTS}
        names = list(INSERT_VARIANTS)
        for round_ in range(repeats):
            for name in names if round_ % 2 == 0 else reversed(names):
                prepared = table()
                spent[name].append(_clock(lambda: backend.insert_arrow("priced_events", prepared,
                                                                       settings=INSERT_VARIANTS[name])))
        result[f"merges {merges}"] = {
            name: {"cpu_us_per_row": round(statistics.median(c for c, _ in runs) / batch * 1e6, 2),
                   "wall_us_per_row": round(statistics.median(w for _, w in runs) / batch * 1e6, 2)}
            for name, runs in spent.items()}
    backend.command("SYSTEM START MERGES")
    return result


def decoders(rows: int, end: datetime, repeats: int = 3) -> dict[str, float]:
    """CPU µs per row (best of `repeats`) of decoding `rows` worker-framed load events with orjson (to dicts),
    chDB's JSONEachRow (typed columns in a Memory table of a private session) and pyarrow.json (explicit schema)."""
    import gc
    import io

    import pyarrow as pa
    import pyarrow.json as pa_json
    from chdb import session

    from tokenmeter.microbatch import frame

    messages = list(frame(orjson.dumps(e) for e in _events(rows, "decode", end)))
    # The framed arrays as newline-delimited objects (what both column decoders read): `},{"` only occurs between
    # the array's objects in compact JSON (inside a string the quote would be escaped).
    lines = b"\n".join(m[1:-1].replace(b'},{"', b'}\n{"') for m in messages)
    text = pa.string()
    schema = pa.schema([
        *((name, text) for name in ("event_id", "ts", "source", "provider", "model")),
        ("attribution", pa.struct([("org", text), ("team", text), ("user", text)])),
        ("usage", pa.struct([(k, pa.int64()) for k in ("input_tokens", "cached_input_tokens", "output_tokens")])),
        ("latency_ms", pa.float64()), ("tokens_source", text), ("cost_usd", text), ("pricing_status", text),
        ("price", pa.struct([("entry", text), ("effective_from", text), ("catalog_version", text)])),
        ("priced_at", text)])  # tags and cost_breakdown left out: pyarrow.json has no map type
    columns = ("event_id String, ts String, source String, provider String, model String, attribution Tuple(org"
               " String, team String, user String, tags Map(String, String)), usage Tuple(input_tokens UInt64,"
               " cached_input_tokens UInt64, output_tokens UInt64), latency_ms Nullable(Float64), tokens_source"
               " String, cost_usd String, cost_breakdown Map(String, String), pricing_status String, price"
               " Tuple(entry String, effective_from String, catalog_version String), priced_at String")
    chdb = session.Session()
    chdb.query(f"CREATE TABLE decoded ({columns}) ENGINE = Memory")

    def chdb_decode() -> None:
        chdb.query("TRUNCATE TABLE decoded")
        with chdb.send_insert("INSERT INTO decoded SETTINGS input_format_parallel_parsing = 0",
                              "JSONEachRow") as inserter:
            inserter.append(lines)
            inserter.finish()

    runs = {
        "orjson (dicts)": lambda: [orjson.loads(m) for m in messages],
        "chdb JSONEachRow (typed columns)": chdb_decode,
        "pyarrow.json (explicit schema, 1 thread)": lambda: pa_json.read_json(
            io.BytesIO(lines), read_options=pa_json.ReadOptions(use_threads=False, block_size=1 << 26),
            parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")),
    }
    result = {}
    enabled = gc.isenabled()
    gc.disable()  # as the loader decodes
    try:
        for name, run in runs.items():
            result[name] = round(min(_clock(run)[0] for _ in range(repeats)) / rows * 1e6, 2)
    finally:
        if enabled:
            gc.enable()
        chdb.close()
    return result


def loader_paths(wh: Any, rows: int, batch: int, end: datetime, repeats: int = 3) -> dict[str, Any]:
    """The loader's path from message bytes, dict path vs polars path (issue 14, loader7), alternating."""
    import gc

    from tokenmeter.commitloop import Batch
    from warehouse.loader import _accept, _Batch, _store_priced, build_priced, parse_record

    def windows(prefix: str) -> list[list[Any]]:
        return priced_windows(_events(rows, prefix, end), batch)

    def dict_decode(records: list[Any], state: Any) -> None:  # the loader's _accept before loader7, GC paused
        enabled = gc.isenabled()
        gc.disable()
        try:
            for record in records:
                parse_record(record, state)
        finally:
            if enabled:
                gc.enable()

    decoders = {"dict path": dict_decode, "polars path": lambda records, state: _accept(Batch(state=state), records)}
    first = windows("check")[0]
    tables = {}
    for name, decode in decoders.items():
        state = _Batch()
        decode(first, state)
        build_priced(state)
        tables[name] = state.table
    if not tables["dict path"].equals(tables["polars path"]):
        raise RuntimeError("the dict path and the polars path built different tables")
    best: dict[str, dict[str, Any]] = {}
    for round_ in range(repeats):
        names = list(decoders) if round_ % 2 == 0 else list(reversed(decoders))
        for name in names:
            prepared = windows(f"{name[:4]}{round_}")
            steps = {"decode": 0.0, "build": 0.0, "store": 0.0}
            stored = 0
            wall, cpu = time.perf_counter(), time.process_time()
            for records in prepared:
                state = _Batch()
                for step, run in (("decode", lambda: decoders[name](records, state)),
                                  ("build", lambda: build_priced(state)),
                                  ("store", lambda: _store_priced(wh, state))):
                    mark = time.process_time()
                    result = run()
                    steps[step] += time.process_time() - mark
                    if step == "store":
                        stored += result
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if stored != rows:
                raise RuntimeError(f"{name}: stored {stored} of {rows}")
            figures = {"rows_per_s": round(rows / wall), "rows_per_cpu_s": round(rows / cpu),
                       "cpu_us_per_row": {k: round(v / rows * 1e6, 2) for k, v in steps.items()}}
            if name not in best or figures["rows_per_cpu_s"] > best[name]["rows_per_cpu_s"]:
                best[name] = figures
    best["ratio_cpu"] = round(best["polars path"]["rows_per_cpu_s"] / best["dict path"]["rows_per_cpu_s"], 2)
    best["ratio_wall"] = round(best["polars path"]["rows_per_s"] / best["dict path"]["rows_per_s"], 2)
    return best


def main() -> None:
    from tokenmeter.settings import Settings
    from warehouse.store import open_warehouse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--steps", action="store_true")
    parser.add_argument("--views", action="store_true")
    parser.add_argument("--insert-settings", action="store_true")
    parser.add_argument("--decoders", action="store_true")
    parser.add_argument("--loader-paths", action="store_true")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--no-paths", action="store_true", help="skip the per-row vs columnar comparison")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="tokenmeter-bench-load-")
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    wh = open_warehouse(Settings(data_dir=base), writer=True, serve=False)
    try:
        result: dict[str, Any] = {"rows": args.rows, "batch": args.batch}
        if not args.no_paths:
            result["paths"] = compare_paths(wh, args.rows, args.batch, end)
        if args.steps:
            result["steps_cpu_ms_per_batch"] = insert_steps(wh, args.batch, end)
        if args.views:
            result["views_insert_select_cpu_ms"] = view_costs(wh, args.batch, end)
        if args.loader_paths:
            result["loader_paths"] = loader_paths(wh, args.rows, args.batch, end, args.repeats)
        if args.insert_settings:
            result["insert_settings"] = insert_settings(wh, args.batch, end, args.repeats)
    finally:
        wh.close()
        shutil.rmtree(base, ignore_errors=True)
    if args.decoders:  # after the warehouse is closed: a second chDB session of this process
        result["decoders_cpu_us_per_row"] = decoders(args.batch, end)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
