"""`tokenmeter bench`: the same synthetic events through (a) raw aiokafka consume + JSON decode, (b) a naive Faust
agent doing the worker's work (validate, meter, price, produce) one event at a time with a table write per event,
and (c) tokenmeter's worker (micro-batches in, priced
micro-batches out), in one run on a fresh embedded broker. Process start-up and group joins are excluded for all
three: (a) is timed from its first fetch request, (b) from the first event handled to the last; (c) from the moment the events are produced
to a warmed-up worker until the last one is priced (so it includes producing them, which favours (a) and (b)), three
times on the same worker (new event ids each round): the first round is the figure, all three are reported. Every
figure's events are encoded before its timer: (a) and (b) read one JSON event per message produced before they
start, (c) collector micro-batches encoded before each round (since pipe34; before, inside (c)'s window)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from app.broker import embedded_broker
from tokenmeter.events import partition_key
from app.process import child_preexec
from tokenmeter.settings import Settings, free_port

RAW_TOPIC = "bench.raw"
# (c) is timed this many times on the same warmed-up worker, one round after the other. The figure stays the first
# round; the others show how far one ~1 s round of 50,000 events is from the next on this 2-core machine (35-59k/s
# on unchanged code). Their median is reported too but is not the figure: later rounds run ~5 % faster on the warmer
# worker, and at load 11-14 it was no steadier than one round (docs/rounds/benchmarks.md, worker26).
PIPELINE_ROUNDS = 3
NAIVE_TOPIC = "bench.naive"
MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5"), ("gemini", "gemini-2.5-flash")]


def synthetic_events(n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    now = datetime.now(timezone.utc).isoformat()
    out = []
    for i in range(n):
        provider, model = MODELS[i % len(MODELS)]
        inp = rng.randint(100, 5000)
        out.append({
            "event_id": str(uuid.UUID(int=rng.getrandbits(128))), "ts": now, "source": "bench", "provider": provider,
            "model": model, "attribution": {"org": "acme", "team": f"team-{i % 12}", "user": f"user-{i % 97}"},
            "usage": {"input_tokens": inp, "cached_input_tokens": inp // 4, "output_tokens": rng.randint(10, 800)},
        })
    return out


async def _produce(bootstrap: str, events: list[dict]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=4_000_000)
    await producer.start()
    try:
        futures = []
        for event in events:  # one event per message: what a gateway producing directly does
            key = partition_key(event)
            for topic in (RAW_TOPIC, NAIVE_TOPIC):
                futures.append(await producer.send(topic, orjson.dumps(event), key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _raw_consume(bootstrap: str, n: int) -> float:
    """Manually assigned (no group join to wait for), timed from the first fetch request to the n-th decode."""
    from aiokafka import TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
                                max_partition_fetch_bytes=8_000_000)
    await consumer.start()
    try:
        await consumer.topics()  # loads metadata, so the next line knows the partitions
        partitions = consumer.partitions_for_topic(RAW_TOPIC) or set()
        consumer.assign([TopicPartition(RAW_TOPIC, p) for p in partitions])
        seen = 0
        started = time.perf_counter()
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for messages in batch.values():
                for message in messages:
                    orjson.loads(message.value)
                    seen += 1
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def _micro_batches(events: list[dict]) -> list[tuple[bytes, bytes]]:
    """Events grouped by partition key, 500 per message: what tokenmeter's collectors produce."""
    by_key: dict[bytes, list[dict]] = defaultdict(list)
    for event in events:
        by_key[partition_key(event)].append(event)
    return [(key, orjson.dumps(evs[i:i + 500])) for key, evs in by_key.items() for i in range(0, len(evs), 500)]


def _naive_main(bootstrap: str, n: int, result_path: str, api_port: int) -> None:
    """The same work as tokenmeter's worker (validate, meter, price, produce the priced event), written the
    obvious way: one event per Kafka message, handled one at a time, a table write per event."""
    import faust

    from streams import load_book, price_event
    from tokenmeter.events import UsageEvent
    from tokenmeter.settings import load_settings

    settings = load_settings()
    book = load_book(settings)
    faust_dir = settings.data_dir.resolve() / "faust"
    faust_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App("bench-naive", broker=f"kafka://{bootstrap}", store="memory://", autodiscover=False,
                    datadir=str(faust_dir / "bench-naive"),  # not `bench-naive-data` in the working directory
                    topic_partitions=4, web_port=api_port, broker_rebalance_timeout=3.0,  # as the worker's
                    broker_session_timeout=settings.kafka_session_timeout_seconds,
                    broker_heartbeat_interval=settings.group_timeouts["heartbeat_interval_ms"] / 1000,
                    consumer_auto_offset_reset="earliest")
    source = app.topic(NAIVE_TOPIC, value_serializer="raw", key_serializer="raw")
    priced_topic = app.topic(NAIVE_TOPIC + ".priced", value_serializer="raw", key_serializer="raw")
    spend = app.Table("naive_spend", default=int, partitions=4)
    state = {"seen": 0, "first": None}

    @app.agent(source)
    async def naive(stream):  # noqa: ANN001
        async for key, value in stream.items():
            if state["first"] is None:
                state["first"] = time.perf_counter()
            priced = price_event(UsageEvent.model_validate(orjson.loads(value)), book)
            await priced_topic.send(key=key, value=orjson.dumps(priced.to_json()))
            spend[priced.attribution.team] += priced.usage.input_tokens
            state["seen"] += 1
            if state["seen"] >= n:
                rate = n / (time.perf_counter() - state["first"])
                Path(result_path).write_text(json.dumps({"events_per_s": rate}))
                os.kill(os.getpid(), 15)

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


def _run_child(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=child_preexec)


def run_bench(n: int, as_json: bool, settings: Settings, budgets: bool = True, budget_samples: int = 100,
              warehouse_rows: int = 10_000_000, collector_processes: int = 1, in_process: bool = True) -> dict:
    events = synthetic_events(n)
    results: dict = {"events": n}
    say = (lambda msg: None) if as_json else (lambda msg: print(msg, flush=True))
    with tempfile.TemporaryDirectory() as tmp, embedded_broker("127.0.0.1", free_port(), partitions=4) as bootstrap:
        say(f"bench: {n} events on a fresh embedded broker at {bootstrap}")
        asyncio.run(_produce(bootstrap, events))
        results["raw_events_per_s"] = asyncio.run(_raw_consume(bootstrap, n))
        say(f"(a) raw aiokafka consume + JSON decode: {results['raw_events_per_s']:,.0f} events/s")

        from collectors.bench import measure_collectors

        # Collectors write to their own usage topic here: the worker measured in (c) reads tokenmeter.usage from
        # the beginning and would otherwise price these events too.
        cpu_rates: dict[str, float] = {}
        results["collectors_events_per_s"] = measure_collectors(bootstrap, n, usage_topic="bench.collectors.usage",
                                                                cpu_rates=cpu_rates)
        results["collectors_cpu_events_per_s"] = cpu_rates
        results["collectors_cpu_us_per_event"] = {d: 1e6 / rate for d, rate in cpu_rates.items()}
        for dialect, rate in results["collectors_events_per_s"].items():
            say(f"(a') collector {dialect}, 1 process: gateway topic -> usage topic (parse, validate, produce, "
                f"acks=all): {rate:,.0f} events/s ({cpu_rates[dialect]:,.0f} per CPU second of the collector, "
                f"{1e6 / cpu_rates[dialect]:.1f} CPU-us per event)")
        if collector_processes > 1:  # `collect kafka --processes N`: said so, beside the 1-process figure
            from collectors.bench_processes import measure_collectors_processes

            several = measure_collectors_processes(bootstrap, n, collector_processes,
                                                   tuple(results["collectors_events_per_s"]),
                                                   usage_topic="bench.collectors.usage")
            results["collectors_processes"] = collector_processes
            results["collectors_processes_events_per_s"] = {d: f["events_per_s"] for d, f in several.items()}
            results["collectors_processes_cpu_us_per_event"] = {d: f["cpu_us_per_event"] for d, f in several.items()}
            for dialect, found in several.items():
                one = results["collectors_events_per_s"][dialect]
                say(f"(a'') collector {dialect}, {found['processes']} processes in one group: "
                    f"{found['events_per_s']:,.0f} events/s ({found['events_per_s'] / one:.2f}x the 1-process "
                    f"figure; {found['cpu_us_per_event']:.1f} CPU-us per event, all members)")

        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), TOKENMETER_KAFKA_BOOTSTRAP=bootstrap,
                   TOKENMETER_DATA_DIR=tmp, TOKENMETER_API_PORT=str(free_port()), TOKENMETER_LOG_LEVEL="warning")
        naive_result = Path(tmp) / "naive.json"
        proc = _run_child([sys.executable, "-c", f"from app.bench import _naive_main; "
                           f"_naive_main({bootstrap!r}, {n}, {str(naive_result)!r}, {free_port()})"], env)
        try:
            deadline = time.monotonic() + max(120, n / 200)
            while not naive_result.exists() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.2)
            if not naive_result.exists():
                raise RuntimeError("naive Faust agent did not finish")
            results["naive_events_per_s"] = json.loads(naive_result.read_text())["events_per_s"]
        finally:
            proc.terminate()
            proc.wait(30)
        say(f"(b) naive Faust agent, same work one event at a time, a table write per event: {results['naive_events_per_s']:,.0f} events/s")

        proc = _run_child([sys.executable, "-m", "app", "worker"], env)
        try:
            from app.bench_worker import time_worker  # imports this module: not at the top

            pipeline = asyncio.run(time_worker(bootstrap, events, proc.pid, int(env["TOKENMETER_API_PORT"]),
                                               timeout=max(180, n / 500), rounds=PIPELINE_ROUNDS))
            results["pipeline_events_per_s"] = pipeline["events_per_s"]  # the first round, as always
            results["pipeline_events_per_s_rounds"] = pipeline["events_per_s_rounds"]  # how far one round is from the next
            results["pipeline_events_per_s_median"] = pipeline["events_per_s_median"]
            results["pipeline_worker_cpu_us_per_event"] = pipeline["worker_cpu_us_per_event"]
            if budgets:
                from app.bench_alerts import measure_budgets

                # A quick run (tests: a few alert samples) measures every figure on less traffic: a tenth of the
                # background load and of the /v1/decision requests, a quarter of the reservations offered, one
                # second of them (the full run's figures need the full amounts; a test only needs each one taken).
                small = budget_samples < 50
                say("budgets: alert latency under load (event produced -> webhook received) and /v1/decision ...")
                results.update(measure_budgets(bootstrap, env, int(env["TOKENMETER_API_PORT"]),
                                               samples=budget_samples, load_rate=200 if small else 2000,
                                               decision_requests=400 if small else 4000))
                from app.bench_reserve import measure_reservations

                rate = 500 if small else 2000
                say(f"reservations: POST /v1/reservations at {rate:,}/s offered (open loop), then 8 clients ...")
                results.update(measure_reservations(bootstrap, int(env["TOKENMETER_API_PORT"]), rate=rate,
                                                    seconds=1.0 if small else 5.0, requests=400 if small else 8000,
                                                    worker_pid=proc.pid))
        finally:
            proc.terminate()
            proc.wait(30)
        say(f"(c) tokenmeter worker (validate, meter, price, aggregate, produce): "
            f"{results['pipeline_events_per_s']:,.0f} events/s (the first of {PIPELINE_ROUNDS} rounds of {n:,} events on "
            f"one worker: {', '.join(f'{r:,}' for r in results['pipeline_events_per_s_rounds'])}; median "
            f"{results['pipeline_events_per_s_median']:,})")
        if budgets:
            say(f"alerts: p50 {results['alert_latency_p50_ms']:,.0f} ms, p99 {results['alert_latency_p99_ms']:,.0f} ms "
                f"({results['alert_samples']} threshold crossings, with ~{results['alert_background_events']:,} "
                f"background events); /v1/decision: p50 {results['decision_latency_p50_ms']:.2f} ms, "
                f"p99 {results['decision_latency_p99_ms']:.2f} ms, {results['decision_requests_per_s']:,.0f} requests/s")
            say(f"/v1/reservations (hold written and acknowledged): p50 {results['reserve_latency_p50_ms']:.2f} ms, "
                f"p99 {results['reserve_latency_p99_ms']:.2f} ms at {results['reserve_offered_per_s']:,.0f}/s offered "
                f"(worker side p50 {results['reserve_server_latency_p50_ms']} ms, "
                f"p99 {results['reserve_server_latency_p99_ms']} ms; the client's CPU "
                f"{results['reserve_client_cpu_ms']} ms per request); 8 clients: "
                f"{results['reserve_requests_per_s']:,.0f} reservations/s")
    if in_process:
        # Issue 14 names this figure: the pricing thread's work alone (a batch of messages -> priced messages in the
        # format a worker sends), in a fresh process of this tree, best of 3 warm passes; the first pass apart (cold).
        from app.bench_worker import measure_in_process

        say("in-process batch path: the worker's pricing of the same events, no Kafka ...")
        root = str(Path(__file__).resolve().parents[1])
        found = next(iter(measure_in_process([root], n, 1, 0.0, progress=False).values()))[0]
        results.update({"in_process_events_per_s": found["events_per_s_wall"],
                        "in_process_events_per_cpu_s": found["events_per_cpu_s"],
                        "in_process_cpu_us_per_event": found["cpu_us_per_event"],
                        "in_process_cold_cpu_us_per_event": found["cold_cpu_us_per_event"],
                        "in_process_format": found["format"]})
        say(f"in-process batch path ({found['format']} out): {found['events_per_s_wall']:,} events/s "
            f"({found['events_per_cpu_s']:,} per CPU second, {found['cpu_us_per_event']} CPU-us per event; the "
            f"first, cold pass {found['cold_cpu_us_per_event']} CPU-us per event)")
    if warehouse_rows:
        # Its own process: chDB allows one open data path per process.
        # The loader is timed on as many rows as the warehouse holds, at most 200,000 (a small run stays small).
        load_rows = min(warehouse_rows, 200_000)
        say(f"warehouse: {warehouse_rows:,} generated events in chDB, the dashboard's queries, {load_rows:,} loader "
            f"inserts ...")
        out = subprocess.run([sys.executable, "-m", "warehouse.bench", str(warehouse_rows), str(load_rows)],
                             capture_output=True,
                             text=True, timeout=3600, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        if out.returncode != 0:
            raise RuntimeError(f"warehouse bench failed:\n{out.stderr[-2000:]}")
        figures = json.loads(out.stdout)
        results.update({"warehouse_rows": warehouse_rows, "query_p50_ms": figures["query_p50_ms"],
                        "query_p95_ms": figures["query_p95_ms"], "queries_p95_ms": figures["queries_p95_ms"],
                        "load_rows_per_s": figures["load_rows_per_s"],
                        "load_rows_per_cpu_s": figures.get("load_rows_per_cpu_s"),
                        "load_batch_rows": figures.get("load_batch_rows"),
                        "load_path_rows_per_s": figures.get("load_path_rows_per_s"),
                        "load_path_rows_per_cpu_s": figures.get("load_path_rows_per_cpu_s"),
                        "load_path_cpu_us_per_row": figures.get("load_path_cpu_us_per_row"),
                        # the same path from Arrow messages (TOKENMETER_PRICED_FORMAT=arrow; issue 14, loader11)
                        "load_path_arrow_rows_per_s": figures.get("load_path_arrow_rows_per_s"),
                        "load_path_arrow_rows_per_cpu_s": figures.get("load_path_arrow_rows_per_cpu_s"),
                        "load_path_arrow_cpu_us_per_row": figures.get("load_path_arrow_cpu_us_per_row")})
        # the loader's path from the messages the default worker writes (TOKENMETER_PRICED_FORMAT) comes first
        paths = {"arrow": figures.get("load_path_arrow_rows_per_s") or 0,
                 "json": figures.get("load_path_rows_per_s") or 0}
        default_format = settings.priced_format
        other = "json" if default_format == "arrow" else "arrow"
        results.update({"load_path_format": default_format, "load_path_default_rows_per_s": paths[default_format]})
        say(f"warehouse on {warehouse_rows:,} events: dashboard queries p50 {figures['query_p50_ms']} ms, "
            f"p95 {figures['query_p95_ms']} ms; loader from the worker's {default_format} messages (the "
            f"TOKENMETER_PRICED_FORMAT in use), decode included: {paths[default_format]:,} rows/s (from {other} "
            f"messages: {paths[other]:,} rows/s); loader inserts alone {figures['load_rows_per_s']:,} rows/s")
    results["pipeline_vs_naive"] = results["pipeline_events_per_s"] / results["naive_events_per_s"]
    results["pipeline_vs_raw"] = results["pipeline_events_per_s"] / results["raw_events_per_s"]
    slowest_collector = min(results["collectors_events_per_s"].values())
    results["collector_min_vs_raw"] = slowest_collector / results["raw_events_per_s"]
    results["collector_min_vs_pipeline"] = slowest_collector / results["pipeline_events_per_s"]
    if "collectors_processes_events_per_s" in results:  # the same ratio with N bridge processes per source
        slowest_several = min(results["collectors_processes_events_per_s"].values())
        results["collector_processes_min_vs_pipeline"] = slowest_several / results["pipeline_events_per_s"]
    peak_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    results["peak_rss_mb"] = round(peak_kb / 1024, 1)
    if as_json:
        print(json.dumps(results))
    else:
        say(f"ratios: c/b = {results['pipeline_vs_naive']:.1f}x, c/a = {results['pipeline_vs_raw']:.2f}x, "
            f"slowest collector / c = {results['collector_min_vs_pipeline']:.2f}x (1 process)"
            + (f", {results['collector_processes_min_vs_pipeline']:.2f}x ({results['collectors_processes']} processes)"
               if "collector_processes_min_vs_pipeline" in results else "") + "; "
            f"peak RSS of any one process: {results['peak_rss_mb']} MB")
    return results
