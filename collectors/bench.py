"""Collector throughput for `tokenmeter bench`: events/s from a gateway's own Kafka topic to the usage topic.

For each dialect, n gateway records in the shape the gateway really writes (Kong kafka-log JSON arrays of 50
entries, as with `max_batch_size`; one APISIX kafka-logger entry per message; one LiteLLM StandardLoggingPayload
per message; OTel Collector kafka exporter `otlp_proto` TracesData of 20 GenAI spans per record; canonical events
as an SDK batches them, arrays of 50) are produced
to a fresh 4-partition source topic, then the real `KafkaBridge` (the class `tokenmeter collect kafka` runs,
in-process so no interpreter start-up is measured) converts them. The clock runs from the first fetched batch
reaching the bridge to the broker acknowledging the n-th event, so the consumer-group join is excluded, and
includes everything the bridge does per batch (decode, parse, validate, encode, produce with acks=all, commit
of the batch before it). The only additions to the real classes are two timestamps and a door: all bridges
start together (so their group joins overlap) and each holds its first fetched batch until its turn, so only one
dialect converts at a time.

Correctness is checked, not assumed: every dialect must write exactly n events, none rejected or skipped, and
reading the usage topic back must find each expected event id exactly once.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.structs import TopicPartition

from collectors.kafka_bridge import KafkaBridge
from collectors.sink import KafkaSink
from tokenmeter import topics
from tokenmeter.commitloop import Batch
from tokenmeter.kafka_topics import read_to_end, topic_partitions

DIALECTS = ("kong", "apisix", "litellm", "otel", "canonical")
KONG_ENTRIES_PER_MESSAGE = 50
OTEL_SPANS_PER_RECORD = 20
SOURCE_PARTITIONS = 4
MODELS = [("openai", "gpt-4o", "gpt-4o-2024-08-06"), ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
          ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
          ("gemini", "gemini-2.5-flash", "gemini-2.5-flash")]

Record = bytes  # one Kafka message value, exactly as the gateway writes it


class CollectorBenchError(RuntimeError):
    """The bridge wrote a different number of events than it was given, or did not finish in time."""


# --- gateway records ---------------------------------------------------------------------------------------


def _kong_entry(rng: random.Random, i: int) -> tuple[str, dict[str, Any]]:
    provider, model, snapshot = MODELS[i % len(MODELS)]
    request_id = uuid.UUID(int=rng.getrandbits(128)).hex
    prompt, completion = rng.randint(50, 6000), rng.randint(5, 900)
    started = 1_787_113_201_719 + i * 37
    entry = {
        "workspace": "b4a1e9a2-6b4a-4e91-9c2e-3b6a9d8f1c72", "workspace_name": "default", "source": "upstream",
        "upstream_uri": "/v1/chat/completions", "upstream_status": 200, "client_ip": f"10.0.{i % 250}.{i % 200}",
        "started_at": started,
        "request": {"id": request_id, "uri": "/v1/chat/completions", "method": "POST", "size": 300 + i % 700,
                    "headers": {"host": "gateway.internal", "content-type": "application/json",
                                "authorization": "REDACTED", "x-feature": f"feature-{i % 5}"}},
        "response": {"status": 200, "size": 1800 + i % 400,
                     "headers": {"x-kong-request-id": request_id, "x-kong-llm-model": f"{provider}/{model}"}},
        "latencies": {"kong": 3, "proxy": 900 + i % 300, "request": 910 + i % 300, "receive": 3},
        "service": {"id": "947a4e23-b483-5a65-8165-da9aed24565b", "name": f"svc-{i % 7}"},
        "route": {"id": "8ae36805-da7a-55b9-b056-72bde6bb937d", "name": f"{provider}-chat"},
        "consumer": {"id": str(uuid.UUID(int=i % 97 + 1)), "username": f"user-{i % 97}"},
        "consumer_groups": [{"name": f"team-{i % 12}"}],
        "ai": {"proxy": {
            "tried_targets": [{"route_type": "llm/v1/chat", "provider": provider, "model": model}],
            "meta": {"request_mode": "oneshot", "provider_name": provider, "request_model": model,
                     "response_model": snapshot, "operation_name": "chat", "llm_latency": 880 + i % 300},
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                      "cost": 0, "time_per_token": 40, "time_to_first_token": 300 + i % 200}}},
    }
    return request_id, entry


def _apisix_entry(rng: random.Random, i: int) -> tuple[str, dict[str, Any]]:
    _, model, _ = MODELS[i % len(MODELS)]
    request_id = str(uuid.UUID(int=rng.getrandbits(128)))
    return request_id, {
        "request_id": request_id, "request": {"uri": "/v1/chat/completions", "method": "POST", "size": 192 + i % 500},
        "response": {"status": 200, "size": 804 + i % 300}, "route_id": f"ai-route-{i % 5}",
        "consumer": {"username": f"user-{i % 97}", "group_id": f"team-{i % 12}"},
        "client_ip": f"10.1.{i % 250}.{i % 200}", "start_time": 1_742_531_280_142 + i * 13, "latency": 900.0 + i % 2000,
        "llm_summary": {"request_model": model, "model": model, "duration": 300 + i % 900,
                        "prompt_tokens": rng.randint(20, 6000), "completion_tokens": rng.randint(5, 900),
                        "upstream_response_time": 900 + i % 2000},
    }


def _litellm_entry(rng: random.Random, i: int) -> tuple[str, dict[str, Any]]:
    provider, model, snapshot = MODELS[i % len(MODELS)]
    call_id = f"chatcmpl-{uuid.UUID(int=rng.getrandbits(128))}"
    prompt, completion = rng.randint(20, 6000), rng.randint(5, 900)
    second = i % 50
    return call_id, {
        "id": call_id, "call_type": "acompletion", "stream": i % 3 == 0, "status": "success",
        "custom_llm_provider": provider, "startTime": f"2025-01-24 09:20:{second:02d}.847371",
        "endTime": f"2025-01-24 09:20:{second + 1:02d}.851954",
        "completionStartTime": f"2025-01-24 09:20:{second:02d}.951954", "model": model,
        "metadata": {"user_api_key_hash": f"{i % 31:064x}", "user_api_key_team_id": f"team-{i % 12}",
                     "user_api_key_org_id": "acme", "user_api_key_user_id": f"user-{i % 97}"},
        "response_cost": 0.000225, "total_tokens": prompt + completion, "prompt_tokens": prompt,
        "completion_tokens": completion, "request_tags": [f"feature:feature-{i % 5}"], "end_user": "",
        "cache_hit": None, "messages": [{"role": "user", "content": "Hello, world!"}],
        "response": {"model": snapshot, "usage": {"completion_tokens": completion, "prompt_tokens": prompt,
                                                  "total_tokens": prompt + completion}},
        "hidden_params": {"api_base": "https://api.openai.com", "response_cost": 0.000225,
                          "litellm_model_name": model},
    }


def _canonical_event(rng: random.Random, i: int) -> tuple[str, dict[str, Any]]:
    """A canonical event as an SDK or internal proxy sends it (tokenmeter/events.py, contract v1)."""
    provider, model, snapshot = MODELS[i % len(MODELS)]
    event_id = f"sdk-{uuid.UUID(int=rng.getrandbits(128)).hex}"
    started = 1_787_113_201_719_000 + i * 37_000  # microseconds
    prompt, completion = rng.randint(50, 6000), rng.randint(5, 900)
    return event_id, {
        "event_id": event_id, "ts": f"{datetime.fromtimestamp(started / 1e6, timezone.utc):%Y-%m-%dT%H:%M:%S.%fZ}",
        "source": "sdk", "provider": provider, "model": snapshot, "operation": "chat",
        "attribution": {"team": f"team-{i % 12}", "user": f"user-{i % 97}", "feature": f"feature-{i % 5}",
                        "tags": {"env": "prod"}},
        "usage": {"input_tokens": prompt, "output_tokens": completion}, "latency_ms": 880 + i % 300,
    }


def _otel_record(rng: random.Random, first: int, count: int) -> tuple[list[str], bytes]:
    """One OTel Collector kafka exporter message: protobuf TracesData, its default `otlp_proto` encoding."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, TracesData

    def attr(key: str, value: str | int) -> KeyValue:
        any_value = AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)
        return KeyValue(key=key, value=any_value)

    ids, spans = [], []
    trace_id = rng.getrandbits(128).to_bytes(16, "big")
    for i in range(first, first + count):
        provider, model, snapshot = MODELS[i % len(MODELS)]
        span_id = rng.getrandbits(64).to_bytes(8, "big")
        start = 1_730_419_200_000_000_000 + i * 1_000_000
        ids.append(f"{trace_id.hex()}:{span_id.hex()}")
        spans.append(Span(
            trace_id=trace_id, span_id=span_id, name=f"chat {model}", kind=Span.SPAN_KIND_CLIENT,
            start_time_unix_nano=start, end_time_unix_nano=start + 1_200_000_000,
            attributes=[attr("gen_ai.operation.name", "chat"), attr("gen_ai.provider.name", provider),
                        attr("gen_ai.request.model", model), attr("gen_ai.response.model", snapshot),
                        attr("gen_ai.usage.input_tokens", rng.randint(20, 6000)),
                        attr("gen_ai.usage.output_tokens", rng.randint(5, 900)),
                        attr("tokenmeter.team", f"team-{i % 12}"), attr("user.id", f"user-{i % 97}")]))
    resource = Resource(attributes=[attr("service.name", f"chat-api-{first % 7}")])
    data = TracesData(resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(
        scope=InstrumentationScope(name="opentelemetry.instrumentation.openai_v2"), spans=spans)])])
    return ids, data.SerializeToString()


def gateway_records(dialect: str, n: int, seed: int | str = 7) -> tuple[list[Record], list[str]]:
    """(message values, the event id each of the n calls must become), as `dialect`'s gateway writes them."""
    rng = random.Random(f"{seed}:{dialect}")
    if dialect == "otel":
        values, ids = [], []
        for first in range(0, n, OTEL_SPANS_PER_RECORD):
            span_ids, value = _otel_record(rng, first, min(OTEL_SPANS_PER_RECORD, n - first))
            ids += span_ids
            values.append(value)
        return values, ids
    make = {"kong": _kong_entry, "apisix": _apisix_entry, "litellm": _litellm_entry,
            "canonical": _canonical_event}.get(dialect)
    if make is None:
        raise ValueError(f"dialect {dialect!r} has no benchmark records (known: {', '.join(DIALECTS)})")
    pairs = [make(rng, i) for i in range(n)]
    ids = [event_id for event_id, _ in pairs]
    entries = [entry for _, entry in pairs]
    if dialect in ("kong", "canonical"):  # kafka-log with max_batch_size > 1, an SDK's batch: JSON arrays
        step = KONG_ENTRIES_PER_MESSAGE
        return [orjson.dumps(entries[i:i + step]) for i in range(0, n, step)], ids
    return [orjson.dumps(entry) for entry in entries], ids


# --- the measured bridge ------------------------------------------------------------------------------------


class _TimedSink(KafkaSink):
    """The real sink; notes when the broker acknowledged the target-th event (or the events of the last record,
    when some records gave no event: then the count check fails instead of waiting for the timeout)."""

    def __init__(self, *args: Any, target: int, records: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.target = target
        self.records = records
        self.done_at: float | None = None
        self.done_cpu: float | None = None  # this process's CPU clock then (the bridge runs in-process)
        self.done = asyncio.Event()

    async def publish(self, events: list[Any], dialect: str = "?") -> int:
        written = await super().publish(events, dialect)
        if self.done_at is None and (self.counters.written >= self.target or self.counters.read >= self.records):
            self.done_at = time.perf_counter()
            self.done_cpu = time.process_time()
            self.done.set()
        return written


class _TimedBridge(KafkaBridge):
    """The real bridge, held at the door: it joins its group and fetches its first batch, then waits for its
    turn (`go`) before converting anything, and notes when its turn began. So the four bridges' group joins
    (~5 s each on the embedded broker, which holds a new group's JoinGroup for half the session timeout) overlap,
    while their conversions still run one dialect at a time. The door is in `_prepare` of the first batch, where
    the commit loop awaits it before it starts that batch's step and fetches the next one: the whole bridge waits,
    and then runs as it does unheld. (The door used to be in the first batch's recovery check, inside its step:
    the loop meanwhile took the second batch and, the recovery not yet settled, never converted it ahead.)"""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.at_door = asyncio.Event()  # joined, first batch fetched
        self.go = asyncio.Event()
        self.abandoned = False  # the measurement ended before this bridge's turn
        self.first_batch_at: float | None = None
        self.first_batch_cpu: float | None = None

    async def _prepare(self, batch: Batch) -> None:
        if len(batch) and not self.at_door.is_set():  # the first batch
            self.at_door.set()
            await self.go.wait()
            if self.abandoned:
                raise CollectorBenchError(f"{self.label}: abandoned before its turn")
            self.first_batch_at = time.perf_counter()
            self.first_batch_cpu = time.process_time()
        await super()._prepare(batch)


async def _create_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=SOURCE_PARTITIONS, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, values: list[Record]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=4_000_000)
    await producer.start()
    try:  # no key, as Kong's kafka-log and the OTel exporter (default) write: spread over the partitions
        await asyncio.gather(*[await producer.send(topic, value) for value in values])
    finally:
        await producer.stop()


async def _end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    """Where the run's records will start, at or below: `end_offsets()` under-reports on the embedded broker,
    which only makes the read-back start earlier."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.end_offsets(await topic_partitions(bootstrap, topic))
    finally:
        await consumer.stop()


async def _ids_written(bootstrap: str, topic: str, start: dict[TopicPartition, int], timeout: float) -> Counter[str]:
    """Event ids written to the usage topic from `start` on, read to the end (everything was acknowledged before
    the read starts, so the end covers every record of the run and any duplicate of it)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=8_000_000)
    ids: Counter[str] = Counter()

    def count(message) -> None:  # noqa: ANN001 - aiokafka's ConsumerRecord
        ids.update(event["event_id"] for event in orjson.loads(message.value))

    await consumer.start()
    try:
        await read_to_end(consumer, start, count, start=start, timeout=timeout)
        return ids
    finally:
        await consumer.stop()


class _DialectRun:
    """One dialect's measurement: its records on a source topic of their own, its bridge and its sink."""

    def __init__(self, bootstrap: str, dialect: str, n: int, usage_topic: str, seed: int):
        self.bootstrap, self.dialect, self.n, self.usage_topic = bootstrap, dialect, n, usage_topic
        self.run_id = uuid.uuid4().hex[:8]
        self.values, self.expected_ids = gateway_records(dialect, n, f"{seed}:{self.run_id}")  # ids of this run
        self.source = f"bench.collect.{dialect}.{self.run_id}"
        self.timeout = max(120.0, n / 100)
        self.sink = _TimedSink(bootstrap, "collect:kafka", topic=usage_topic, target=n, records=len(self.values))
        self.state_dir = tempfile.TemporaryDirectory(prefix="tokenmeter-bench-")  # the pending-batch record
        self.bridge = _TimedBridge(bootstrap, self.source, dialect, f"bench-collect-{dialect}-{self.run_id}",
                                   self.sink, from_beginning=True, log_every_s=3600,
                                   state_path=Path(self.state_dir.name) / "state.json")
        self.stop = asyncio.Event()
        self.running: asyncio.Task | None = None
        self.cpu_rate: float | None = None

    async def start(self) -> None:
        """Its records all on the source topic, then its bridge started (it joins, fetches, waits at the door)."""
        await _create_topic(self.bootstrap, self.source)
        await _produce(self.bootstrap, self.source, self.values)
        self.running = asyncio.create_task(self.bridge.run(self.stop))

    async def at_door(self) -> None:
        door = asyncio.create_task(self.bridge.at_door.wait())
        try:
            await self._until(door, f"no first batch within {self.timeout:.0f} s")
        finally:
            door.cancel()

    async def measure(self) -> float:
        before = await _end_offsets(self.bootstrap, self.usage_topic)
        self.bridge.go.set()
        done = asyncio.create_task(self.sink.done.wait())
        try:
            await self._until(done, f"not done after {self.timeout:.0f} s")
        finally:
            done.cancel()
            await self.close()
        counters = self.sink.counters
        if (counters.written, counters.rejected, counters.skipped, counters.read) != (self.n, 0, 0, len(self.values)):
            raise CollectorBenchError(f"{self.dialect}: {len(self.values)} records of {self.n} calls gave "
                                      f"{counters.summary()}")
        found = await _ids_written(self.bootstrap, self.usage_topic, before, self.timeout)
        missing = [i for i in self.expected_ids if found[i] != 1]
        if missing or len(set(self.expected_ids)) != self.n:
            raise CollectorBenchError(f"{self.dialect}: {len(missing)} of {self.n} expected event ids not on "
                                      f"{self.usage_topic} exactly once (first: {missing[:3]})")
        assert self.bridge.first_batch_at is not None and self.sink.done_at is not None
        assert self.bridge.first_batch_cpu is not None and self.sink.done_cpu is not None
        self.cpu_rate = self.n / max(self.sink.done_cpu - self.bridge.first_batch_cpu, 1e-9)
        return self.n / (self.sink.done_at - self.bridge.first_batch_at)

    async def _until(self, waiter: asyncio.Task, timeout_message: str) -> None:
        assert self.running is not None
        finished, _ = await asyncio.wait({self.running, waiter}, timeout=self.timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        if self.running in finished:
            self.running.result()  # the bridge stopped by itself: surface its error
            raise CollectorBenchError(f"{self.dialect}: the bridge stopped after {self.sink.counters.summary()}")
        if waiter not in finished:
            raise CollectorBenchError(f"{self.dialect}: {timeout_message} ({self.sink.counters.summary()})")

    async def close(self) -> None:
        self.stop.set()
        if not self.bridge.go.is_set():
            self.bridge.abandoned = True
            self.bridge.go.set()  # out of the door, into the error: the bridge then stops
        if self.running is not None:
            try:
                await self.running  # the bridge stops its consumer and the sink's producer
            except Exception:  # noqa: BLE001 - its failure was reported (or another one is on its way)
                pass
            self.running = None
        self.state_dir.cleanup()


def measure_collectors(bootstrap: str, n: int, dialects: tuple[str, ...] = DIALECTS, *,
                       usage_topic: str = topics.USAGE, seed: int = 7,
                       cpu_rates: dict[str, float] | None = None) -> dict[str, float]:
    """Events/s of the Kafka bridge per dialect, one dialect at a time (a fresh source topic and group each).

    `usage_topic` is created (4 partitions) if missing; pass a topic of its own when something else, such as a
    running worker, consumes tokenmeter.usage on the same broker. Raises CollectorBenchError unless every
    dialect wrote exactly n events with the expected ids. `cpu_rates`, when given, receives each dialect's events
    per CPU second of this process over the same window (the bridge's own work; the broker is another process):
    steadier than the wall rate on a shared machine.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")

    async def run() -> dict[str, float]:
        await _create_topic(bootstrap, usage_topic)
        runs = [_DialectRun(bootstrap, dialect, n, usage_topic, seed) for dialect in dialects]
        try:
            for one in runs:
                await one.start()
            for one in runs:  # all joined (their joins overlapped) and idle at the door
                await one.at_door()
            rates = {one.dialect: await one.measure() for one in runs}  # one at a time
            if cpu_rates is not None:
                cpu_rates.update({one.dialect: one.cpu_rate for one in runs})
            return rates
        finally:
            for one in runs:
                await one.close()

    return asyncio.run(run())
