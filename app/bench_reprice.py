"""Re-price benchmark: `tokenmeter reprice`'s path over a generated month, the per-row path (stored rows as dicts,
the worker's columnar step on their JSON, `Warehouse.reprice(reprice_batch=...)`) against the columnar one
(stored Arrow columns priced by `streams.columnar.reprice`, `Warehouse.reprice(reprice_columns=...)`).

Each path runs in its own process (chDB: one data path per process) on a fresh warehouse holding the same
`warehouse.bench` month (11 models of 5 providers, 2% unpriced, 1% errors, costs from a made-up formula, so the
bundled catalog changes nearly every row), and is timed wall and CPU, split into its phases.

    python -m app.bench_reprice --events 100000 [--days 30] [--dry-run] [--change all|one-model] [--paths old,new]
        [--old-tree DIR] [--statements] [--json]

`--statements` also splits the apply by SQL statement: calls, wall, process CPU, the share of 5 ms samples in which
no thread of the process was running (waiting on something other than a core: a lock, a condition, the disk) and
chDB's ProfileEvents counted meanwhile (`system.events`: mutated and merged rows, fsync, disk writes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

# chDB counters read around each statement of the apply with --statements (system.events, process-wide)
STATEMENT_EVENTS = ("OSCPUWaitMicroseconds", "MutatedRows", "MergedRows", "MergeTotalMilliseconds",
                    "MutationTotalMilliseconds", "FileSyncElapsedMicroseconds", "DiskWriteElapsedMicroseconds")
PATHS = ("old", "new", "base")  # base: the columnar path ("new") run on --old-tree (to time a change of the apply)


class PhaseClock:
    """Wall and CPU seconds per phase name (a phase may run many times)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.thread: dict[str, float] = {}  # CPU of the calling thread only (Python, polars' caller); the rest of
        # a phase's CPU is other threads': chDB's query and background threads, polars' and Arrow's pools
        self._inner: list[list[float]] = []  # per running phase: wall, CPU and thread CPU of the phases it called

    def wrap(self, name: str, fn):  # noqa: ANN001, ANN201
        """`fn` timed as phase `name`; time spent in a phase it calls counts for that phase only."""
        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            wall, cpu, thread = time.perf_counter(), time.process_time(), time.thread_time()
            self._inner.append([0.0, 0.0, 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                inner_wall, inner_cpu, inner_thread = self._inner.pop()
                spent_wall, spent_cpu = time.perf_counter() - wall, time.process_time() - cpu
                spent_thread = time.thread_time() - thread
                self.wall[name] = self.wall.get(name, 0.0) + spent_wall - inner_wall
                self.cpu[name] = self.cpu.get(name, 0.0) + spent_cpu - inner_cpu
                self.thread[name] = self.thread.get(name, 0.0) + spent_thread - inner_thread
                if self._inner:
                    self._inner[-1][0] += spent_wall
                    self._inner[-1][1] += spent_cpu
                    self._inner[-1][2] += spent_thread

        return timed


class StatementClock:
    """Per SQL statement of a backend (its text up to the first 100 characters, quoted values blanked): calls, wall,
    process CPU, chDB's STATEMENT_EVENTS, and how often a sampler thread saw no other thread of the process running."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.stats: dict[str, dict[str, float]] = {}
        self.current: str | None = None
        self.done = False

    def _events(self) -> dict[str, int]:
        names = ", ".join(f"'{name}'" for name in STATEMENT_EVENTS)  # constants (no caller text in the SQL)
        table = self.backend.__class__.query_arrow(  # the class's: not timed itself
            self.backend, f"SELECT event, value FROM system.events WHERE event IN ({names})")
        return dict(zip(table.column("event").to_pylist(), table.column("value").to_pylist()))

    def _sample(self) -> None:
        import threading
        me = str(threading.get_native_id())
        while not self.done:
            name = self.current
            if name is not None:
                running = False
                for tid in os.listdir("/proc/self/task"):
                    try:
                        with open(f"/proc/self/task/{tid}/stat") as f:
                            running |= tid != me and f.read().rsplit(")", 1)[1].split()[0] == "R"
                    except OSError:
                        continue
                stat = self.stats.setdefault(name, {})
                stat["samples"] = stat.get("samples", 0) + 1
                stat["idle_samples"] = stat.get("idle_samples", 0) + (not running)
            time.sleep(0.005)

    def start(self) -> None:
        import threading
        threading.Thread(target=self._sample, daemon=True).start()

    def timed(self, real, method: str):  # noqa: ANN001, ANN202
        """`real` (the backend's `method` as it is now) timed per statement."""
        import re

        def timed(sql, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            name = f"{method}: " + re.sub(r"'[^']*'", "'?'", re.sub(r"\s+", " ", sql))[:100]
            before = self._events()
            self.current = name
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return real(sql, *args, **kwargs)
            finally:
                spent_wall, spent_cpu = time.perf_counter() - wall, time.process_time() - cpu
                self.current = None
                after = self._events()
                stat = self.stats.setdefault(name, {})
                for key, value in (("calls", 1), ("wall_s", spent_wall), ("cpu_s", spent_cpu),
                                   *((e, after.get(e, 0) - before.get(e, 0)) for e in STATEMENT_EVENTS)):
                    stat[key] = stat.get(key, 0) + value

        return timed

    def report(self) -> list[dict[str, Any]]:
        self.done = True
        rows = [{"statement": name, **{k: round(v, 2) if isinstance(v, float) else v for k, v in stat.items()
                                       if k not in ("samples", "idle_samples")},
                 "idle_share": round(stat.get("idle_samples", 0) / max(stat.get("samples", 0), 1), 2)}
                for name, stat in self.stats.items() if "calls" in stat]
        return sorted(rows, key=lambda row: -row["wall_s"])


# `--change one-model`: gpt-4o-mini (about a tenth of the generated calls) costs more from the middle of the month.
PRICE_RISE = """
provider: openai
first_party: true
source: https://example.com/bench-price-rise
models:
  gpt-4o-mini:
    versions:
      - {{effective_from: "{since}", input: "0.20", cached_input: "0.10", output: "0.80"}}
"""


def run_one(path: str, events: int, days: int, dry_run: bool, end: datetime, change: str = "all",
            statements: bool = False) -> dict[str, Any]:
    """Generate the month in a fresh warehouse and re-price it on `path`; the figures as a dict."""
    import warehouse.reprice as reprice_module
    from app import reprice_cli
    from streams import price_event
    from streams.pricing import load_price_book
    from tokenmeter.settings import Settings
    from warehouse.bench import CHUNK_ROWS, _generate_sql
    from warehouse.store import Warehouse, open_warehouse

    base = Path(tempfile.mkdtemp(prefix="tokenmeter-bench-reprice-"))
    clock = PhaseClock()
    try:
        wh = open_warehouse(Settings(data_dir=base, raw_retention_days=3650), writer=True, serve=False)
        try:
            for first in range(0, events, CHUNK_ROWS):
                wh.backend.command(_generate_sql(first, min(CHUNK_ROWS, events - first), events, end, days))
            settled = _settle(wh)
            book = load_price_book()
            priced_at = datetime.now(timezone.utc)
            if change == "one-model":  # the month at the catalog's prices first (untimed), then one model's rise
                columns = (reprice_cli.columnar_reprice_columns(book, priced_at) if path == "new" else None)
                batch = (reprice_cli.columnar_reprice_batch(book, priced_at) if path == "old" else None)
                wh.reprice(end - timedelta(days=days + 1), None, reprice_fn=lambda e: price_event(e, book, priced_at),
                           **({"reprice_columns": columns} if columns else {"reprice_batch": batch}))
                settled += _settle(wh)
                rise = base / "price-rise"
                rise.mkdir()
                (rise / "openai.yaml").write_text(PRICE_RISE.format(since=(end - timedelta(days=days / 2)).isoformat()))
                book = load_price_book(extra_paths=[rise])
            reprice_fn = clock.wrap("price per row", lambda event: price_event(event, book, priced_at))
            apply_rows = clock.wrap("apply: rows to Arrow", Warehouse.apply_repriced_events)
            wh.apply_repriced_events = lambda changed: apply_rows(wh, changed)  # type: ignore[method-assign]
            statement_clock = StatementClock(wh.backend) if statements else None
            # the owner's apply: staged per call and finished once (reprice9), or whole per call (before)
            applies = [name for name in ("apply_repriced_table", "stage_repriced_table", "finish_repriced")
                       if hasattr(Warehouse, name)]  # none in a tree from before the columnar re-price
            for name in applies:
                timed = clock.wrap("apply (chDB)", getattr(Warehouse, name))
                if statement_clock is not None:
                    timed = _statements_inside(statement_clock, timed)
                setattr(wh, name, lambda *args, timed=timed: timed(wh, *args))
            if not applies:
                apply_rows = clock.wrap("apply (chDB)", Warehouse.apply_repriced_events)
            query = clock.wrap("read (chDB)", wh.backend.query_arrow)
            wh.backend.query_arrow = query  # type: ignore[method-assign]
            kwargs: dict[str, Any] = {}
            if path == "old":
                batch = reprice_cli.columnar_reprice_batch(book, priced_at)
                kwargs["reprice_batch"] = clock.wrap("price (batch)", batch)
                reprice_module.arrow_rows = clock.wrap("rows as dicts", reprice_module.arrow_rows)
            else:
                columns = reprice_cli.columnar_reprice_columns(book, priced_at)
                kwargs["reprice_columns"] = clock.wrap("price (columns)", columns)
                import warehouse.reprice_columnar as columnar_module
                for phase, name in (("diff", "changed_mask"), ("report", "_add_to_report"),
                                    ("new copies", "_new_copies")):
                    if hasattr(columnar_module, name):  # the plan's steps, as far as this tree has them
                        setattr(columnar_module, name, clock.wrap(phase, getattr(columnar_module, name)))
            load = os.getloadavg()[0]
            wall, cpu, thread = time.perf_counter(), time.process_time(), time.thread_time()
            report = wh.reprice(end - timedelta(days=days + 1), None, reprice_fn=reprice_fn, dry_run=dry_run,
                                **kwargs)
            wall, cpu, thread = time.perf_counter() - wall, time.process_time() - cpu, time.thread_time() - thread
            load_after = os.getloadavg()[0]
            stored = wh.query("SELECT toString(sum(cost_usd)) AS raw FROM priced_events").to_dicts()[0]["raw"]
            rollup = wh.query("SELECT toString(sum(cost_usd)) AS r FROM spend_hourly").to_dicts()[0]["r"]
        finally:
            wh.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    phases_wall = {k: round(v, 2) for k, v in clock.wall.items()}
    phases_cpu = {k: round(v, 2) for k, v in clock.cpu.items()}
    phases_thread = {k: round(v, 2) for k, v in clock.thread.items()}
    phases_wall["rest (plan, diff)"] = round(wall - sum(clock.wall.values()), 2)
    phases_cpu["rest (plan, diff)"] = round(cpu - sum(clock.cpu.values()), 2)
    phases_thread["rest (plan, diff)"] = round(thread - sum(clock.thread.values()), 2)
    return {
        "path": path, "events": report.events, "changed": report.changed, "applied": report.applied,
        "dry_run": dry_run, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
        "events_per_s": round(report.events / wall), "events_per_cpu_s": round(report.events / cpu),
        "phases_wall_s": phases_wall, "phases_cpu_s": phases_cpu,
        "phases_main_thread_cpu_s": phases_thread, "main_thread_cpu_s": round(thread, 2), "load_before": load, "load_after": load_after,
        "settle_s": settled, "change": change,
        "report": report.to_json(), "stored_total": stored, "rollup_total": rollup,
        **({"statements": statement_clock.report()} if statement_clock is not None else {}),
    }


def _statements_inside(statement_clock: StatementClock, fn):  # noqa: ANN001, ANN202
    """`fn` with `statement_clock` timing the backend's statements while it runs (the apply's, not the plan's)."""
    backend = statement_clock.backend
    if not getattr(statement_clock, "started", False):  # one sampler for every wrapped method
        statement_clock.start()
        statement_clock.started = True  # type: ignore[attr-defined]

    def inside(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        methods = {m: getattr(backend, m) for m in ("command", "query_arrow", "insert_arrow")}
        for method, bound in methods.items():
            setattr(backend, method, statement_clock.timed(bound, method))
        try:
            return fn(*args, **kwargs)
        finally:
            for method, bound in methods.items():
                setattr(backend, method, bound)

    return inside


def _settle(wh: Any, limit_s: float = 300.0) -> float:
    """Wait (up to `limit_s`) until chDB's background merges of the generated month are done, so they do not run
    inside the timed re-price (a stored month is merged; one generated seconds ago is not). Seconds waited."""
    begun = time.perf_counter()
    while time.perf_counter() - begun < limit_s:
        if not wh.backend.query_arrow("SELECT count() AS n FROM system.merges").column("n")[0].as_py():
            break
        time.sleep(0.2)  # polling a condition, not a fixed wait
    return round(time.perf_counter() - begun, 1)


def _this_hour() -> datetime:
    return datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.bench_reprice", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--change", choices=("all", "one-model"), default="all",
                        help="all: the stored costs are made up, so the catalog changes every row; one-model: the month "
                        "is first re-priced to the catalog (untimed), then one model's price rises from mid-month "
                        "(about 5%% of the rows change)")
    parser.add_argument("--paths", default="old,new", help="comma-separated: old (per-row plan), new (columnar), base "
                        "(the columnar path on --old-tree)")
    parser.add_argument("--one", choices=("old", "new"), help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--end", help=argparse.SUPPRESS)  # the child's end of the generated month
    parser.add_argument("--statements", action="store_true", help="also time the apply per SQL statement (wall, CPU, "
                        "idle share, chDB counters); in the JSON as `statements`")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--old-tree", help="run the old path on this checkout of the repo (e.g. `git archive` of an "
                        "earlier commit), so the comparison is against that code, apply included")
    args = parser.parse_args(argv)
    if args.one:
        print(orjson.dumps(run_one(args.one, args.events, args.days, args.dry_run,
                                   datetime.fromisoformat(args.end) if args.end else _this_hour(), args.change,
                                   args.statements)).decode())
        return
    # one month for both paths (the same rows and window, even when the runs straddle an hour)
    end = _this_hour()
    results = []
    for path in args.paths.split(","):
        child = ["--one", "new" if path == "base" else path, "--events", str(args.events), "--days", str(args.days), "--end", end.isoformat()]
        child += (["--dry-run"] if args.dry_run else []) + ["--change", args.change]
        child += ["--statements"] if args.statements else []
        # this file run as __main__ with `tree` first on the path (cwd), whichever tree this file is in
        run_file = "import os, runpy; runpy.run_path(os.environ['BENCH_FILE'], run_name='__main__')"
        command = [sys.executable, "-c", run_file, *child]
        tree = (args.old_tree if path in ("old", "base") and args.old_tree
                else str(Path(__file__).resolve().parents[1]))
        env = {**os.environ, "PYTHONPATH": tree, "BENCH_FILE": str(Path(__file__).resolve())}
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env, cwd=tree)
        if done.returncode != 0:
            sys.exit(f"{path} path failed:\n{done.stderr[-4000:]}")
        results.append({**orjson.loads(done.stdout.strip().splitlines()[-1]), "path": path})
        if not args.json:
            r = results[-1]
            print(f"{path}: {r['events']:,} events ({r['changed']:,} changed, {r['applied']:,} applied) in "
                  f"{r['wall_s']} s wall / {r['cpu_s']} s CPU: {r['events_per_s']:,} events/s, "
                  f"{r['events_per_cpu_s']:,}/CPU-s; load {r['load_before']:.2f} -> {r['load_after']:.2f}",
                  flush=True)
            print(f"    phases wall s: {r['phases_wall_s']}", flush=True)
            print(f"    phases CPU s:  {r['phases_cpu_s']}", flush=True)
            if "phases_main_thread_cpu_s" in r:
                print(f"    of which the calling thread: {r['phases_main_thread_cpu_s']}", flush=True)
            for row in r.get("statements", []):
                counters = " ".join(f"{e}={row[e]}" for e in STATEMENT_EVENTS if row.get(e))
                print(f"    {row['calls']:4d} x {row['wall_s']:8.2f} s wall {row['cpu_s']:7.2f} s CPU idle "
                      f"{row['idle_share']:.2f}  {row['statement'][:90]}  {counters}", flush=True)
    if len(results) == 2:
        old, new = sorted(results, key=lambda r: r["path"] == "new")  # the baseline, then the new path
        same = (old["report"] == new["report"], old["stored_total"] == new["stored_total"],
                old["rollup_total"] == new["rollup_total"])
        summary = {"wall_ratio": round(old["wall_s"] / new["wall_s"], 2),
                   "cpu_ratio": round(old["cpu_s"] / new["cpu_s"], 2),
                   "same_report": same[0], "same_stored_total": same[1], "same_rollup_total": same[2]}
        if args.json:
            print(orjson.dumps({"runs": results, **summary}, option=orjson.OPT_INDENT_2).decode())
        else:
            print(f"new / {old['path']}: {summary['wall_ratio']}x wall, {summary['cpu_ratio']}x CPU; same report "
                  f"{same[0]}, same stored total {same[1]}, same rollup total {same[2]}")
    elif args.json:
        print(orjson.dumps({"runs": results}, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
