"""Helpers shared by the collector-mode tests (no tests here): run `tokenmeter` subprocesses, read topics back."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from streams import topic_reader

REPO = Path(__file__).resolve().parents[2]


def cli_env(bootstrap: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENMETER_KAFKA_BOOTSTRAP=bootstrap,
               TOKENMETER_DATA_DIR=str(data_dir), TOKENMETER_LOG_LEVEL="info")
    env.update(extra)
    return env


def start_cli(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "app", "collect", *args], env=env, cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def start_http(data_dir: Path, bootstrap: str, *args: str, **env: str) -> tuple[str, subprocess.Popen]:
    """`tokenmeter collect http` on a free port with `args` (env: extra variables), answering /healthz: (its URL, the
    process). Stopped here if it never answers; the caller stops it otherwise (`stop_process`)."""
    from process_support import http_status
    from tokenmeter.settings import free_port

    port = free_port()
    log_path = data_dir / f"http-{port}.log"
    proc = start_cli(["http", "--port", str(port), *args], cli_env(bootstrap, data_dir, **env), log_path)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, log_path.read_text()
        return http_status(url + "/healthz", timeout=1) == 200

    try:
        wait_for(ready, 30, "collect http /healthz")
    except BaseException:
        stop_process(proc)
        raise
    return url, proc


def stop_process(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def read_topic(bootstrap: str, topic: str, done: Callable[[list[Any]], bool], timeout: float = 30.0,
               settle: float = 0.0) -> list[Any]:
    """Every decoded message value of `topic` from the start, until `done(values)` (then `settle` s more)."""

    async def run() -> list[Any]:
        # Assigned, not subscribed: a consumer group would first wait out the broker's JoinGroup hold (~5 s).
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                    enable_auto_commit=False)
        await consumer.start()
        values: list[Any] = []
        try:
            await consumer.topics()  # loads the metadata, so the partitions are known
            partitions = consumer.partitions_for_topic(topic)
            assert partitions, f"topic {topic} does not exist on {bootstrap}"
            consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            settle_until = None
            while loop.time() < deadline:
                batch = await consumer.getmany(timeout_ms=300)
                for messages in batch.values():
                    values.extend(orjson.loads(m.value) for m in messages)
                if settle_until is None and done(values):
                    settle_until = loop.time() + settle
                if settle_until is not None and loop.time() >= settle_until:
                    break
        finally:
            await consumer.stop()
        return values

    return asyncio.run(run())


def read_to_end(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Any]:
    """Every decoded value of every partition of `topic`, up to the high watermark of each (so a duplicate
    sitting late in some partition is seen, unlike read_topic, which stops as soon as `done` holds)."""
    records = asyncio.run(topic_reader.read_topic(bootstrap, topic, timeout))
    values = []
    for r in records:
        try:
            values.append(orjson.loads(r.value))
        except (orjson.JSONDecodeError, TypeError):  # a tombstone, or a hostile record of another test
            continue
    return values


def events_of(values: list[Any]) -> list[dict[str, Any]]:
    """Flatten micro-batches (arrays) into events."""
    events = []
    for value in values:
        events.extend(value if isinstance(value, list) else [value])
    return events


def count_ids(bootstrap: str, topic: str, ids: set[str], timeout: float = 30.0, settle: float = 0.0) -> Counter:
    def found(values: list[Any]) -> bool:
        return ids <= {e.get("event_id") for e in events_of(values)}

    values = read_topic(bootstrap, topic, found, timeout, settle)
    return Counter(e["event_id"] for e in events_of(values) if e.get("event_id") in ids)


def canonical_event(event_id: str, team: str = "collect-test", **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "ts": "2026-11-01T08:00:00Z", "source": "sdk", "provider": "openai",
            "model": "gpt-4o", "attribution": {"team": team},
            "usage": {"input_tokens": 100, "output_tokens": 20}, **extra}
