"""The worker's priced messages as JSON against Arrow IPC (`TOKENMETER_PRICED_FORMAT`; issue 14, loader11), in one
process, alternating: `python -m app.bench_priced_format [--rows 200000] [--batch 100000] [--repeats 3]` prints JSON.

On `tokenmeter bench`'s traffic (app.bench.synthetic_events) priced by the worker's columnar step in batches of
10,000 events, fresh ids per round and format: CPU µs per row of the pricing step (`price`, the JSON text
included: the frame path writes it in both formats), of the messages made from the priced batch (`encode`: JSON
framing, or Arrow columns and IPC streams) and of the loader's path on them (`decode` = `_accept`, `build` =
`build_priced`, `store` = `_store_priced`, in windows of `--batch` rows into a fresh chDB); rows/s of the loader's
path wall and per CPU-s; median of the rounds, each round listed. The first window is built in both formats from
the same priced batches and the tables compared (they must be equal). Lives in app/: it uses app.bench's traffic.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import tempfile
import time
from typing import Any

import orjson


def priced_formats(wh: Any, rows: int, batch: int, repeats: int = 3) -> dict[str, Any]:
    """The figures of the module's docstring, on the open warehouse `wh`."""
    import statistics
    from types import SimpleNamespace

    from app.bench import _micro_batches, synthetic_events
    from streams.batch import RawRecord
    from streams.columnar import process_batch_columnar
    from streams.pricing import load_price_book
    from tokenmeter import topics
    from tokenmeter.commitloop import Batch
    from tokenmeter.priced_wire import headers_for
    from warehouse.loader import _accept, _Batch, _store_priced, build_priced

    book = load_price_book()
    seeds = iter(range(1000, 10_000))

    def price(steps: dict[str, float], priced_format: str = "json") -> list[Any]:
        usage = [RawRecord(value, "tokenmeter.usage", i % 4, i)
                 for i, (_, value) in enumerate(_micro_batches(synthetic_events(rows, next(seeds))))]
        mark = time.process_time()
        # ~10,000 events per worker batch, priced as a worker writing `priced_format` prices them (arrow14)
        results = [process_batch_columnar(usage[start:start + 20], book, priced_format=priced_format)
                   for start in range(0, len(usage), 20)]
        steps["price"] += time.process_time() - mark
        return results

    def encode(results: list[Any], priced_format: str, steps: dict[str, float]) -> list[SimpleNamespace]:
        headers = headers_for(priced_format)
        mark = time.process_time()
        messages = [message for result in results for message in result.messages(priced_format)]
        steps["encode"] += time.process_time() - mark
        return [SimpleNamespace(topic=topics.PRICED, partition=0, offset=i, value=value, key=key, headers=headers)
                for i, (key, value) in enumerate(messages)]

    def windows(records: list[SimpleNamespace]) -> list[list[SimpleNamespace]]:
        per_window = max(1, batch // 500)  # the bench's messages hold 500 events (fewer at a key's end)
        return [records[i:i + per_window] for i in range(0, len(records), per_window)]

    def load(records: list[SimpleNamespace], steps: dict[str, float]) -> int:
        stored = 0
        for window in windows(records):
            state = _Batch()
            for step, run in (("decode", lambda: _accept(Batch(state=state), window)),
                              ("build", lambda: build_priced(state)), ("store", lambda: _store_priced(wh, state))):
                mark = time.process_time()
                done = run()
                steps[step] += time.process_time() - mark
            stored += done
            if state.dead:
                raise RuntimeError(f"dead letters: {state.dead[0]['reason']}")
        return stored

    check: dict[str, Any] = {}
    results = price(collections.defaultdict(float))
    for priced_format in ("json", "arrow"):
        state = _Batch()
        _accept(Batch(state=state), windows(encode(results, priced_format, collections.defaultdict(float)))[0])
        build_priced(state)
        check[priced_format] = state.table
    if not check["json"].equals(check["arrow"]):
        raise RuntimeError("the JSON and the Arrow loader paths built different tables")
    runs: dict[str, list[dict[str, Any]]] = {"json": [], "arrow": []}
    for round_ in range(repeats):
        for priced_format in ("json", "arrow") if round_ % 2 == 0 else ("arrow", "json"):
            steps: dict[str, float] = collections.defaultdict(float)
            records = encode(price(steps, priced_format), priced_format, steps)
            load_avg = os.getloadavg()[0]
            wall, cpu = time.perf_counter(), time.process_time()
            stored = load(records, steps)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if stored != rows:
                raise RuntimeError(f"{priced_format}: stored {stored} of {rows}")
            runs[priced_format].append({
                "load_rows_per_s": rows / wall, "load_rows_per_cpu_s": rows / cpu, "load_avg": load_avg,
                **{f"{k}_cpu_us_per_row": v / rows * 1e6 for k, v in steps.items()}})
    result: dict[str, Any] = {name: {key: round(statistics.median(run[key] for run in values), 2)
                                     for key in values[0]} for name, values in runs.items()}
    result["rounds"] = {name: [{k: round(v, 2) for k, v in run.items()} for run in values]
                        for name, values in runs.items()}
    result["round_ratios_cpu"] = [round(a["load_rows_per_cpu_s"] / j["load_rows_per_cpu_s"], 2)
                                  for a, j in zip(runs["arrow"], runs["json"])]
    result["ratio_cpu"] = round(result["arrow"]["load_rows_per_cpu_s"] / result["json"]["load_rows_per_cpu_s"], 2)
    result["ratio_wall"] = round(result["arrow"]["load_rows_per_s"] / result["json"]["load_rows_per_s"], 2)
    return result


def main() -> None:
    from tokenmeter.settings import Settings
    from warehouse.store import open_warehouse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=100_000, help="rows per loader window")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stop-merges", action="store_true",
                        help="stop chDB's background merges: their CPU (counted by this process) otherwise lands in "
                             "whichever step runs, mostly the next store")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="tokenmeter-bench-priced-format-")
    wh = open_warehouse(Settings(data_dir=base), writer=True, serve=False)
    try:
        if args.stop_merges:
            wh.backend.command("SYSTEM STOP MERGES")
        result = {"rows": args.rows, "batch": args.batch, "merges": "stopped" if args.stop_merges else "running",
                  **priced_formats(wh, args.rows, args.batch, args.repeats)}
    finally:
        wh.close()
        shutil.rmtree(base, ignore_errors=True)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
