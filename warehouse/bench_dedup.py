"""Benchmark of taking back demoted copies (cross-source dedup, warehouse/dedup.py `remove_demoted`).

`python -m warehouse.bench_dedup [--rows 1000000] [--copies 1,10,100,1000] [--rounds 3]` prints JSON: a chDB
warehouse in a temporary directory is loaded with `--rows` of `warehouse.bench`'s load events (one every 37 ms:
~97,000 rows an hour, ~10 hours), then, per round and per N of `--copies`, N calls are stored as their SDK event
and then delivered as their gateway log (LiteLLM, preferred) in one batch, so that batch takes back N stored
copies. Reported per N (median of the rounds): wall and CPU ms of the removal (`capture_demoted`, run before the
winners are stored, plus `remove_demoted`; before the split, `remove_demoted` alone) and of the whole batch
(`Warehouse.insert_priced`). chDB runs in-process, so CPU time counts it. The calls' times are spread over the
last two hours of the loaded range (a loader's batch is recent traffic). At the end, raw and every rollup must
agree on events and cost (else the run fails).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from warehouse.bench import _load_events

SPACING_MS = 37  # as warehouse.bench's load events


def _call(i: int, prefix: str, source: str, ts: datetime, cost: str) -> dict[str, Any]:
    response = f"chatcmpl-{prefix}-{i}"
    event_id = f"{source}-{prefix}-{i}"
    return {
        "event_id": event_id, "ts": ts.isoformat(), "source": source, "provider": "openai", "model": "gpt-4o",
        "attribution": {"org": "org-0", "team": f"team-{i % 10}", "user": f"user-{i % 300}", "tags": {"env": "prod"}},
        "usage": {"input_tokens": 1000 + i % 700, "output_tokens": 100 + i % 300}, "latency_ms": 640.25,
        "tokens_source": "provider", "cost_usd": cost, "cost_breakdown": {"input": cost}, "pricing_status": "priced",
        "price": {"entry": "openai/gpt-4o", "effective_from": "2024-08-06", "catalog_version": "bench"},
        "priced_at": ts.isoformat(), "correlation": {"response_id": response},
    }


def _check_totals(wh: Any) -> dict[str, Any]:
    raw = wh.query("SELECT count() AS n, toString(sum(cost_usd)) AS c FROM priced_events").row(0)
    found = {"priced_events": [int(raw[0]), raw[1]]}
    for table, events in (("spend_hourly", "events"), ("spend_hourly_tags", "events"), ("model_hourly", "requests"),
                          ("spend_daily", "events"), ("spend_daily_tags", "events")):
        row = wh.query(f"SELECT toInt64(sum({events})) AS n, toString(sum(cost_usd)) AS c FROM {table}").row(0)
        found[table] = [int(row[0]), row[1]]
    if any(value != found["priced_events"] for value in found.values()):
        raise RuntimeError(f"raw and rollups disagree: {found}")
    return found


def run(rows: int, copies: list[int], rounds: int) -> dict[str, Any]:
    from tokenmeter.settings import Settings
    from warehouse import dedup, open_warehouse

    data_dir = Path(tempfile.mkdtemp(prefix="bench-dedup-"))
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(
        milliseconds=SPACING_MS * rows + 3_600_000)
    end = start + timedelta(milliseconds=SPACING_MS * rows)
    removal: list[tuple[float, float]] = []  # per removal: CPU and wall seconds of its capture and its finish
    real_remove = dedup.remove_demoted
    real_capture = getattr(dedup, "capture_demoted", None)  # (absent before the removal was split in two)

    def timed(step: Any) -> Any:
        def run_step(*args: Any, **kwargs: Any) -> int:
            cpu, wall = time.process_time(), time.perf_counter()
            try:
                return step(*args, **kwargs)
            finally:
                spent = (time.process_time() - cpu, time.perf_counter() - wall)
                if step is real_remove:
                    captured = removal.pop() if removal else (0.0, 0.0)
                    removal.append((captured[0] + spent[0], captured[1] + spent[1]))
                else:
                    removal.append(spent)
        return run_step

    try:
        wh = open_warehouse(Settings(data_dir=data_dir), writer=True, serve=False)
        try:
            load_cpu, load_wall = time.process_time(), time.perf_counter()
            for first in range(0, rows, 50_000):
                events = _load_events(min(50_000, rows - first), start + timedelta(milliseconds=SPACING_MS * first))
                wh.insert_priced([dict(e, event_id=f"{first}-{e['event_id']}") for e in events])
            loaded = {"rows": rows, "cpu_s": round(time.process_time() - load_cpu, 1),
                      "wall_s": round(time.perf_counter() - load_wall, 1)}
            dedup.remove_demoted = timed(real_remove)
            if real_capture is not None:
                dedup.capture_demoted = timed(real_capture)
            results: dict[str, Any] = {}
            for n in copies:
                figures: dict[str, list[float]] = {"remove_cpu_ms": [], "remove_wall_ms": [], "batch_cpu_ms": [],
                                                   "batch_wall_ms": []}
                for round_ in range(rounds):
                    prefix = f"n{n}r{round_}"
                    times = [end - timedelta(milliseconds=(i * 7_200_000) // n + 1) for i in range(n)]
                    wh.insert_priced([_call(i, prefix, "openai", times[i], "0.003") for i in range(n)])
                    removal.clear()
                    cpu, wall = time.process_time(), time.perf_counter()
                    wh.insert_priced([_call(i, prefix, "litellm", times[i], "0.004") for i in range(n)])
                    batch_cpu, batch_wall = time.process_time() - cpu, time.perf_counter() - wall
                    if len(removal) != 1:
                        raise RuntimeError(f"expected one removal per batch, saw {len(removal)}")
                    figures["remove_cpu_ms"].append(removal[0][0] * 1000)
                    figures["remove_wall_ms"].append(removal[0][1] * 1000)
                    figures["batch_cpu_ms"].append(batch_cpu * 1000)
                    figures["batch_wall_ms"].append(batch_wall * 1000)
                results[str(n)] = {name: round(statistics.median(values), 1) for name, values in figures.items()}
            return {"load": loaded, "copies": results, "totals": _check_totals(wh)}
        finally:
            dedup.remove_demoted = real_remove
            if real_capture is not None:
                dedup.capture_demoted = real_capture
            wh.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--copies", default="1,10,100,1000", help="N demoted copies per batch, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(run(args.rows, [int(n) for n in args.copies.split(",")], args.rounds), indent=1))


if __name__ == "__main__":
    main()
