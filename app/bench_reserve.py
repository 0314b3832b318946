"""Bench figures for admission by reservation (issue 15): `POST /v1/reservations` latency at an offered rate of
2,000 reservations/s (open loop: requests are sent on schedule whether or not earlier ones were answered, so a
slow answer cannot hide behind a slower client), and the throughput of 8 concurrent clients (closed loop).

Each reservation prices its worst case, matches the bench budget, is decided by the budget's owner and its hold is
written to `tokenmeter.budget-holds` and acknowledged before the answer: the figures include that write.

Standalone: `python -m app.bench_reserve` starts its own embedded broker and worker and prints JSON.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

from aiohttp import ClientSession

from app.bench_alerts import _percentile
from app.loop_trace import TRACE_SIGNAL
from app.reserve_tail import breakdown

BENCH_TEAM = "bench-reserve"


def _body(i: int) -> dict:
    return {"provider": "openai", "model": "gpt-4o-mini", "attribution": {"org": "bench", "team": BENCH_TEAM},
            "prompt_tokens": 1000 + i % 500, "max_output_tokens": 256, "request_id": f"bench-{uuid.uuid4().hex}"}


async def _wait_admitting(url: str, timeout: float = 120.0) -> None:
    """Until a bench reservation is admitted AND held on the bench budget. A 201 alone is not enough: before the
    worker has read the new definition no budget matches, so the call is admitted holding nothing, and the next
    ~0.7 s (the new budget's restore) answer 503 "not owned here (yet)": 1,000-1,400 of the bench's requests
    failed so inside `tokenmeter bench`, whose worker already ran with other budgets."""
    deadline = time.monotonic() + timeout
    async with ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.post(url, json=_body(0)) as resp:
                    held = (await resp.json()).get("holds", []) if resp.status == 201 else []
                    if any(hold.get("budget") == "bench-reserve" for hold in held):
                        return
            except OSError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the worker never admitted a bench reservation")


class OpenLoop:
    """What one open-loop run measured, per request: from its scheduled time to the answer (`latencies`), from
    its write to the socket (`round_trips`: without the client's own lateness), how late the client wrote it
    (`lateness`), and the worker's own time for it (`server`, from the answer's `Server-Timing` header); failures,
    the rate achieved, the client's CPU seconds (it shares the machine's cores with the worker and the broker) and
    its own event loop's lag (looplag.py)."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.dues: list[float] = []  # each request's scheduled time, seconds from the open loop's start
        self.round_trips: list[float] = []
        self.lateness: list[float] = []
        self.server: list[float] = []
        self.failures: dict[str, str] = {}
        self.achieved = 0.0
        self.client_cpu_s = 0.0
        self.seconds = 0.0
        self.client_loop_lag: dict = {}
        self.client_gc: list[int] = []  # the client's cyclic-GC collections per generation during the run
        # per answered request: (due, sent, answered) on this machine's CLOCK_MONOTONIC, and the worker's
        # Server-Timing metrics (ms; `start` in s on the same clock) when it gave its phases (TIMING_HEADER)
        self.timed: list[tuple[float, float, float, dict[str, float]]] = []


CLIENTS = ("lean", "streams")  # the first is the default; "streams" is the client of reserve5/reserve6
_SERVER_TIMING = b"Server-Timing: reserve;dur="


def _server_timing(head: bytes) -> dict[str, float]:
    """The answer's Server-Timing metrics: {name: dur ms}, and `start` (its desc, seconds) when given."""
    at = head.find(_SERVER_TIMING)
    if at < 0:
        return {}
    at += len(_SERVER_TIMING) - len(b"reserve;dur=")
    end = head.find(b"\r\n", at)
    metrics = {}
    for metric in head[at:end if end >= 0 else len(head)].decode().split(","):
        name, _, param = metric.strip().partition(";")
        key, _, value = param.partition("=")
        metrics[name] = float(value.strip('"')) if key in ("dur", "desc") and value else 0.0
    return metrics


def _content_length(head: bytes) -> int:
    at = head.lower().find(b"\r\ncontent-length:")
    end = head.find(b"\r\n", at + 2)
    return int(head[at + 17:end if end >= 0 else len(head)])


class _Recorder:
    """Files one answer into an OpenLoop (both clients share it, so they count the same things)."""

    def __init__(self, out: OpenLoop) -> None:
        self.out = out
        self.started = 0.0  # the open loop's start (perf_counter), set when it starts
        self.failures: dict[str, int] = {}  # answer status (e.g. '503') -> count
        self.reasons: dict[str, str] = {}  # answer status -> its first body

    def answer(self, due: float, sent: float, answered: float, head: bytes, body: bytes) -> None:
        out = self.out
        out.latencies.append((answered - due) * 1000)
        out.dues.append(due - self.started)
        out.round_trips.append((answered - sent) * 1000)
        out.lateness.append((sent - due) * 1000)
        timing = _server_timing(head)
        if "reserve" in timing:
            out.server.append(timing["reserve"])
        out.timed.append((due, sent, answered, timing))
        if not head.startswith(b"HTTP/1.1 201"):
            status = head[9:12].decode(errors="replace")
            self.failures[status] = self.failures.get(status, 0) + 1
            self.reasons.setdefault(status, body[:300].decode(errors="replace"))

    def close(self) -> None:
        self.out.failures = {status: f"{n}: {self.reasons[status]}" for status, n in self.failures.items()}


class _LeanConnection(asyncio.Protocol):
    """One keep-alive connection of the lean client: the request is written from the sender's own step (no queue,
    no task to wake), and the answer is parsed from the bytes as they arrive (no StreamReader, no task per
    connection): the least Python per request a client in this language can spend, as a gateway's Lua or Go
    client would spend less still."""

    def __init__(self, pool: "_LeanPool") -> None:
        self.pool = pool
        self.buffer = bytearray()
        self.head: bytes | None = None
        self.length = 0
        self.due = self.sent = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, due: float, payload: bytes) -> None:
        self.due, self.sent = due, time.perf_counter()
        self.transport.write(payload)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while True:
            if self.head is None:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                self.head = bytes(buffer[:end])
                del buffer[:end + 4]
                self.length = _content_length(self.head)
            if len(buffer) < self.length:
                return
            body = bytes(buffer[:self.length])
            del buffer[:self.length]
            head, self.head = self.head, None
            self.pool.answered(self, head, body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.lost(exc)


class _LeanPool:
    def __init__(self, recorder: _Recorder, total: int) -> None:
        self.recorder = recorder
        self.idle: list[_LeanConnection] = []
        self.waiting: collections.deque = collections.deque()  # (due, payload) while every connection is busy
        self.left = total
        self.done = asyncio.get_running_loop().create_future()

    def send(self, due: float, payload: bytes) -> None:
        if self.idle:
            self.idle.pop().send(due, payload)
        else:  # its latency runs from `due` all the same: waiting for a connection counts (open loop)
            self.waiting.append((due, payload))

    def answered(self, connection: _LeanConnection, head: bytes, body: bytes) -> None:
        self.recorder.answer(connection.due, connection.sent, time.perf_counter(), head, body)
        if self.waiting:
            connection.send(*self.waiting.popleft())
        else:
            self.idle.append(connection)
        self.left -= 1
        if self.left == 0 and not self.done.done():
            self.done.set_result(None)

    def lost(self, exc: Exception | None) -> None:
        if self.left and not self.done.done():
            self.done.set_exception(ConnectionError(f"a bench connection closed mid-run: {exc}"))


async def _open_loop(url: str, rate: float, seconds: float, connections: int = 64, client: str = "lean") -> OpenLoop:
    """Requests leave on schedule (the i-th at start + i / rate) over `connections` keep-alive connections; a
    request's latency runs from its scheduled time, so waiting for a free connection counts (open loop). A
    minimal HTTP/1.1 client: aiohttp's own cost per request would cap what one Python process can offer.
    `client`: "lean" (asyncio protocols, the request written from the sender's step) or "streams" (a task per
    connection fed through a queue, StreamReader parsing: the client before reserve7)."""
    from urllib.parse import urlsplit

    from streams.budgets.looplag import LoopLagProbe
    from streams.budgets.reservations import TIMING_HEADER

    parts = urlsplit(url)
    out = OpenLoop()
    recorder = _Recorder(out)

    def request_bytes(i: int) -> bytes:
        body = json.dumps(_body(i)).encode()
        return (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
                f"{TIMING_HEADER}: phases\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body

    payloads = [request_bytes(i) for i in range(int(rate * seconds))]  # built before the clock starts
    loop = asyncio.get_running_loop()
    if client == "lean":
        pool = _LeanPool(recorder, len(payloads))
        for _ in range(connections):
            _transport, protocol = await loop.create_connection(lambda: _LeanConnection(pool), parts.hostname,
                                                                parts.port)
            pool.idle.append(protocol)
        submit, finish = pool.send, pool.done
    else:
        queue: asyncio.Queue = asyncio.Queue()

        async def connection() -> None:
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            try:
                while True:
                    item = await queue.get()
                    if item is None:
                        return
                    due, payload = item
                    sent = time.perf_counter()
                    writer.write(payload)
                    head = await reader.readuntil(b"\r\n\r\n")
                    answer = await reader.readexactly(_content_length(head[:-2]))
                    recorder.answer(due, sent, time.perf_counter(), head[:-2], answer)
            finally:
                writer.close()

        workers = [asyncio.create_task(connection()) for _ in range(connections)]
        submit = lambda due, payload: queue.put_nowait((due, payload))  # noqa: E731

        async def drain() -> None:
            for _ in workers:
                queue.put_nowait(None)
            await asyncio.gather(*workers)

        finish = None
    probe = LoopLagProbe()
    probe.start()
    collections = [g["collections"] for g in gc.get_stats()]
    cpu_started = time.process_time()
    started = recorder.started = time.perf_counter()
    sent = 0
    while sent < len(payloads):
        due_now = min(len(payloads), int((time.perf_counter() - started) * rate) + 1)
        while sent < due_now:
            submit(started + sent / rate, payloads[sent])
            sent += 1
        # until the next request is due (the loop wakes at millisecond resolution); a fixed 2 ms tick made each
        # request leave ~1 ms after its scheduled time on average, which its latency counted
        await asyncio.sleep(max(0.0, started + sent / rate - time.perf_counter()))
    if finish is not None:
        await finish
        for connection in pool.idle:
            connection.transport.close()
    else:
        await drain()
    out.seconds = time.perf_counter() - started
    out.achieved = len(payloads) / out.seconds
    out.client_cpu_s = time.process_time() - cpu_started
    out.client_gc = [g["collections"] - c for g, c in zip(gc.get_stats(), collections)]
    await probe.stop()
    out.client_loop_lag = probe.summary()
    recorder.close()
    return out


def _open_loop_figures(run: OpenLoop, worker_lag: dict, prefix: str = "reserve_") -> dict:
    """The figures of one open loop; the worker's side (`server`) and what lies outside it per request (the
    round trip less the worker's time: both event loops, the client's and the worker's HTTP code, the kernel)."""
    outside = [rt - sv for rt, sv in zip(run.round_trips, run.server)] if len(run.server) == len(run.round_trips) else []
    figures = {
        "latency_p50_ms": round(statistics.median(run.latencies), 3),
        "latency_p99_ms": round(_percentile(run.latencies, 99), 3),
        "round_trip_p50_ms": round(statistics.median(run.round_trips), 3),
        "round_trip_p99_ms": round(_percentile(run.round_trips, 99), 3),
        "client_lateness_p50_ms": round(statistics.median(run.lateness), 3),
        "client_lateness_p99_ms": round(_percentile(run.lateness, 99), 3),
        "client_cpu_ms": round(run.client_cpu_s / len(run.latencies) * 1000, 4),
        "client_loop_lag_p99_ms": run.client_loop_lag.get("p99"),
        "client_gc_collections": run.client_gc,
        "offered_per_s": round(run.achieved, 1),
        # the p99 of each second of the open loop (by scheduled time): whether the tail is spread or one moment's
        "latency_p99_ms_by_second": _p99_by_second(run),
        "failures": sum(int(v.split(":", 1)[0]) for v in run.failures.values()),
        "failures_by_status": run.failures,
    }
    if run.server:
        figures.update({"open_loop_server_p50_ms": round(statistics.median(run.server), 3),
                        "open_loop_server_p99_ms": round(_percentile(run.server, 99), 3)})
    if outside:
        figures.update({"outside_worker_p50_ms": round(statistics.median(outside), 3),
                        "outside_worker_p99_ms": round(_percentile(outside, 99), 3)})
    if worker_lag.get("samples"):
        figures.update({"worker_loop_lag_p50_ms": worker_lag["p50"], "worker_loop_lag_p99_ms": worker_lag["p99"],
                        "worker_loop_lag_max_ms": worker_lag["max"], "worker_loop_stalls": worker_lag["stalls"],
                        "worker_stall_on_cpu_pct": worker_lag["stall_on_cpu_pct"],
                        "worker_stall_cpu_max_ms": worker_lag.get("stall_cpu_max_ms")})
    return {prefix + key: value for key, value in figures.items()}


def _p99_by_second(run: OpenLoop) -> list[float]:
    seconds: dict[int, list[float]] = collections.defaultdict(list)
    for due, latency in zip(run.dues, run.latencies):
        seconds[int(due)].append(latency)
    return [round(_percentile(seconds[i], 99), 2) for i in sorted(seconds)]


async def _closed_loop(url: str, requests: int, clients: int = 8) -> float:
    async with ClientSession() as session:
        async def client(n: int) -> None:
            for i in range(n):
                async with session.post(url, json=_body(i)) as resp:
                    await resp.read()

        t0 = time.perf_counter()
        await asyncio.gather(*[client(requests // clients) for _ in range(clients)])
        return (requests // clients * clients) / (time.perf_counter() - t0)


def usage_traffic_main(bootstrap: str, rate: float, seconds: float, framed: float = 0, announce: float = 0) -> None:
    """Usage events to `tokenmeter.usage` at `rate` per second for `seconds` (one event per message, as a gateway
    producing directly sends them; fresh event ids), so the worker prices usage on the same event loop while it
    admits (`--usage-rate`). `framed` (`--usage-framed`): instead, the events of each 10 ms tick grouped by
    partition key into JSON arrays, as the collectors send them (collectors/sink.py). `announce`: print "flowing"
    once the first tick's events are acknowledged, so the bench can start its open loop on usage already flowing
    (events are generated for one second and sent again with fresh ids after that). Run as a child process: its
    Python must not share the bench client's core time."""
    from collections import defaultdict

    import orjson
    from aiokafka import AIOKafkaProducer

    from app.bench import synthetic_events
    from tokenmeter import microbatch, topics
    from tokenmeter.events import partition_key

    def messages(events: list[dict]) -> list[tuple[bytes, bytes]]:
        if not framed:
            return [(partition_key(event), orjson.dumps(event)) for event in events]
        groups: dict[bytes, list[bytes]] = defaultdict(list)
        for event in events:
            groups[partition_key(event)].append(orjson.dumps(event))
        return [(key, value) for key, encoded in groups.items() for value in microbatch.frame(encoded)]

    async def run() -> None:
        total = int(rate * seconds)
        events = synthetic_events(min(total, int(rate) + 1) if announce else total, seed=int(time.time_ns() % 2**31))
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        try:
            started, sent, pending = time.perf_counter(), 0, []
            while sent < total:
                due = min(total, int((time.perf_counter() - started) * rate) + 1)
                tick = [events[i % len(events)] if i < len(events) else
                        dict(events[i % len(events)], event_id=str(uuid.uuid4())) for i in range(sent, due)]
                for key, value in messages(tick):
                    pending.append(await producer.send(topics.USAGE, value, key=key))
                if announce and not sent:
                    await asyncio.gather(*pending)
                    print("flowing", flush=True)
                sent = due
                await asyncio.sleep(0.01)
            await asyncio.gather(*pending)
        finally:
            await producer.stop()

    asyncio.run(run())


PROBE_TOPIC = "tokenmeter.bench-broker-probe"  # the probe's records: not a topic the worker reads
PROBE_RATE = 200  # acknowledgements per second the broker probe asks for, one at a time (a tenth of the holds' rate)


def broker_probe_main(bootstrap: str, rate: float, seconds: float) -> None:
    """One hold-sized record at a time (acks=all, no linger: the holds' producer settings), each acknowledged before
    the next, at `rate` per second for `seconds`; prints the acknowledgements' p50 / p99 (ms) as JSON. Run beside
    the open loop (`--broker-probe`) in a process of its own, it is what the broker takes to acknowledge while the
    worker's holds and usage flow: the worker's `hold_ack` less this is queueing inside the worker (its event loop
    and threads, aiokafka's one produce request in flight per connection)."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    value = json.dumps({"reservation_id": "r" * 17, "budget": "bench-reserve", "request_id": "q" * 37,
                        "amount": "0.000406", "created_at": "2026-12-05T12:00:00.000000+00:00",
                        "expires_at": "2026-12-05T12:15:00.000000+00:00"}).encode()

    async def run() -> list[float]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(PROBE_TOPIC, num_partitions=1, replication_factor=1)])
        except TopicAlreadyExistsError:
            pass
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all", enable_idempotence=False)
        await producer.start()
        acks: list[float] = []
        try:
            started = time.perf_counter()
            while time.perf_counter() - started < seconds:
                sent = time.perf_counter()
                await (await producer.send(PROBE_TOPIC, value, key=b"bench-reserve|probe"))
                acks.append((time.perf_counter() - sent) * 1000)
                await asyncio.sleep(max(0.0, started + len(acks) / rate - time.perf_counter()))
        finally:
            await producer.stop()
        return acks

    acks = asyncio.run(run())
    print(json.dumps({"p50": round(statistics.median(acks), 3), "p99": round(_percentile(acks, 99), 3),
                      "count": len(acks)}))


def _start_child(function: str, *args: object, stdout: Any = None) -> Any:  # noqa: ANN401
    """`function` of this module in a child process (its Python must not share the bench client's core time)."""
    return subprocess.Popen([sys.executable, "-c", f"import sys; from app.bench_reserve import {function}; "
                             f"{function}(sys.argv[1], *map(float, sys.argv[2:]))", *map(str, args)],
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
                            stdout=stdout or subprocess.DEVNULL)


def _thread_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU time so far of each thread of a process (Linux /proc/<pid>/task), by thread id."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[int(tid)] = _cpu_seconds(pid, f"task/{tid}/stat")
        except OSError:  # ended meanwhile
            pass
    return out


def _cpu_seconds(pid: int, stat: str = "stat") -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = open(f"/proc/{pid}/{stat}").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _runqueue_wait_s(pid: int | None) -> float | None:
    """Seconds the process's main thread (the worker's event loop) has spent runnable, waiting for a core (Linux
    /proc/<pid>/schedstat, second field); None where that is not available."""
    try:
        return int(open(f"/proc/{pid}/schedstat").read().split()[1]) / 1e9 if pid else None
    except (OSError, IndexError, ValueError):
        return None


USAGE_WARM_MAX_S = 120.0  # the usage producer's longest run with a warm start (it is stopped after the open loop)


def _events_priced(stats_url: str) -> int:
    try:
        return int(_status(stats_url).get("events_in", 0))
    except (OSError, ValueError):
        return 0


def _wait_usage_flowing(traffic: subprocess.Popen, stats_url: str, rate: float, timeout: float = 60.0) -> None:
    """Until the usage producer has its first events acknowledged (its "flowing" line) and the worker that prices
    them has priced half a second of them since: the open loop then measures reservations beside usage in its steady
    state, not the producer's start-up (a Python process importing and generating events) nor the pricing worker's
    first batches, which the bench before reserve10 put into the open loop's first second."""
    line = traffic.stdout.readline()
    if line.strip() != b"flowing":
        raise RuntimeError(f"the usage producer did not start (said {line!r})")
    before, deadline = _events_priced(stats_url), time.monotonic() + timeout
    while _events_priced(stats_url) - before < rate / 2:
        if time.monotonic() > deadline:
            raise RuntimeError("the worker never priced the bench's usage")
        time.sleep(0.05)


def measure_reservations(bootstrap: str, api_port: int, rate: float = 2000, seconds: float = 5.0,
                         requests: int = 8000, worker_pid: int | None = None, other_budgets: int = 0,
                         broker_pid: int | None = None, profile: str | None = None,
                         clients: tuple[str, ...] = CLIENTS[:1], usage_rate: float = 0,
                         broker_probe: bool = False, usage_framed: bool = False, pricing_pid: int | None = None,
                         usage_stats_url: str | None = None, trace_loop: str | None = None) -> dict:
    """Against a started worker: defines the bench budget (a limit no bench reaches), then measures. With the
    worker's pid, also its CPU time per reservation in the closed loop (`reserve_worker_cpu_ms`): unlike the
    latencies, a figure the other load on the machine hardly changes, so runs compare across loads.
    `other_budgets`: that many more budgets (other teams') defined, which no bench reservation matches. With the
    broker's pid, its CPU per reservation too (`reserve_broker_cpu_ms`: it shares the cores). `profile`: the worker
    runs under `_PROFILED_WORKER`; its cProfile of the closed loop is written to that path. `clients`: the open-loop
    clients (CLIENTS) run in turn, back to back; the `reserve_*` figures are the first's, and with more than one each
    client's are also under `reserve_<client>_client_*`. `pricing_pid`: the pricing worker beside a budgets-role
    worker (`--roles split`), whose CPU over the open loop is reported too. `usage_stats_url`: the `/v1/stats` of the
    worker that prices the usage; with it the usage flows, and is priced, before the open loop starts (otherwise the
    producer starts with the open loop, as before reserve10). `trace_loop`: the worker runs under `_TRACED_WORKER`
    (app/loop_trace.py), traced during the first client's open loop into that path; what it ran during the slowest
    reservations is in `reserve_slowest_*` beside their phases (app/reserve_tail.py)."""
    from streams.budgets import parse_budget, write_budgets

    others = [parse_budget({"name": f"bench-other-{i}", "scope": {"team": f"bench-other-{i}"}, "period": "month",
                            "limit": "1000", "action": "block"}) for i in range(other_budgets)]
    write_budgets(bootstrap, [parse_budget({"name": "bench-reserve", "scope": {"team": BENCH_TEAM}, "period": "month",
                                            "limit": "1000000000", "action": "block"}), *others])
    url = f"http://127.0.0.1:{api_port}/v1/reservations"
    asyncio.run(_wait_admitting(url))
    asyncio.run(_closed_loop(url, 800))  # warm-up: connections, the hold producer, the tokenizer caches
    # the client's own heap (aiohttp, the app's modules) out of its cyclic GC, as the worker's is: a full
    # collection would pause the client mid-run and count as reservation latency; and its young generation
    # collected as seldom as the worker's (GC_YOUNG_THRESHOLD): the client's requests in flight burst as the worker's do
    from streams.budgets.reservations import GC_YOUNG_THRESHOLD

    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
    figures: dict = {}
    try:
        for client in clients:  # each client in turn against the same worker (`--clients lean,streams`)
            traffic = usage_cpu_before = None
            if usage_rate and usage_stats_url:  # usage flowing, and priced, before the open loop starts
                traffic = _start_child("usage_traffic_main", bootstrap, usage_rate, seconds + USAGE_WARM_MAX_S,
                                       float(usage_framed), 1.0, stdout=subprocess.PIPE)
                _wait_usage_flowing(traffic, usage_stats_url, usage_rate)
                usage_cpu_before = _cpu_seconds(traffic.pid)
            elif usage_rate:  # the bench before reserve10: the producer starts with the open loop
                traffic = _start_child("usage_traffic_main", bootstrap, usage_rate, seconds + 1, float(usage_framed))
            priced_before = _events_priced(usage_stats_url) if usage_rate and usage_stats_url else None
            waited_before, wall_before = _runqueue_wait_s(worker_pid), time.perf_counter()
            gc_before = _status(url)["gc"]
            cpu_open = _cpu_seconds(worker_pid) if worker_pid else 0.0
            threads_before = _thread_cpu_seconds(worker_pid) if worker_pid else {}
            broker_open = _cpu_seconds(broker_pid) if broker_pid else 0.0
            pricing_open = _cpu_seconds(pricing_pid) if pricing_pid else 0.0
            probe = (_start_child("broker_probe_main", bootstrap, PROBE_RATE, seconds, stdout=subprocess.PIPE)
                     if broker_probe else None)
            tracing = bool(trace_loop and worker_pid and client == clients[0])
            if tracing:
                if os.path.exists(trace_loop):
                    os.unlink(trace_loop)
                os.kill(worker_pid, TRACE_SIGNAL)  # trace on
            try:
                run = asyncio.run(_open_loop(url, rate, seconds, client=client))
            finally:
                if tracing:
                    _stop_profile(worker_pid, trace_loop, signum=TRACE_SIGNAL)
                if traffic is not None:  # the usage producer's CPU (it shares the cores); its start-up included when
                    # it started with the open loop (--usage-cold)
                    with contextlib.suppress(OSError):
                        figures["usage_cpu_pct"] = round((_cpu_seconds(traffic.pid) - (usage_cpu_before or 0.0))
                                                         / run.seconds * 100, 1)
                    traffic.terminate()
                    traffic.wait(30)
                probe_acks = json.loads(probe.communicate(timeout=60)[0]) if probe is not None else None
            after = _status(url, window_s=run.seconds)
            measured = _open_loop_figures(run, after.get("loop_lag_ms") or {})
            trace = None
            if tracing and os.path.exists(trace_loop):
                with open(trace_loop) as f:
                    trace = json.load(f)
            measured.update({"reserve_" + k: v for k, v in breakdown(run.timed, trace).items()})
            if broker_pid:  # the broker's CPU over the open loop, in % of one core
                measured["reserve_open_loop_broker_cpu_pct"] = round(
                    (_cpu_seconds(broker_pid) - broker_open) / (time.perf_counter() - wall_before) * 100, 1)
            if pricing_pid:  # the pricing worker's CPU over the open loop (split roles), in % of one core
                measured["reserve_open_loop_pricing_worker_cpu_pct"] = round(
                    (_cpu_seconds(pricing_pid) - pricing_open) / (time.perf_counter() - wall_before) * 100, 1)
            if priced_before is not None:  # whether pricing kept up with the usage during the open loop (a niced
                # pricing worker yields the cores: it may fall behind while reservations take them)
                measured["reserve_usage_priced_per_s"] = round(
                    (_events_priced(usage_stats_url) - priced_before) / (time.perf_counter() - wall_before), 1)
            if "usage_cpu_pct" in figures:
                measured["reserve_usage_producer_cpu_pct"] = figures.pop("usage_cpu_pct")
            if probe_acks:  # the broker's own acknowledgement meanwhile, as a lone producer elsewhere saw it
                measured.update({"reserve_broker_probe_ack_p50_ms": probe_acks["p50"],
                                 "reserve_broker_probe_ack_p99_ms": probe_acks["p99"]})
            if worker_pid:  # the event loop's thread (the process's main thread) and the others (pricing, Faust's
                # consumer), in % of one core over the open loop: what usage adds where
                threads = _thread_cpu_seconds(worker_pid)
                wall = time.perf_counter() - wall_before
                used = {tid: cpu - threads_before.get(tid, 0.0) for tid, cpu in threads.items()}
                measured["reserve_worker_loop_thread_cpu_pct"] = round(used.pop(worker_pid, 0.0) / wall * 100, 1)
                measured["reserve_worker_other_threads_cpu_pct"] = round(sum(used.values()) / wall * 100, 1)
            measured.update(_gc_figures(gc_before, after["gc"], len(run.latencies), "reserve_open_loop_"))
            if worker_pid:  # the open loop's own CPU figure: where its GC shows (the closed loop's bursts are small)
                measured["reserve_open_loop_worker_cpu_ms"] = round(
                    (_cpu_seconds(worker_pid) - cpu_open) / len(run.latencies) * 1000, 4)
            # the share of the open loop the worker's event loop spent runnable but waiting for a core (the load)
            if worker_pid and waited_before is not None:
                measured["reserve_worker_waiting_for_cpu_pct"] = round(
                    (_runqueue_wait_s(worker_pid) - waited_before) / (time.perf_counter() - wall_before) * 100, 1)
            if len(clients) > 1:
                figures.setdefault("reserve_by_client", {})[client] = {
                    key.removeprefix("reserve_"): value for key, value in measured.items()}
            if client == clients[0]:
                main = measured
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
    status = _status(url)  # the worker's own time per reservation (recent ones), without the client's
    server, acks = status["latency_ms"], status.get("hold_ack_ms") or {}
    background = {}
    if worker_pid:  # the worker's CPU with no reservation coming: work of its own (e.g. usage still being priced)
        idle_cpu, idle_wall = _cpu_seconds(worker_pid), time.perf_counter()
        time.sleep(1.0)  # a measuring window, not a wait for readiness
        background["reserve_worker_background_cpu_pct"] = round(
            (_cpu_seconds(worker_pid) - idle_cpu) / (time.perf_counter() - idle_wall) * 100, 1)
    cpu_before = _cpu_seconds(worker_pid) if worker_pid else 0.0
    gc_before = _status(url)["gc"]
    broker_before = _cpu_seconds(broker_pid) if broker_pid else 0.0
    if profile and worker_pid:
        os.kill(worker_pid, PROFILE_SIGNAL)  # profiler on
    closed_started = time.perf_counter()
    throughput = asyncio.run(_closed_loop(url, requests))
    closed_s = time.perf_counter() - closed_started
    gc_closed = _gc_figures(gc_before, _status(url, window_s=closed_s)["gc"], requests // 8 * 8, "reserve_closed_loop_")
    cpu = {"reserve_worker_cpu_ms": round((_cpu_seconds(worker_pid) - cpu_before) / (requests // 8 * 8) * 1000, 4)
           } if worker_pid else {}
    if broker_pid:
        cpu["reserve_broker_cpu_ms"] = round((_cpu_seconds(broker_pid) - broker_before) / (requests // 8 * 8) * 1000, 4)
    if profile and worker_pid:
        _stop_profile(worker_pid, profile)
    return {**main,
            # the worker's time for the open loop's reservations (their Server-Timing headers); before reserve7 the
            # worker's own samples, which included the warm-up's closed loop
            "reserve_server_latency_p50_ms": main.get("reserve_open_loop_server_p50_ms", server["p50"]),
            "reserve_server_latency_p99_ms": main.get("reserve_open_loop_server_p99_ms", server["p99"]),
            # of the worker's time: from the hold's write to the broker's acknowledgement (its recent samples)
            "reserve_hold_ack_p50_ms": acks.get("p50"), "reserve_hold_ack_p99_ms": acks.get("p99"),
            "reserve_requests_per_s": round(throughput, 1), **cpu, **background, **gc_closed, **figures}


# cProfile of the worker (`--profile PATH`): the worker's main module wrapped so that PROFILE_SIGNAL turns the
# profiler on, and again off, writing the stats (the event loop runs in the main thread, where the handler runs)
PROFILE_SIGNAL = signal.SIGRTMIN + 1
_PROFILED_WORKER = """
import cProfile, runpy, signal, sys, time
# CPU time, not wall time: on shared cores a wall-clock profile charges whatever ran when the worker was preempted
# (a loopback send that wakes the broker) to the function that was running
out, profiler, state = sys.argv.pop(1), cProfile.Profile(time.thread_time), {"on": False}
def toggle(signum, frame):
    if state["on"]:
        profiler.disable()
        profiler.dump_stats(out + ".part")
        __import__("os").replace(out + ".part", out)
    else:
        profiler.enable()
    state["on"] = not state["on"]
signal.signal(%d, toggle)
sys.argv = ["app", "worker"]
runpy.run_module("app", run_name="__main__")
""" % PROFILE_SIGNAL

# the worker with its event loop traced (`--trace-loop PATH`, app/loop_trace.py): TRACE_SIGNAL turns it on, and off
# writing what ran to PATH
_TRACED_WORKER = """
import runpy, sys
from app import loop_trace
loop_trace.install(sys.argv.pop(1))
sys.argv = ["app", "worker"]
runpy.run_module("app", run_name="__main__")
"""


def _stop_profile(worker_pid: int, path: str, timeout: float = 30.0, signum: int = PROFILE_SIGNAL) -> None:
    """Turn the profiler (or the loop trace) off and wait until it wrote `path`."""
    if os.path.exists(path):
        os.unlink(path)
    os.kill(worker_pid, signum)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)


def _broker_pid(port: int) -> int | None:
    """The pid of the embedded broker listening on `port` (a child of this process)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if args and b"tansu" in args[0].rsplit(b"/", 1)[-1] and f"LISTENER_URL=tcp://127.0.0.1:{port}\0".encode() in environ:
            return int(entry)
    return None


def _gc_figures(before: dict, after: dict, reservations: int, prefix: str) -> dict:
    """The worker's cyclic-GC collections per generation and their pause time per reservation between two
    `GET /v1/reservations` answers (their `gc.pauses`)."""
    count = [a - b for a, b in zip(after["collections"], before["collections"])]
    if "pauses" not in before or "pauses" not in after:  # a worker before reserve7: its collections only
        return {prefix + "gc_collections": count}
    total = sum(after["pauses"]["total_ms"]) - sum(before["pauses"]["total_ms"])
    return {prefix + "gc_collections": count, prefix + "gc_ms_per_reservation": round(total / max(1, reservations), 4),
            # [generation, ms] of each pause above 1 ms in the window the `after` answer was asked for
            prefix + "gc_long_pauses": after["pauses"].get("long", [])}


def _status(url: str, window_s: float | None = None) -> dict:
    """The worker's `GET /v1/reservations`: its latency figures (reservations since its start: answer, and hold
    acknowledgement) and its event loop's lag over the last `window_s` seconds."""
    import urllib.request

    query = f"?window_s={window_s:.3f}" if window_s else ""
    with urllib.request.urlopen(url + query, timeout=10) as resp:
        return json.loads(resp.read())


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until the worker's /health answers 200 (it holds a source partition; 503 otherwise); fails if it exits."""
    from app.supervisor import _http_ok

    healthy, deadline = _http_ok(url), time.monotonic() + timeout
    while not healthy():
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} never answered 200")
        time.sleep(0.2)


def main() -> None:
    import argparse

    from app.broker import embedded_broker
    from app.process import child_preexec
    from tokenmeter.settings import free_port

    parser = argparse.ArgumentParser(prog="python -m app.bench_reserve", description=__doc__.splitlines()[0])
    parser.add_argument("--other-budgets", type=int, default=0,
                        help="define this many more budgets (other teams'), matched by no bench reservation")
    parser.add_argument("--rate", type=float, default=2000, help="reservations per second offered in the open loop")
    parser.add_argument("--requests", type=int, default=8000,
                        help="reservations in the closed loop that reserve_worker_cpu_ms is measured over")
    parser.add_argument("--clients", default=CLIENTS[0],
                        help=f"open-loop clients to run in turn, comma-separated, of {', '.join(CLIENTS)} (the first's "
                             "figures are the reserve_* ones)")
    parser.add_argument("--usage-rate", type=float, default=0,
                        help="usage events per second for the worker to price during the open loop (default none)")
    parser.add_argument("--usage-cold", action="store_true",
                        help="with --usage-rate: start the usage producer with the open loop (the bench before "
                             "reserve10), instead of waiting until usage flows and is priced")
    parser.add_argument("--usage-framed", action="store_true",
                        help="with --usage-rate: usage as the collectors send it (each 10 ms of events grouped by "
                             "partition key into JSON arrays), not one event per Kafka message")
    parser.add_argument("--broker-probe", action="store_true",
                        help="during the open loop, a lone producer in another process measures the broker's own "
                             "acknowledgement (reserve_broker_probe_ack_*), to set against the worker's hold_ack")
    parser.add_argument("--worker-tree", metavar="DIR",
                        help="run the worker from this checkout (e.g. `git archive` of an older commit) instead of "
                             "this one: before/after of the worker under one bench; figures the older worker does "
                             "not give (Server-Timing, loop lag, GC pauses) are left out")
    parser.add_argument("--roles", choices=("all", "split"), default="all",
                        help="all: one worker prices and admits (role all); split: a budgets-role worker admits (the "
                             "one measured) and a pricing-role worker beside it prices the usage (docs/budgets.md, "
                             "\"Worker roles\")")
    parser.add_argument("--pricing-nice", type=int, default=0, metavar="N",
                        help="with --roles split: the pricing worker's TOKENMETER_WORKER_NICE (its CPU priority)")
    parser.add_argument("--worker-slice-ms", type=float, default=None, metavar="MS",
                        help="the admitting worker's TOKENMETER_WORKER_SCHED_SLICE_MS (its kernel time slice)")
    parser.add_argument("--trace-loop", metavar="PATH",
                        help="trace the worker's event loop during the open loop (callbacks, busy iterations and GC "
                             "pauses above 1 ms, app/loop_trace.py) into PATH, and report what ran during the slowest "
                             "1 %% of the reservations (reserve_slowest_*)")
    parser.add_argument("--profile", metavar="PATH",
                        help="write a cProfile of the worker during the closed loop to PATH (pstats format)")
    args = parser.parse_args()
    broker_port = free_port()
    with tempfile.TemporaryDirectory() as tmp, embedded_broker("127.0.0.1", broker_port, partitions=4) as bootstrap:
        port = free_port()
        path = [os.path.abspath(args.worker_tree)] if args.worker_tree else []
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path + sys.path), TOKENMETER_KAFKA_BOOTSTRAP=bootstrap,
                   TOKENMETER_DATA_DIR=tmp, TOKENMETER_API_PORT=str(port), TOKENMETER_LOG_LEVEL="warning")
        command = ([sys.executable, "-c", _PROFILED_WORKER, os.path.abspath(args.profile)] if args.profile
                   else [sys.executable, "-c", _TRACED_WORKER, os.path.abspath(args.trace_loop)] if args.trace_loop
                   else [sys.executable, "-m", "app", "worker"])
        pricing = None
        if args.roles == "split":  # the pricing worker: its own port and data directory, started first
            pricing_port = free_port()
            pricing_env = dict(env, TOKENMETER_WORKER_ROLE="pricing", TOKENMETER_API_PORT=str(pricing_port),
                               TOKENMETER_DATA_DIR=os.path.join(tmp, "pricing"),
                               TOKENMETER_WORKER_NICE=str(args.pricing_nice))
            pricing = subprocess.Popen([sys.executable, "-m", "app", "worker"], env=pricing_env,
                                       stdout=subprocess.DEVNULL, cwd=path[0] if path else None,
                                       stderr=subprocess.DEVNULL, preexec_fn=child_preexec)
            env["TOKENMETER_WORKER_ROLE"] = "budgets"
        if args.worker_slice_ms:
            env["TOKENMETER_WORKER_SCHED_SLICE_MS"] = str(args.worker_slice_ms)
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, cwd=path[0] if path else None,
                                stderr=subprocess.DEVNULL, preexec_fn=child_preexec)
        try:
            if pricing is not None:  # pricing before the open loop, as role all's worker does once ready
                _wait_healthy(f"http://127.0.0.1:{pricing_port}/health", pricing)
            print(json.dumps(measure_reservations(bootstrap, port, worker_pid=proc.pid,
                                                  other_budgets=args.other_budgets, requests=args.requests,
                                                  rate=args.rate, clients=tuple(args.clients.split(",")),
                                                  usage_rate=args.usage_rate, broker_probe=args.broker_probe,
                                                  usage_framed=args.usage_framed,
                                                  broker_pid=_broker_pid(broker_port), profile=args.profile,
                                                  trace_loop=os.path.abspath(args.trace_loop) if args.trace_loop
                                                  else None,
                                                  pricing_pid=pricing.pid if pricing is not None else None,
                                                  usage_stats_url=None if args.usage_cold else
                                                  f"http://127.0.0.1:{pricing_port if pricing is not None else port}"
                                                  "/v1/stats")
                             | ({"reserve_roles": "split", "reserve_pricing_nice": args.pricing_nice}
                                if pricing is not None else {})
                             | ({"reserve_usage_start": "cold" if args.usage_cold else "warm"} if args.usage_rate
                                else {})
                             | ({"reserve_worker_slice_ms": args.worker_slice_ms} if args.worker_slice_ms else {})))
        finally:
            for child in (proc, pricing):
                if child is not None:
                    child.terminate()
                    child.wait(30)


if __name__ == "__main__":
    main()
