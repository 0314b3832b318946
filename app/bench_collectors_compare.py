"""The collectors' part of `tokenmeter bench`, for this checkout and a git commit, back to back on one broker.

Each round runs `collectors.bench.measure_collectors` (the real Kafka bridge, gateway topic -> usage topic, acks=all)
once per tree, each tree in a subprocess of its own (a `git archive` of the commit), on one embedded broker started
here; which tree goes first alternates from round to round (`round_order`): with a fixed order the second tree's
wall rate was ~+-20 % off at load 5-9 (docs/rounds/collectors.md, speed round 10). Per dialect it prints the best events
per CPU second of the bridge's process (steadier than the wall rate on a shared machine) and the best wall rate of
each tree, with their ratios, the median of the per-round ratios, and the load average.

    python -m app.bench_collectors_compare --against 1c9cd91 --events 50000 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

_RUNNER = r'''
import sys, orjson
from collectors.bench import measure_collectors
bootstrap, n, dialects = sys.argv[1], int(sys.argv[2]), tuple(sys.argv[3].split(","))
cpu = {}
wall = measure_collectors(bootstrap, n, dialects, usage_topic="bench.compare.usage", cpu_rates=cpu)
print(orjson.dumps({"wall": wall, "cpu": cpu}).decode())
'''


def _run(tree: Path, runner: Path, bootstrap: str, n: int, dialects: list[str]) -> dict[str, dict[str, float]]:
    out = subprocess.run([sys.executable, str(runner), bootstrap, str(n), ",".join(dialects)], cwd=tree, check=True,
                         text=True, capture_output=True, env=dict(os.environ, PYTHONPATH=str(tree))).stdout
    return orjson.loads(out.strip().splitlines()[-1])


def round_order(names: list[str], round_no: int) -> list[str]:
    """The trees' order in round `round_no`: as given in even rounds, reversed in odd ones, so that each tree runs
    first as often as the other (an even number of rounds)."""
    return list(names) if round_no % 2 == 0 else list(reversed(names))


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main(argv: list[str] | None = None) -> int:
    from app.broker import embedded_broker
    from collectors.bench import DIALECTS
    from collectors.equivalence import extract_commit
    from tokenmeter.settings import free_port

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="a git commit to compare with")
    parser.add_argument("--events", type=int, default=50_000, help="events per dialect and run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dialects", default=",".join(DIALECTS), help=f"comma-separated, of {', '.join(DIALECTS)}")
    args = parser.parse_args(argv)
    dialects = args.dialects.split(",")
    here = Path(__file__).resolve().parent.parent
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="collectors-compare-") as tmp, \
            embedded_broker("127.0.0.1", free_port(), partitions=4) as bootstrap:
        runner = Path(tmp) / "runner.py"
        runner.write_text(_RUNNER)
        trees = {args.against: extract_commit(here, args.against, Path(tmp) / "old"), "this": here}
        best: dict[str, dict[str, dict[str, float]]] = {name: {"wall": {}, "cpu": {}} for name in trees}
        ratios: dict[str, dict[str, list[float]]] = {"wall": {}, "cpu": {}}  # this / the commit, per round
        for round_no in range(args.rounds):
            found = {}
            for name in round_order(list(trees), round_no):
                found[name] = _run(trees[name], runner, bootstrap, args.events, dialects)
                for kind in ("wall", "cpu"):
                    for dialect, rate in found[name][kind].items():
                        best[name][kind][dialect] = max(best[name][kind].get(dialect, 0.0), rate)
                loads.append(os.getloadavg()[0])
            for kind in ("wall", "cpu"):
                for dialect in dialects:
                    ratios[kind].setdefault(dialect, []).append(
                        found["this"][kind][dialect] / found[args.against][kind][dialect])
    old, new = best[args.against], best["this"]
    print(f"load average (1 min) over the rounds: {', '.join(f'{load:.1f}' for load in loads)}")
    for dialect in dialects:
        print(f"{dialect}: per CPU s {old['cpu'][dialect]:,.0f} -> {new['cpu'][dialect]:,.0f} "
              f"({new['cpu'][dialect] / old['cpu'][dialect]:.2f}x, median of rounds "
              f"{_median(ratios['cpu'][dialect]):.2f}x); wall {old['wall'][dialect]:,.0f} -> "
              f"{new['wall'][dialect]:,.0f}/s ({new['wall'][dialect] / old['wall'][dialect]:.2f}x, median of rounds "
              f"{_median(ratios['wall'][dialect]):.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
