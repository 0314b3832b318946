"""Warehouse benchmark: the dashboard's queries on N generated events in chDB (p50/p95 latency) and the
loader's insert throughput (PricedEvent dicts -> `Warehouse.insert_priced`, validation and dedupe included).

Events are generated inside ClickHouse (INSERT ... SELECT FROM numbers()) in chunks, so the materialized views
fill the rollups exactly as the loader's inserts do. Cardinalities follow a mid-size company: 2 orgs, 10 teams,
30 projects, 300 users each with one API key, 12 features, 11 models of 5 providers, 3 tag values (+ a
sparse tag), 2% unpriced, 1% errors, 30 days ending at the current hour. The lead wires it into
`tokenmeter bench` (`--json` keys `query_p50_ms`, `query_p95_ms`, `load_rows_per_s`). `load_path_*` (issue 14,
loader5): the loader's own path from message bytes (decode included, which `load_rows_per_s` leaves out: it starts
from decoded dicts), with CPU µs per row of decode, build and store.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

CHUNK_ROWS = 1_000_000
MODELS = ("'openai','gpt-4o'", "'openai','gpt-4o-mini'", "'openai','o3'", "'openai','text-embedding-3-small'",
          "'anthropic','claude-sonnet-4'", "'anthropic','claude-3-5-haiku'", "'google','gemini-2.5-pro'",
          "'google','gemini-2.5-flash'", "'mistral','mistral-large-latest'", "'mistral','codestral-latest'",
          "'acme','acme-internal-llm-v2'")


def _generate_sql(first: int, count: int, total: int, end: datetime, days: int) -> str:
    """Rows first..first+count-1 of `total` in a synthetic month, in time order as a loader would insert them;
    every value derived from the row number."""
    pairs = ", ".join(f"({m})" for m in MODELS)
    seconds = days * 86400
    end_text = end.strftime("%Y-%m-%d %H:%M:%S")
    return f"""
INSERT INTO priced_events (event_id, ts, source, provider, model, operation, status, org, team, project, user,
    api_key, feature, route, tags, input_tokens, cached_input_tokens, cache_write_tokens, cache_write_1h_tokens,
    output_tokens, reasoning_tokens, latency_ms, ttft_ms, batch, service_tier, tokens_source, cost_usd,
    cost_breakdown, pricing_status, unpriced_reason, price_entry, price_effective_from, catalog_version,
    price_override, priced_at)
SELECT
    concat('bench-', toString(n)) AS event_id,
    toDateTime64('{end_text}', 3, 'UTC') - toIntervalMillisecond({seconds * 1000} - intDiv(n * {seconds * 1000}, {total})) AS ts,
    'bench' AS source,
    pm.1 AS provider, pm.2 AS model, 'chat' AS operation,
    if(cityHash64(n, 3) % 100 = 0, 'error', 'ok') AS status,
    concat('org-', toString(u % 10 % 2)) AS org, concat('team-', toString(u % 10)) AS team,
    concat('project-', toString(u % 30)) AS project, concat('user-', toString(u)) AS user,
    concat('key-', toString(u)) AS api_key, concat('feature-', toString((u % 10 + cityHash64(n, 4) % 3) % 12)) AS feature,
    '' AS route,
    if(cityHash64(n, 5) % 10 = 0, map('env', ['prod', 'staging', 'dev'][1 + u % 3], 'experiment', concat('x', toString(u % 7))),
       map('env', ['prod', 'staging', 'dev'][1 + u % 3])) AS tags,
    500 + cityHash64(n, 6) % 4000 AS input_tokens, intDiv(input_tokens, 3) AS cached_input_tokens,
    0 AS cache_write_tokens, 0 AS cache_write_1h_tokens, 50 + cityHash64(n, 7) % 900 AS output_tokens,
    0 AS reasoning_tokens, 200 + cityHash64(n, 8) % 5000 AS latency_ms, 50 + cityHash64(n, 9) % 800 AS ttft_ms,
    false AS batch, '' AS service_tier, 'provider' AS tokens_source,
    if(unpriced, toDecimal64(0, 12), toDecimal64((input_tokens * 2500 + output_tokens * 10000) / 1000000000, 12))
        AS cost_usd,
    map('input', cost_usd) AS cost_breakdown,
    if(unpriced, 'unpriced', 'priced') AS pricing_status,
    if(unpriced, 'no price for acme/acme-internal-llm-v2', '') AS unpriced_reason,
    if(unpriced, '', concat(pm.1, '/', pm.2)) AS price_entry, if(unpriced, '', '2025-01-01') AS price_effective_from,
    'bench' AS catalog_version, '' AS price_override, ts AS priced_at
FROM (
    SELECT number AS n, cityHash64(number, 2) % 300 AS u,
        [{pairs}][1 + (u % 10 + cityHash64(number, 10) % 3) % 10 + if(cityHash64(number, 11) % 50 = 0, 10 - (u % 10 + cityHash64(number, 10) % 3) % 10, 0)] AS pm,
        pm.2 = 'acme-internal-llm-v2' AS unpriced
    FROM numbers({first}, {count})
)
"""


def _dashboard_queries(wh: Any, now: datetime) -> dict[str, Callable[[], Any]]:
    """What the dashboard pages ask on a refresh: date ranges of whole UTC days (the last 30 and 7 days, up to
    the end of today), the last 24 hours by hour, and the small record tables."""
    from warehouse import analytics, providers
    from warehouse.showback import showback

    hour = now.replace(minute=0, second=0, microsecond=0)
    tomorrow = hour.replace(hour=0) + timedelta(days=1)
    month_ago, week_ago, day_ago = tomorrow - timedelta(days=30), tomorrow - timedelta(days=7), hour - timedelta(days=1)
    window = {"since": month_ago, "until": tomorrow}
    return {
        "cost_by_team_and_status": lambda: wh.spend(["team", "pricing_status"], **window),
        "cost_by_model": lambda: wh.spend(["provider", "model"], **window),
        "cost_over_time_by_team": lambda: wh.spend_over_time("day", "team", **window),
        "hourly_last_day": lambda: wh.spend_over_time("hour", "team", since=day_ago),
        "cost_by_tag": lambda: showback(wh, ["tag:env"], bucket="day", **window),
        "team_scoped_by_feature": lambda: showback(wh, ["feature"], bucket="day", team="team-3", **window),
        "today_and_mtd": lambda: analytics.spend_today_mtd(wh, now=now),
        "top_movers": lambda: analytics.top_movers(wh, "team", current_start=week_ago, current_end=tomorrow),
        "unpriced_by_model": lambda: analytics.unpriced_by_model(wh, **window),
        "model_stats": lambda: providers.model_stats(wh, since=week_ago, until=tomorrow),
        "reconciliation": lambda: providers.reconciliation(wh, **window),
        "budget_status": lambda: analytics.budget_status(wh),
        "alerts": lambda: analytics.alerts_history(wh, since=month_ago),
        "anomalies": lambda: analytics.anomalies(wh, since=month_ago),
        "freshness": lambda: wh.freshness(),
    }


def _load_events(count: int, start: datetime) -> list[dict[str, Any]]:
    events = []
    for i in range(count):
        cost = Decimal(1000 + i % 5000) * Decimal("0.000000001")
        events.append({
            "event_id": f"load-{i}", "ts": (start + timedelta(milliseconds=37 * i)).isoformat(), "source": "bench",
            "provider": "openai", "model": "gpt-4o", "attribution": {"org": "org-0", "team": f"team-{i % 10}",
                                                                      "user": f"user-{i % 300}", "tags": {"env": "prod"}},
            "usage": {"input_tokens": 1000 + i % 700, "cached_input_tokens": 200, "output_tokens": 100 + i % 300},
            "latency_ms": 812.5, "tokens_source": "provider", "cost_usd": format(cost, "f"),
            "cost_breakdown": {"input": format(cost, "f")}, "pricing_status": "priced",
            "price": {"entry": "openai/gpt-4o", "effective_from": "2024-08-06", "catalog_version": "bench"},
            "priced_at": start.isoformat(),
        })
    return events


def priced_windows(events: list[dict[str, Any]], batch_rows: int, priced_format: str = "json") -> list[list[Any]]:
    """The loader's input for `events`: per window of `batch_rows` events, `tokenmeter.priced` records of the
    micro-batches the worker would write (JSON arrays of 500; or, `priced_format` "arrow", Arrow IPC messages of 500
    with the format header: TOKENMETER_PRICED_FORMAT), offsets counting events from the first window."""
    from types import SimpleNamespace

    import orjson

    from tokenmeter import topics
    from tokenmeter.microbatch import MAX_EVENTS_PER_MESSAGE, frame
    from tokenmeter.priced_wire import ARROW, headers_for

    def arrow_messages(chunk: list[dict[str, Any]]) -> list[bytes]:
        from tokenmeter import priced_arrow

        return [priced_arrow.write_stream(priced_arrow.from_events(chunk[i:i + MAX_EVENTS_PER_MESSAGE]))
                for i in range(0, len(chunk), MAX_EVENTS_PER_MESSAGE)]

    headers = headers_for(priced_format)
    windows = []
    for first in range(0, len(events), batch_rows):
        chunk = events[first:first + batch_rows]
        values = arrow_messages(chunk) if priced_format == ARROW else frame(orjson.dumps(e) for e in chunk)
        windows.append([SimpleNamespace(topic=topics.PRICED, partition=0, offset=first + i, value=value,
                                        headers=headers) for i, value in enumerate(values)])
    return windows


def _loader_path(wh: Any, count: int, batch_rows: int, start: datetime, priced_format: str = "json"
                 ) -> dict[str, Any]:
    """The loader's own path from Kafka message values to stored rows, without Kafka: `count` load events framed
    as the worker frames them (JSON arrays of 500, or Arrow messages: `priced_format`), then per window of
    `batch_rows` events `_accept` (decode), `build_priced` (the Arrow table and its checks) and `_store_priced`
    (dedupe lookup, insert, views). Returns rows/s wall and CPU, and CPU µs per row of each step (chDB runs
    in-process: its CPU counts); the keys say `load_path_arrow_` for Arrow messages."""
    from tokenmeter.commitloop import Batch
    from warehouse.loader import _accept, _Batch, _store_priced, build_priced

    windows = priced_windows([dict(e, event_id=f"path-{priced_format}-{e['event_id']}")
                              for e in _load_events(count, start)], batch_rows, priced_format)
    steps = {"decode": 0.0, "build": 0.0, "store": 0.0}
    stored = 0
    wh.load_stored_ids()  # as the loader does on start (warehouse/stored_ids.py): a start-up cost, not a window's
    wall, cpu = time.perf_counter(), time.process_time()
    for records in windows:
        batch = _Batch()
        mark = time.process_time()
        _accept(Batch(state=batch), records)  # what the commit loop calls with a fetch's records
        steps["decode"] += time.process_time() - mark
        mark = time.process_time()
        build_priced(batch)
        steps["build"] += time.process_time() - mark
        mark = time.process_time()
        stored += _store_priced(wh, batch)
        steps["store"] += time.process_time() - mark
        if batch.dead:
            raise RuntimeError(f"loader path bench: {len(batch.dead)} dead letters, first {batch.dead[0]['reason']}")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    prefix = "load_path_" if priced_format == "json" else f"load_path_{priced_format}_"
    return {f"{prefix}rows_per_s": round(count / wall), f"{prefix}rows_per_cpu_s": round(count / cpu),
            f"{prefix}rows_stored": stored, f"{prefix}messages_per_window": len(windows[0]) if windows else 0,
            f"{prefix}cpu_us_per_row": {k: round(v / count * 1e6, 2) for k, v in steps.items()}}


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def bench_warehouse(settings_or_tmpdir: Any = None, rows: int = 10_000_000, *, load_rows: int = 200_000,
                    load_batch_rows: int | None = None, repeats: int = 5, keep: bool = False,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Generate `rows` events in a fresh chDB warehouse under `settings_or_tmpdir` (a directory, or Settings:
    `<data_dir>/bench-warehouse`; None: a temp dir), time every dashboard query `repeats` times after one warm-up,
    then time `load_rows` loader inserts in batches of `load_batch_rows` (None: the loader's own window,
    `TOKENMETER_LOAD_BATCH_ROWS`). The directory is removed afterwards unless keep=True. Must run in a process with
    no other chDB path open."""
    from tokenmeter.settings import Settings, load_settings
    from warehouse.store import open_warehouse

    say = progress or (lambda message: None)
    if load_batch_rows is None:  # time the windows the loader inserts (issue 14, loader9: its default changed)
        load_batch_rows = load_settings().load_batch_rows
    if settings_or_tmpdir is None:
        base = Path(tempfile.mkdtemp(prefix="tokenmeter-bench-"))
    elif isinstance(settings_or_tmpdir, (str, Path)):
        base = Path(settings_or_tmpdir) / "bench-warehouse"
    else:
        base = Path(settings_or_tmpdir.data_dir) / "bench-warehouse"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    now = datetime.now(timezone.utc)
    end = now.replace(minute=0, second=0, microsecond=0)
    wh = open_warehouse(Settings(data_dir=base), writer=True, serve=False)
    try:
        started = time.perf_counter()
        for first in range(0, rows, CHUNK_ROWS):
            wh.backend.command(_generate_sql(first, min(CHUNK_ROWS, rows - first), rows, end, 30))
            say(f"generated {min(first + CHUNK_ROWS, rows):,} / {rows:,} events")
        generate_seconds = time.perf_counter() - started
        sizes = {t: int(wh.query(f"SELECT count() AS n FROM {t}")["n"][0])
                 for t in ("priced_events", "spend_hourly", "spend_hourly_tags", "model_hourly", "spend_daily",
                           "spend_daily_tags")}
        per_query: dict[str, list[float]] = {}
        for name, run in _dashboard_queries(wh, now).items():
            run()  # warm-up: first use of a table and its marks
            timings = []
            for _ in range(repeats):
                begun = time.perf_counter()
                run()
                timings.append((time.perf_counter() - begun) * 1000)
            per_query[name] = timings
        say("queries timed")
        everything = [t for timings in per_query.values() for t in timings]
        events = _load_events(load_rows, end - timedelta(hours=2))
        wh.load_stored_ids()  # the loader's start-up scan of the dedupe keys (warehouse/stored_ids.py), untimed
        begun, cpu = time.perf_counter(), time.process_time()
        stored = 0
        for i in range(0, len(events), load_batch_rows):
            stored += wh.insert_priced(events[i:i + load_batch_rows])
        load_seconds, load_cpu = time.perf_counter() - begun, time.process_time() - cpu
        say("load timed")
        path = _loader_path(wh, load_rows, load_batch_rows, end - timedelta(hours=2))
        say("loader path timed")
        # the same events as Arrow messages (TOKENMETER_PRICED_FORMAT=arrow; issue 14, loader11)
        path.update(_loader_path(wh, load_rows, load_batch_rows, end - timedelta(hours=2), "arrow"))
        say("loader path from Arrow messages timed")
    finally:
        wh.close()
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    return {
        "rows": rows,
        "generate_seconds": round(generate_seconds, 1),
        "table_rows": sizes,
        "query_p50_ms": round(statistics.median(everything), 1),
        "query_p95_ms": round(_percentile(everything, 0.95), 1),
        "queries_p95_ms": {name: round(_percentile(t, 0.95), 1) for name, t in per_query.items()},
        "load_rows": load_rows,
        "load_rows_stored": stored,
        "load_batch_rows": load_batch_rows,
        "load_rows_per_s": round(load_rows / load_seconds),
        "load_rows_per_cpu_s": round(load_rows / load_cpu),  # chDB runs in-process: its CPU counts (less load-bound)
        **path,
    }


def main() -> None:
    """`python -m warehouse.bench [ROWS [LOAD_ROWS]]`: print the figures as JSON (LOAD_ROWS: rows of the timed
    loader inserts, default 200,000)."""
    import sys

    from streams.allocator import keep_freed_pages

    keep_freed_pages()  # as the loader's process (its path is timed here), before polars loads
    import orjson

    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    load_rows = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
    result = bench_warehouse(None, rows, load_rows=load_rows, progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
