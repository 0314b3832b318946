"""(c) alone, as CPU per event: `python -m app.bench_worker [--events 50000] [--rounds 3] [--tree PATH ...]
[--timed-rounds 1] [--in-process] [--tagged 0.5] [--reader-fetch-wait-ms 10] [--format json --format arrow]`.

`tokenmeter bench`'s (c) on its own: per round and per source tree, a fresh `tokenmeter worker` (started from that
tree, as the bench starts it) on one embedded broker; after one warm-up event is priced and the worker's start-up
work is done (the budget owner's heap freeze, `GET /v1/reservations` `gc.frozen_objects`), the bench's events are
encoded as collector micro-batches (before the timer since pipe34: a collector does that in its own process), then
produced and timed until the bench's reader has seen the last one priced (its fetch wait
is 10 ms since worker11: with aiokafka's 500 ms the embedded broker held the last outputs ~0.25 s in about half of
the runs; `--reader-fetch-wait-ms 500` measures the old way). One event never reached the frame path (messages under
400 KB take the dict path), so the first round priced its first full chunks cold; since first33 the worker itself
prices one 8 MB chunk of generated traffic as it starts (TOKENMETER_WORKER_WARM_UP, streams/warm_up.py), ahead of
the warm-up event on its pricing thread. Reports events/s and the worker's CPU per
event (user and system, /proc), with the load average; beside it the CPU per event of the worker's main thread (its
event loop), of the embedded broker and of the bench itself (producer and reader; squeeze27). Trees alternate within each round, so a shared machine's
load hits them alike: compare a branch with an earlier commit (`git archive <commit> | tar -x -C /tmp/base`, then
`--tree /tmp/base --tree .`). Rates per event of worker CPU are steadier than events/s on a loaded machine.
`--timed-rounds K`: each worker timed K times one round after the other (new event ids); the first round stays the
figure, all rounds and their median beside it (as `tokenmeter bench` reports (c) with K = 3 since worker26).

`--in-process`: instead of a worker, the pricing thread's work alone (`streams.batch_overlap._price` per ~8 MB
chunk: the batch step, framing the priced messages, encoding dead letters) on the same traffic, best of 3 passes
in a fresh process per tree and round (trees alternating), as events per CPU second of that process (polars' threads
included; the process has the allocator settings of that tree's worker, whose module it imports first: since
inproc34 pyarrow's too), after one whole pass reported apart (`cold_*`: first plans, imports, lookups learnt, heap grown). The
priced format is the one a worker would send (TOKENMETER_PRICED_FORMAT, Arrow by default; before inproc29 the
child priced JSON unless told), read back from the messages (`format`). `--format json --format arrow`: each tree
with each priced format, all alternating (issue 14, arrow14); `--mixed`: one message of reported-cost events per ~12 (batches the frame path
writes only in part); `--tools 0.01`: that share of events with a billed web search. `--tagged`: the share of events whose attribution carries tags (`{"env": ..., "region": ...}`, as
gateways' metadata becomes tags), for either mode.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.bench import _micro_batches, synthetic_events
from app.broker import embedded_broker
from app.process import child_preexec
from tokenmeter import kafka_inflate, topics
from tokenmeter.priced_wire import count_priced
from tokenmeter.events import partition_key
from tokenmeter.settings import free_port, load_settings


def _cpu(pid: int, thread: int | None = None) -> tuple[float, float]:
    """(user, system) CPU seconds of a process (or of its thread `thread`) so far (Linux /proc)."""
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


async def wait_for_startup(api_port: int, limit: float = 20.0) -> float:
    """Seconds until the worker's start-up work is done (its heap frozen); at most `limit`."""
    began = time.monotonic()
    async with aiohttp.ClientSession() as http:
        while time.monotonic() - began < limit:
            try:
                async with http.get(f"http://127.0.0.1:{api_port}/v1/reservations") as response:
                    if (await response.json()).get("gc", {}).get("frozen_objects"):
                        break
            except (aiohttp.ClientError, ValueError):
                pass
            await asyncio.sleep(0.05)
    return time.monotonic() - began


# The bench's reader of tokenmeter.priced asks the broker to hold an empty fetch this long. The embedded broker
# does not answer a waiting fetch when data arrives (streams/faust_patches.py, patch 1): with aiokafka's default
# 500 ms, a record stored just after the reader had caught up reached it ~0.25 s later (tests/test_bench_reader.py),
# so (c) of 50,000 events stopped 0.2-0.25 s after the worker had finished in about half of the runs (its "two
# modes", docs/rounds/benchmarks.md, worker11). `--reader-fetch-wait-ms 500` gives the definition before.
READER_FETCH_WAIT_MS = 10


def priced_reader(bootstrap: str, fetch_wait_ms: int = READER_FETCH_WAIT_MS) -> AIOKafkaConsumer:
    """The bench's consumer of the worker's output (not started)."""
    kafka_inflate.install()  # as every tokenmeter reader: a batch inflates at most 64x (tokenmeter/kafka_inflate.py)
    return AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8_000_000,
                            fetch_max_wait_ms=fetch_wait_ms)


async def time_worker(bootstrap: str, events: list[dict], pid: int, api_port: int, timeout: float,
                      reader_fetch_wait_ms: int = READER_FETCH_WAIT_MS, rounds: int = 1,
                      broker_pid: int | None = None) -> dict:
    """(c): warm the running worker `pid` up with one event, wait for its start-up work, encode `events` as collector
    micro-batches (untimed since pipe34), then time producing them until the last is priced (seen by `priced_reader`); events/s and the worker's CPU per
    event. With `rounds` > 1 the same events (new ids) are timed that many times, one round after the other on
    the same worker: `events_per_s` stays the first round's, `events_per_s_rounds` and `events_per_s_median` show
    how far one ~1 s round is from the next (docs/rounds/benchmarks.md, worker26: later rounds run ~5 % faster on
    the warmer worker, so the median is not the headline figure)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=4_000_000)
    consumer = priced_reader(bootstrap, reader_fetch_wait_ms)
    await producer.start()
    await consumer.start()
    try:
        await consumer.topics()
        consumer.assign([TopicPartition(topics.PRICED, p) for p in consumer.partitions_for_topic(topics.PRICED) or ()])
        await consumer.seek_to_end()  # earlier rounds' priced events are not this round's

        async def priced_until(target: int, seen: int) -> int:
            deadline = time.monotonic() + timeout
            while seen < target:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker priced only {seen} of {target} events in {timeout:.0f} s")
                batch = await consumer.getmany(timeout_ms=500)
                seen += sum(count_priced(m.value, m.headers) for messages in batch.values() for m in messages)
            return seen

        warmup = dict(events[0], event_id=f"bench-warmup-{time.time_ns()}")
        await producer.send_and_wait(topics.USAGE, orjson.dumps([warmup]), key=partition_key(warmup))
        seen = await priced_until(1, 0)
        settled = await wait_for_startup(api_port)
        n = len(events)
        timed: list[tuple[float, float, float]] = []  # (wall, user, system) per round
        others: list[tuple[float, float, float]] = []  # CPU of the broker, this process (producer, reader) and the
        # worker's event loop, per round
        for round_ in range(rounds):
            batch = events if round_ == 0 else [dict(e, event_id=f"{e['event_id']}-r{round_}") for e in events]
            # encoded before the timer (pipe34, the owner's definition): a collector does it in its own process;
            # inside, it cost ~2.6 CPU-us per event on a core the worker shares. Producing them stays timed.
            encoded = _micro_batches(batch)
            (user, system), started = _cpu(pid), time.perf_counter()
            broker_before, own_before = sum(_cpu(broker_pid)) if broker_pid else 0.0, time.process_time()
            loop_before = sum(_cpu(pid, pid))  # the worker's main thread: its event loop, where every send is built
            await asyncio.gather(*[await producer.send(topics.USAGE, value, key=key) for key, value in encoded])
            seen = await priced_until(seen + n, seen)
            wall = time.perf_counter() - started
            user_after, system_after = _cpu(pid)
            timed.append((wall, user_after - user, system_after - system))
            others.append(((sum(_cpu(broker_pid)) if broker_pid else 0.0) - broker_before,
                           time.process_time() - own_before, sum(_cpu(pid, pid)) - loop_before))
        rates = [round(n / wall) for wall, _, _ in timed]
        _, user_s, system_s = timed[0]
        out = {"events_per_s": rates[0], "worker_cpu_us_per_event": round((user_s + system_s) / n * 1e6, 2),
               "user_us": round(user_s / n * 1e6, 2), "system_us": round(system_s / n * 1e6, 2),
               "startup_wait_s": round(settled, 2), "reader_fetch_wait_ms": reader_fetch_wait_ms,
               "bench_cpu_us_per_event": round(others[0][1] / n * 1e6, 2),
               "worker_loop_cpu_us_per_event": round(others[0][2] / n * 1e6, 2)}
        if broker_pid:  # the broker copies every priced byte twice (in from the worker, out to the reader)
            out["broker_cpu_us_per_event"] = round(others[0][0] / n * 1e6, 2)
        if rounds > 1:
            out |= {"events_per_s_median": round(statistics.median(n / wall for wall, _, _ in timed)),
                    "events_per_s_rounds": rates,
                    "worker_cpu_us_per_event_rounds": [round((u + s) / n * 1e6, 2) for _, u, s in timed]}
        return out
    finally:
        await consumer.stop()
        await producer.stop()


def _broker_pid() -> int | None:
    """The embedded broker this process started (app.broker.embedded_broker), if exactly one."""
    import psutil

    from app.broker import broker_binary
    found = [child.pid for child in psutil.Process().children() if child.exe() == broker_binary()]
    return found[0] if len(found) == 1 else None


def tag(events: list[dict], share: float) -> list[dict]:
    """`share` of the events (every k-th) with tags in their attribution."""
    if share <= 0:
        return events
    step = max(1, round(1 / share))
    for i in range(0, len(events), step):
        events[i]["attribution"] = {**events[i]["attribution"],
                                    "tags": {"env": ("prod", "staging")[i % 2], "region": f"eu-{i % 3}"}}
    return events


# The in-process child (after `tag`'s source): only names every tree since worker5 has (app.bench,
# streams.batch_overlap, streams.columnar).
IN_PROCESS_CHILD = """
import json, os, sys, time
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:30000,muzzy_decay_ms:30000")  # as streams/worker.py
try:  # glibc's thresholds, as streams/worker.py sets them in trees that have streams.allocator
    from streams.allocator import keep_freed_memory
    keep_freed_memory()
except ImportError:
    pass
import streams.worker  # the tree's worker module: its process's allocator settings, set before polars and pyarrow load
from app.bench import _micro_batches, synthetic_events
from streams.batch import RawRecord
from streams.batch_overlap import _price, chunks
from streams.columnar import process_batch_columnar
from streams.pricing import load_price_book
n, rounds, tagged, seed = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
fmt = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] != "-" else None  # the priced format (trees since loader11)
price = (lambda part: _price(process_batch_columnar, part, book)) if fmt is None else (
    lambda part: _price(process_batch_columnar, part, book, fmt))
book = load_price_book()
events = tag(synthetic_events(n, seed=seed), tagged)
tools = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
for event in events[::round(1 / tools)] if tools > 0 else ():  # a billed web search (tool requests)
    event["usage"] = {**event["usage"], "tool_requests": {"web_search": 1}}
values = _micro_batches(events)
if len(sys.argv) > 6 and sys.argv[6] == "mixed":  # one message of reported costs per ~12 (the frame path takes none)
    import orjson
    from streams.columnar.bench import traffic
    extra = traffic(2000, seed=9, reported=0.5)
    extra = [(b"", orjson.dumps(extra[i:i + 250])) for i in range(0, len(extra), 250)]
    values = [v for i, value in enumerate(values) for v in ([value, extra[(i // 12) % len(extra)]] if i % 12 == 5
                                                            else [value])]
    n = sum(v.count(b'"event_id"') for _, v in values)
parts = list(chunks([RawRecord(v, "tokenmeter.usage", i % 4, i) for i, (_, v) in enumerate(values)]))
# the first pass, reported apart as the cold figure: the price table compiled, first polars plans, pyarrow imported,
# every chunk's lookup keys learnt and the heap grown, all of which a running worker has paid long before
cpu, wall = time.process_time(), time.perf_counter()
first = [price(part) for part in parts]
cold = (time.process_time() - cpu, time.perf_counter() - wall)
priced = next(value for _, messages, _ in first for _, value in messages)
written = "json" if priced[:1] in (b"[", b"{") else "arrow"  # what was sent, read from the bytes (an IPC stream)
del first
best = None
for _ in range(rounds):
    cpu, wall = time.process_time(), time.perf_counter()
    for part in parts:
        price(part)
    run = (time.process_time() - cpu, time.perf_counter() - wall)
    best = run if best is None or run < best else best
print(json.dumps({"events_per_cpu_s": round(n / best[0]), "cpu_us_per_event": round(best[0] / n * 1e6, 2),
                  "events_per_s_wall": round(n / best[1]), "chunks": len(parts), "format": written,
                  "cold_cpu_us_per_event": round(cold[0] / n * 1e6, 2), "cold_events_per_s_wall": round(n / cold[1]),
                  "mimalloc_purge_delay": os.environ.get("MIMALLOC_PURGE_DELAY")}))
"""


def _runs(trees: list[str], formats: list[str | None]) -> list[tuple[str, str | None]]:
    return [(tree, fmt) for tree in trees for fmt in formats]


def _name(tree: str, fmt: str | None) -> str:
    return tree if fmt is None else f"{tree} [{fmt}]"


def measure_in_process(trees: list[str], n: int, rounds: int, tagged: float,
                       formats: tuple[str | None, ...] | list[str | None] = (None,), mixed: bool = False,
                       tools: float = 0.0, progress: bool = True) -> dict[str, list[dict]]:
    """The pricing thread's work per tree (and priced format), each round in a fresh process, alternating. A format
    of None is the one a worker started here would send (TOKENMETER_PRICED_FORMAT): until inproc29 the child was
    then left to `_price`'s default argument, JSON, while workers send Arrow by default (arrow19)."""
    formats = [fmt or load_settings().priced_format for fmt in formats]
    results: dict[str, list[dict]] = {_name(*run): [] for run in _runs(trees, formats)}
    for round_ in range(rounds):
        for tree, fmt in _runs(trees, formats):
            load = os.getloadavg()[0]
            child = inspect.getsource(tag) + IN_PROCESS_CHILD  # `tag` from here: an older tree may lack it
            out = subprocess.run([sys.executable, "-c", child, str(n), "3", str(tagged), str(100 + round_),
                                  fmt or "-", "mixed" if mixed else "-", str(tools)],
                                 env=dict(os.environ, PYTHONPATH=tree),
                                 cwd=tree, capture_output=True, text=True, check=True).stdout
            name = _name(tree, fmt)
            results[name].append({**json.loads(out.splitlines()[-1]), "load": round(load, 1)})
            if progress:
                print(json.dumps({"run": name, **results[name][-1]}), file=sys.stderr, flush=True)
    return results


def measure(trees: list[str], n: int, rounds: int, tagged: float = 0.0,
            reader_fetch_wait_ms: int = READER_FETCH_WAIT_MS,
            formats: tuple[str | None, ...] | list[str | None] = (None,), timed_rounds: int = 1
            ) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {_name(*run): [] for run in _runs(trees, formats)}
    with tempfile.TemporaryDirectory() as tmp, embedded_broker("127.0.0.1", free_port(), partitions=4) as bootstrap:
        for round_ in range(rounds):
            for index, (tree, fmt) in enumerate(_runs(trees, formats)):
                events = tag(synthetic_events(n, seed=100 + 10 * round_ + index), tagged)  # new event ids every run
                api_port = free_port()
                env = dict(os.environ, PYTHONPATH=tree, TOKENMETER_KAFKA_BOOTSTRAP=bootstrap, TOKENMETER_DATA_DIR=tmp,
                           TOKENMETER_API_PORT=str(api_port), TOKENMETER_LOG_LEVEL="warning",
                           **({"TOKENMETER_PRICED_FORMAT": fmt} if fmt else {}))
                proc = subprocess.Popen([sys.executable, "-m", "app", "worker"], env=env, cwd=tree,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=child_preexec)
                try:
                    load = os.getloadavg()[0]
                    run = asyncio.run(time_worker(bootstrap, events, proc.pid, api_port, timeout=max(180, n / 500),
                                                  reader_fetch_wait_ms=reader_fetch_wait_ms,
                                                  rounds=timed_rounds, broker_pid=_broker_pid()))
                    name = _name(tree, fmt)
                    results[name].append({**run, "load": round(load, 1)})
                    print(json.dumps({"run": name, **results[name][-1]}), file=sys.stderr, flush=True)
                finally:
                    proc.terminate()
                    proc.wait(30)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tree", action="append", help="source tree to start the worker from (repeat to compare; "
                        "default: this one)")
    parser.add_argument("--in-process", action="store_true", help="the pricing thread's work alone, no worker")
    parser.add_argument("--tagged", type=float, default=0.0, help="share of events with tags in their attribution")
    parser.add_argument("--format", action="append", choices=["json", "arrow"],
                        help="the worker's priced format (TOKENMETER_PRICED_FORMAT; repeat to compare, alternating "
                        "with the trees; default: the environment's)")
    parser.add_argument("--mixed", action="store_true", help="--in-process: add one message of events with a "
                        "provider-reported cost (which the frame path does not take) per ~12 messages")
    parser.add_argument("--tools", type=float, default=0.0, help="--in-process: share of events with a billed web "
                        "search (tool requests: a message holding one is priced on the dict-fed path)")
    parser.add_argument("--reader-fetch-wait-ms", type=int, default=READER_FETCH_WAIT_MS,
                        help="the priced reader's fetch wait (500: aiokafka's default, (c) as measured before worker11)")
    parser.add_argument("--timed-rounds", type=int, default=1, help="(c) timed this many times on each worker, one "
                        "round after the other (the first round is the figure; all rounds and their median beside it, "
                        "as `tokenmeter bench`, which times 3)")
    args = parser.parse_args(argv)
    trees = [str(Path(t).resolve()) for t in (args.tree or [Path(__file__).resolve().parent.parent])]
    formats: list[str | None] = list(args.format or [None])
    if args.in_process:
        print(json.dumps(measure_in_process(trees, args.events, args.rounds, args.tagged, formats, args.mixed,
                                            args.tools), indent=2))
    else:
        print(json.dumps(measure(trees, args.events, args.rounds, args.tagged, args.reader_fetch_wait_ms, formats,
                                 args.timed_rounds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
