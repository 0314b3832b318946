"""In-process throughput of the two batch paths on the same records, side by side in one run:
`python -m streams.columnar.bench [--events 200000] [--batch-events 10000] [--rounds 3] [--correlated 0.5]
[--reported 0.1]`.

Traffic is what collectors send the worker: micro-batches of up to 500 canonical events (unique ids and
microsecond timestamps, a mix of models and usage kinds, a few unknown models). Runs alternate old/new so a
shared machine's load hits both alike; report the ratio first, absolute rates second. Rates per CPU
second of this process are steadier than wall-clock rates when other processes compete for the cores.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import orjson

from streams.batch import RawRecord, process_batch
from streams.pricing import load_price_book

from .pipeline import process_batch_columnar

MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5"),
          ("gemini", "gemini-2.5-flash"), ("bedrock", "us.anthropic.claude-3-5-haiku-20241022-v1:0"),
          ("azure", "gpt-4.1"), ("openai", "o3"), ("openrouter", "some/unknown-model")]


def traffic(n: int, seed: int = 7, correlated: float = 0.0, reported: float = 0.0) -> list[dict]:
    """`correlated`: the share of events carrying cross-source ids as the OTel (response, trace and span id, with
    a span's fractional latency) and LiteLLM (response id) collectors write them; `reported`: the share with a provider-reported cost (OpenRouter's
    usage.cost, as decimal text)."""
    rng = random.Random(seed)
    ids = random.Random(seed + 1)  # its own stream: the rest of the traffic is the same whatever `correlated` is
    start = datetime.now(timezone.utc) - timedelta(hours=6)
    events = []
    for i in range(n):
        provider, model = MODELS[i % len(MODELS)]
        inp = rng.randint(100, 20_000)
        out = rng.randint(10, 2000)
        usage = {"input_tokens": inp, "cached_input_tokens": inp // 4 if i % 3 else 0, "output_tokens": out}
        if provider == "anthropic" and i % 5 == 0:
            usage["cache_write_tokens"] = inp // 8
        if model == "o3":
            usage["reasoning_tokens"] = out // 2
        ts = start + timedelta(microseconds=rng.randrange(6 * 3600 * 10**6))
        event = {"event_id": str(uuid.UUID(int=rng.getrandbits(128))),
                 "ts": ts.isoformat().replace("+00:00", "Z"), "source": "bench", "provider": provider, "model": model,
                 "attribution": {"org": "acme", "team": f"team-{i % 12}", "user": f"user-{i % 97}"},
                 "usage": usage, "latency_ms": rng.randint(100, 9000)}
        if i % 10 == 0:
            event["service_tier"] = "priority" if i % 20 else "flex"
        if i % 50 == 0:
            event["batch"] = True
        if correlated and ids.random() < correlated:
            response_id = f"chatcmpl-{ids.getrandbits(96):024x}"
            event["correlation"] = ({"response_id": response_id} if i % 2 else
                                    {"response_id": response_id, "trace_id": f"{ids.getrandbits(128):032x}",
                                     "span_id": f"{ids.getrandbits(64):016x}"})
            if not i % 2:  # an OTel span's latency: (end - start) nanoseconds / 1e6, rarely integral
                event["latency_ms"] = ids.randrange(10**8, 10**10) / 1e6
        if reported and ids.random() < reported:
            event["reported_cost_usd"] = f"{ids.random() * 0.05:.{ids.randint(4, 10)}f}"
        events.append(event)
    return events


def records_of(events: list[dict], per_message: int = 500, partitions: int = 12) -> list[RawRecord]:
    return [RawRecord(orjson.dumps(events[i:i + per_message]), "tokenmeter.usage", (i // per_message) % partitions,
                      i // per_message) for i in range(0, len(events), per_message)]


def _time(fn, batches, book) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: all its threads, so polars' worker threads count too)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        fn(batch, book)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-events", type=int, default=10_000, help="events per process_batch call")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--correlated", type=float, default=0.0,
                        help="share of events with correlation ids (OTel spans and LiteLLM payloads carry them)")
    parser.add_argument("--reported", type=float, default=0.0,
                        help="share of events with a provider-reported cost (OpenRouter's usage.cost)")
    args = parser.parse_args(argv)
    book = load_price_book()
    records = records_of(traffic(args.events, correlated=args.correlated, reported=args.reported))
    per_batch = max(1, args.batch_events // 500)
    batches = [records[i:i + per_batch] for i in range(0, len(records), per_batch)]
    process_batch_columnar(batches[0], book)  # compile the price table and warm caches, as a running worker has
    process_batch(batches[0], book)
    old_s, new_s = [], []
    for _ in range(args.rounds):
        old_s.append(_time(process_batch, batches, book))
        new_s.append(_time(process_batch_columnar, batches, book))
    old_wall, new_wall = (args.events / min(s[0] for s in runs) for runs in (old_s, new_s))
    old_cpu, new_cpu = (args.events / min(s[1] for s in runs) for runs in (old_s, new_s))
    report = {"events": args.events, "correlated": args.correlated, "reported": args.reported, "batch_events": args.batch_events, "rounds": args.rounds,
              "ratio_wall": round(new_wall / old_wall, 2), "ratio_cpu": round(new_cpu / old_cpu, 2),
              "old_events_per_s_wall": round(old_wall), "columnar_events_per_s_wall": round(new_wall),
              "old_events_per_cpu_s": round(old_cpu), "columnar_events_per_cpu_s": round(new_cpu)}
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
