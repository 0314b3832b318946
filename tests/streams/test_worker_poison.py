"""Hostile records between valid ones, through the real worker process and the real broker: none crashes an agent,
each bad record gets its dead letter, every valid event is priced, and a dead letter the broker refuses stops the
batch (retried, not acked) while /health says which agent is failing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.topic_reader import read_topic
from tokenmeter import topics
from tokenmeter.priced_wire import decode_priced
from app.process import child_preexec
from tokenmeter.settings import free_port

pytestmark = pytest.mark.slow(seconds=15)  # rough seconds: longest files first (tests/suite_order.py)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    """This file produces hostile records to tokenmeter's topics: they stay on a broker of its own."""
    return own_broker


def event(team: str, n: int, **extra) -> dict:
    return {"event_id": f"{team}-{n}", "ts": datetime.now(timezone.utc).isoformat(), "source": "test",
            "provider": "openai", "model": "gpt-4o", "attribution": {"team": team},
            "usage": {"input_tokens": 1000, "output_tokens": 10}, **extra}


def deep_array(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


def health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
    except OSError:
        return 0, {}


def wait_for(check, timeout: float = 90.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


async def produce(bootstrap: str, key: bytes, values: list[bytes | None]) -> list[tuple[int, int]]:
    """(partition, offset) of each value, in order (one key: one partition)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=8_000_000)
    await producer.start()
    try:
        out = []
        for value in values:
            meta = await producer.send_and_wait(topics.USAGE, value, key=key)
            out.append((meta.partition, meta.offset))
        return out
    finally:
        await producer.stop()


def priced_ids(bootstrap: str, team: str) -> list[str]:
    out = []
    for record in asyncio.run(read_topic(bootstrap, topics.PRICED)):
        try:  # other tests on this broker leave single objects and garbage on the priced topic
            decoded = decode_priced(record.value, record.headers)  # JSON or Arrow (the worker's default, arrow14)
        except ValueError:
            continue
        for e in decoded:
            if isinstance(e, dict) and (e.get("attribution") or {}).get("team") == team:
                out.append(e["event_id"])
    return out


def letters_of(bootstrap: str, positions: list[tuple[int, int]]) -> list[dict]:
    """The worker's dead letters for the usage records at `positions`, in order of the letters."""
    wanted = set(positions)
    out = []
    for record in asyncio.run(read_topic(bootstrap, topics.DEADLETTER)):
        letter = orjson.loads(record.value)
        if letter.get("topic") == topics.USAGE and (letter.get("partition"), letter.get("offset")) in wanted:
            out.append(letter)
    return out


def start_worker(bootstrap: str, tmp_path: Path, port: int, extra_path: str = "") -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=f"{extra_path}:{ROOT}" if extra_path else str(ROOT),
               TOKENMETER_KAFKA_BOOTSTRAP=bootstrap, TOKENMETER_DATA_DIR=str(tmp_path / "data"),
               TOKENMETER_API_PORT=str(port), TOKENMETER_LOG_LEVEL="warning", TOKENMETER_WORKER_BATCH_SECONDS="0.2")
    log = open(tmp_path / "worker.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "app", "worker"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, preexec_fn=child_preexec)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_hostile_records_get_dead_letters_and_every_valid_event_is_priced(kafka_bootstrap, tmp_path):
    team = f"poison-{uuid.uuid4().hex[:8]}"
    huge = b"\x00not json " + os.urandom(16) + team.encode() + b"x" * 5_000_000  # 5 MB, not JSON
    non_utf8 = b'{"event_id": "' + team.encode() + b'-bad\xff\xfe", "ts": 1}'
    big_batch = [event(team, 1000 + i) for i in range(10_000)]
    bad_positions = [0, 1, 4_999, 9_998]
    for i in bad_positions:  # wrong-typed fields inside a 10,000-event message
        big_batch[i] = {**big_batch[i], "usage": {"input_tokens": "many", "output_tokens": -1}}
    values: list[bytes | None] = [
        orjson.dumps([event(team, 1), event(team, 2)]),
        huge,
        orjson.dumps(event(team, 3)),
        b'[{"team": "' + team.encode() + b'"}, ' + deep_array(300) + b"]",  # 300 deep, in a micro-batch
        non_utf8,
        orjson.dumps(42),
        orjson.dumps(f"{team} is a string"),
        json.dumps({"event_id": team, "ts": [], "usage": {"input_tokens": 2 ** 70}}).encode(),  # > 64 bits
        None,  # tombstone
        orjson.dumps(big_batch),
        orjson.dumps([event(team, 4)]),
    ]
    port = free_port()
    worker = start_worker(kafka_bootstrap, tmp_path, port)
    try:
        wait_for(lambda: health(port)[0] == 200, what="worker health")
        positions = asyncio.run(produce(kafka_bootstrap, f"team:{team}".encode(), values))
        expected = {f"{team}-{n}" for n in (1, 2, 3, 4)} | {e["event_id"] for i, e in enumerate(big_batch)
                                                            if i not in bad_positions}
        wait_for(lambda: expected <= set(priced_ids(kafka_bootstrap, team)), what="every valid event priced")
        letters = wait_for(lambda: (ls := letters_of(kafka_bootstrap, positions)) and len(ls) >= 12 and ls,
                           what="the dead letters")
        per_record = [sum((l["partition"], l["offset"]) == at for l in letters) for at in positions]
        assert per_record == [0, 1, 0, 2, 1, 1, 1, 1, 1, 4, 0]  # every bad record its letter(s), each once
        by_record = {at: [l for l in letters if (l["partition"], l["offset"]) == at] for at in positions}
        [big] = by_record[positions[1]]
        assert big["reason"].startswith("not JSON") and big["payload_truncated"]
        assert big["payload_bytes"] == len(huge) and big["payload_sha256"] == hashlib.sha256(huge).hexdigest()
        assert max(len(orjson.dumps(letter)) for letter in letters) < 100_000  # every letter fits a message
        assert all(l["reason"].startswith("invalid event") for l in by_record[positions[3]])  # 300 deep
        [not_utf8] = by_record[positions[4]]
        assert not_utf8["reason"].startswith("not JSON") and not_utf8["payload_bytes"] == len(non_utf8)
        assert "tombstone" in by_record[positions[8]][0]["reason"]
        assert all("usage" in l["reason"] for l in by_record[positions[9]])
        assert health(port) == (200, {"status": "ok", "app": "tokenmeter-worker"})
        assert worker.poll() is None
    finally:
        stop(worker)
        print((tmp_path / "worker.log").read_text()[-4000:])


FAIL_DEADLETTERS = '''
import os
from pathlib import Path

_flag = Path(os.environ["TEST_FAIL_DEADLETTERS_WHILE"])


def _patch():
    from faust.topics import Topic

    original = Topic.send

    async def send(self, *args, **kwargs):
        if self.get_topic_name() == "tokenmeter.deadletter" and _flag.exists():
            from aiokafka.errors import KafkaTimeoutError

            raise KafkaTimeoutError("injected by the test: the broker did not take the dead letter")
        return await original(self, *args, **kwargs)

    Topic.send = send


_patch()
'''


def test_a_dead_letter_the_broker_refuses_is_retried_not_acked_and_health_says_failing(kafka_bootstrap, tmp_path):
    """Failure injected in the real worker process (a sitecustomize wraps Faust's Topic.send for the dead-letter
    topic while a flag file exists): the batch is not acked, /health answers 503 naming the agent; once the broker
    takes letters again the same batch completes: its dead letter and its valid event both arrive."""
    team = f"refused-{uuid.uuid4().hex[:8]}"
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(FAIL_DEADLETTERS)
    flag = tmp_path / "fail-now"
    port = free_port()
    os.environ["TEST_FAIL_DEADLETTERS_WHILE"] = str(flag)
    try:
        worker = start_worker(kafka_bootstrap, tmp_path, port, extra_path=str(inject))
    finally:
        del os.environ["TEST_FAIL_DEADLETTERS_WHILE"]
    try:
        wait_for(lambda: health(port)[0] == 200, what="worker health")
        flag.touch()
        bad = {**event(team, 2), "usage": {"input_tokens": "lots"}}
        positions = asyncio.run(produce(kafka_bootstrap, f"team:{team}".encode(),
                                        [orjson.dumps([event(team, 1), bad])]))
        status, body = wait_for(lambda: (h := health(port))[0] == 503 and h, what="/health reporting the failure")
        assert body["status"] == "failing" and "injected by the test" in json.dumps(body["failing"])
        assert not letters_of(kafka_bootstrap, positions)
        flag.unlink()
        wait_for(lambda: letters_of(kafka_bootstrap, positions), what="the dead letter after the broker took it")
        wait_for(lambda: f"{team}-1" in priced_ids(kafka_bootstrap, team), what="the valid event")
        wait_for(lambda: health(port)[0] == 200, what="health back to ok")
        assert worker.poll() is None
    finally:
        stop(worker)
        print((tmp_path / "worker.log").read_text()[-4000:])
