"""Helpers of the reservation tests: real workers (subprocesses) on a real broker, HTTP calls, usage events."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

# the reservation tests import these from here
from process_support import start_worker, stop, wait_for, zone_at_noon  # noqa: F401
from tokenmeter import topics

ROOT = Path(__file__).resolve().parents[3]


def worker_env(bootstrap: str, data_dir: Path, api_port: int, **extra: str) -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), TOKENMETER_KAFKA_BOOTSTRAP=bootstrap,
                TOKENMETER_DATA_DIR=str(data_dir), TOKENMETER_API_PORT=str(api_port), TOKENMETER_LOG_LEVEL="info",
                **extra)






def call(method: str, url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, {}




def ready(port: int) -> bool:
    return call("GET", f"http://127.0.0.1:{port}/ready")[0] == 200


def usage_event(team: str, input_tokens: int, output_tokens: int, event_id: str | None = None,
                tags: dict | None = None) -> dict:
    return {"event_id": event_id or str(uuid.uuid4()), "ts": datetime.now(timezone.utc).isoformat(),
            "source": "test", "provider": "openai", "model": "gpt-4o", "service_tier": "default",
            "attribution": {"team": team, "user": "u1", "tags": tags or {}},
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}


async def send_usage(bootstrap: str, events: list[dict], producer: AIOKafkaProducer | None = None) -> None:
    own = producer is None
    if own:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
        await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(topics.USAGE, key=f"team:{event['attribution']['team']}".encode(),
                                         value=orjson.dumps([event]))
    finally:
        if own:
            await producer.stop()


def spend_event(team: str, event_id: str | None = None) -> dict:
    """A gpt-4o call of 100,000 input and 10,000 output tokens (0.35 USD) for `team`: the seed tests' unit of spend."""
    return {"event_id": event_id or str(uuid.uuid4()), "ts": datetime.now(timezone.utc).isoformat(),
            "source": "test", "provider": "openai", "model": "gpt-4o", "attribution": {"team": team, "user": "u1"},
            "usage": {"input_tokens": 100_000, "output_tokens": 10_000}}


def produce_one_message(bootstrap: str, events: list[dict]) -> None:
    """`events` (one team's) as ONE usage message, keyed by the first event's team: one batch for the worker."""
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            key = f"team:{events[0]['attribution']['team']}".encode()
            await producer.send_and_wait(topics.USAGE, key=key, value=orjson.dumps(events))
        finally:
            await producer.stop()

    asyncio.run(send())
