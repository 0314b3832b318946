"""In-process collector speed: the Kafka bridge's conversion of fetched batches plus the sink's encoding, in events
per CPU second, per dialect, for this checkout and (optionally) a git commit, rounds alternating the two trees.

What is timed is what `tokenmeter collect kafka` does between a fetch and the produce (`KafkaBridge._convert`,
then `encode_batches`) over `collectors.bench.gateway_records` (the bench's records: Kong kafka-log arrays of 50,
OTel protobuf TracesData of 20 spans, one APISIX entry / LiteLLM payload per record, canonical arrays of 50) in
fetches of 1,000 records. No broker: the Kafka client's own work and the waits are `tokenmeter bench`'s part.
Each tree runs in a subprocess of its own (a `git archive` of the commit), so both import their own code; the
best of the rounds counts (the machine is shared: the slowest rounds measure the neighbours).

    python -m collectors.bench_inproc --against 28105a9 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Runs in this checkout and, as a script, in an old one: only the API both have.
_RUNNER = r'''
import gc, sys, time
from collections import namedtuple
from aiokafka.structs import TopicPartition
from collectors.bench import gateway_records
from collectors.kafka_bridge import KafkaBridge
from collectors.sink import KafkaSink, encode_batches

Message = namedtuple("Message", "offset value")


def rate(dialect, n, chunk=1000):
    values, _ = gateway_records(dialect, n, "inproc")
    sink = KafkaSink("127.0.0.1:9", "collect-kafka")
    bridge = KafkaBridge("127.0.0.1:9", "source", dialect, "group", sink)
    tp = TopicPartition("source", 0)
    batches = [{tp: [Message(s + i, v) for i, v in enumerate(values[s:s + chunk])]}
               for s in range(0, len(values), chunk)]
    gc.collect()
    started, events = time.process_time(), 0
    for batch in batches:
        converted, _ = bridge._convert(batch)
        encode_batches(converted)
        events += len(converted)
    spent = time.process_time() - started
    if events != n:
        raise SystemExit(f"{dialect}: {events} events of {n}")
    return n / spent


if __name__ == "__main__":
    n = int(sys.argv[1])
    for dialect in sys.argv[2:]:
        print(dialect, rate(dialect, n), flush=True)
'''


def _rates(tree: Path, n: int, dialects: list[str], runner: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, str(runner), str(n), *dialects], cwd=tree, check=True, text=True,
                         capture_output=True, env=dict(os.environ, PYTHONPATH=str(tree))).stdout
    return {line.split()[0]: float(line.split()[1]) for line in out.splitlines() if line.strip()}


def main(argv: list[str] | None = None) -> int:
    from collectors.bench import DIALECTS
    from collectors.equivalence import extract_commit

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="events per dialect and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", default=None, help="a git commit to compare with (default: this tree alone)")
    parser.add_argument("--dialects", default=",".join(("canonical", "kong", "otel", "apisix", "litellm")),
                        help=f"comma-separated, of {', '.join(DIALECTS)}")
    args = parser.parse_args(argv)
    dialects = args.dialects.split(",")
    here = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="collectors-inproc-") as tmp:
        runner = Path(tmp) / "runner.py"
        runner.write_text(_RUNNER)
        trees = {"this": here}
        if args.against:
            trees = {args.against: extract_commit(here, args.against, Path(tmp) / "old"), "this": here}
        best: dict[str, dict[str, float]] = {name: {} for name in trees}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                for dialect, rate in _rates(tree, args.events, dialects, runner).items():
                    best[name][dialect] = max(best[name].get(dialect, 0.0), rate)
    for dialect in dialects:
        line = f"{dialect}: " + ", ".join(f"{name} {best[name][dialect]:,.0f}" for name in trees)
        if args.against:
            line += f" events per CPU s; ratio {best['this'][dialect] / best[args.against][dialect]:.2f}x"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
