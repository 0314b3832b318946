"""(c) alone, as CPU per event: `python -m app.bench_worker [--events 50000] [--rounds 3] [--tree PATH ...]`.

`tokenmeter bench`'s (c) on its own: per round and per source tree, a fresh `tokenmeter worker` (started from that
tree, as the bench starts it) on one embedded broker; after one warm-up event is priced and the worker's start-up
work is done (the budget owner's heap freeze, `GET /v1/reservations` `gc.frozen_objects`), the bench's events are
produced as collector micro-batches and timed until the last is priced. Reports events/s and the worker's CPU per
event (user and system, /proc), with the load average. Trees alternate within each round, so a shared machine's
load hits them alike: compare a branch with an earlier commit (`git archive <commit> | tar -x -C /tmp/base`, then
`--tree /tmp/base --tree .`). Rates per event of worker CPU are steadier than events/s on a loaded machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
from tokenmeter import topics
from tokenmeter.events import partition_key
from tokenmeter.settings import free_port


def _cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
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


async def time_worker(bootstrap: str, events: list[dict], pid: int, api_port: int, timeout: float) -> dict:
    """(c): warm the running worker `pid` up with one event, wait for its start-up work, then time producing `events`
    as collector micro-batches until the last is priced; events/s and the worker's CPU per event."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=4_000_000)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=8_000_000)
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
                seen += sum(len(orjson.loads(m.value)) for messages in batch.values() for m in messages)
            return seen

        warmup = dict(events[0], event_id=f"bench-warmup-{time.time_ns()}")
        await producer.send_and_wait(topics.USAGE, orjson.dumps([warmup]), key=partition_key(warmup))
        seen = await priced_until(1, 0)
        settled = await wait_for_startup(api_port)
        (user, system), started = _cpu(pid), time.perf_counter()
        await asyncio.gather(*[await producer.send(topics.USAGE, value, key=key) for key, value in _micro_batches(events)])
        await priced_until(len(events) + 1, seen)
        wall = time.perf_counter() - started
        user_after, system_after = _cpu(pid)
        n = len(events)
        return {"events_per_s": round(n / wall), "worker_cpu_us_per_event": round((user_after - user + system_after
                                                                                    - system) / n * 1e6, 2),
                "user_us": round((user_after - user) / n * 1e6, 2), "system_us": round((system_after - system) / n * 1e6, 2),
                "startup_wait_s": round(settled, 2)}
    finally:
        await consumer.stop()
        await producer.stop()


def measure(trees: list[str], n: int, rounds: int) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {tree: [] for tree in trees}
    with tempfile.TemporaryDirectory() as tmp, embedded_broker("127.0.0.1", free_port(), partitions=4) as bootstrap:
        for round_ in range(rounds):
            for index, tree in enumerate(trees):
                events = synthetic_events(n, seed=100 + 10 * round_ + index)  # new event ids every run
                api_port = free_port()
                env = dict(os.environ, PYTHONPATH=tree, TOKENMETER_KAFKA_BOOTSTRAP=bootstrap, TOKENMETER_DATA_DIR=tmp,
                           TOKENMETER_API_PORT=str(api_port), TOKENMETER_LOG_LEVEL="warning")
                proc = subprocess.Popen([sys.executable, "-m", "app", "worker"], env=env, cwd=tree,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=child_preexec)
                try:
                    load = os.getloadavg()[0]
                    run = asyncio.run(time_worker(bootstrap, events, proc.pid, api_port, timeout=max(180, n / 500)))
                    results[tree].append({**run, "load": round(load, 1)})
                    print(json.dumps({"tree": tree, **results[tree][-1]}), file=sys.stderr, flush=True)
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
    args = parser.parse_args(argv)
    trees = [str(Path(t).resolve()) for t in (args.tree or [Path(__file__).resolve().parent.parent])]
    print(json.dumps(measure(trees, args.events, args.rounds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
