"""The worker takes a batch when the usage stream goes quiet, not when Faust's take_events timer fires
(streams/batch_take.py): with a long batch window (TOKENMETER_WORKER_BATCH_SECONDS=30) a burst is still priced at
once. Before, every batch after the first waited the whole window (Faust restarts its timer after each batch)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from app.process import child_preexec
from tests.streams.test_worker_poison import ROOT, event, health, priced_ids, stop, wait_for
from tokenmeter import topics
from tokenmeter.settings import free_port

pytestmark = pytest.mark.slow(seconds=22)  # rough seconds: longest files first (tests/suite_order.py)


async def _produce_burst(bootstrap: str, key: bytes, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topics.USAGE, value, key=key) for value in values])
    finally:
        await producer.stop()


def start_worker(bootstrap: str, tmp_path: Path, port: int, env_extra: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENMETER_KAFKA_BOOTSTRAP=bootstrap,
               TOKENMETER_DATA_DIR=str(tmp_path / "data"), TOKENMETER_API_PORT=str(port),
               TOKENMETER_LOG_LEVEL="warning", TOKENMETER_WORKER_BATCH_SECONDS="30")
    env.update(env_extra or {})
    log = open(tmp_path / "worker.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "app", "worker"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, preexec_fn=child_preexec)


def test_a_burst_is_priced_without_waiting_for_the_batch_window(kafka_bootstrap, tmp_path):
    team = f"burst-{uuid.uuid4().hex[:8]}"
    port = free_port()
    worker = start_worker(kafka_bootstrap, tmp_path, port)
    try:
        wait_for(lambda: health(port)[0] == 200, what="worker health")
        for burst in range(3):  # the second and third come right after a batch: the old timer made each wait 30 s
            values = [orjson.dumps([event(team, burst * 1000 + m * 10 + i) for i in range(10)]) for m in range(20)]
            started = time.monotonic()
            asyncio.run(_produce_burst(kafka_bootstrap, f"team:{team}".encode(), values))
            expected = 200 * (burst + 1)
            wait_for(lambda: len(set(priced_ids(kafka_bootstrap, team))) >= expected, timeout=12,
                     what=f"burst {burst} priced")
            assert time.monotonic() - started < 12
        assert len(set(priced_ids(kafka_bootstrap, team))) == 600
    finally:
        stop(worker)


def test_the_worker_sets_polars_allocator_before_polars_loads():
    """The jemalloc setting (streams/worker.py) is read once, when polars loads: the CLI's worker command must not
    have loaded polars before streams.worker sets it."""
    code = ("import sys, os; import app.cli, streams; assert 'polars' not in sys.modules; import streams.worker; "
            "assert 'polars' in sys.modules; print(os.environ['_RJEM_MALLOC_CONF'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env={k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"})
    assert out.returncode == 0, out.stderr
    # polars appends it to its own defaults (dirty_decay_ms:500,...): the last value of a key wins in jemalloc
    assert out.stdout.strip().splitlines()[-1].endswith(",dirty_decay_ms:30000,muzzy_decay_ms:30000")


SLOW_STEP = '''
import os
import time
from pathlib import Path

import streams.columnar as columnar

_original = columnar.process_batch_columnar


def _slow(records, book, *args, **kwargs):
    started = Path(os.environ["TEST_SLOW_STEP_STARTED"])
    if any(r.value and b"slow-step" in r.value for r in records):
        started.touch()
        time.sleep(4)  # a long batch step: the event loop must keep answering meanwhile
    return _original(records, book, *args, **kwargs)


columnar.process_batch_columnar = _slow
'''


def test_health_answers_while_a_batch_is_priced(kafka_bootstrap, tmp_path):
    """The batch step runs on its own thread (streams/batch_overlap.py): before, it ran on the event loop, and for the
    length of a batch (a second for 50,000 events) the worker answered no HTTP request (/health, /v1/decision,
    reservations). A sitecustomize makes the step take 4 s for one marked record; /health must answer meanwhile."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(SLOW_STEP)
    started = tmp_path / "step-started"
    port = free_port()
    env_extra = {"PYTHONPATH": f"{inject}:{ROOT}", "TEST_SLOW_STEP_STARTED": str(started)}
    worker = start_worker(kafka_bootstrap, tmp_path, port, env_extra)
    try:
        wait_for(lambda: health(port)[0] == 200, what="worker health")
        team = f"slow-{uuid.uuid4().hex[:8]}"
        asyncio.run(_produce_burst(kafka_bootstrap, f"team:{team}".encode(),
                                   [orjson.dumps([event(team, 1, source="slow-step")])]))
        wait_for(started.exists, timeout=30, what="the slow batch step")
        t0 = time.monotonic()
        assert health(port)[0] == 200  # health() gives up after 2 s: the step still sleeps
        assert time.monotonic() - t0 < 2
        wait_for(lambda: f"{team}-1" in priced_ids(kafka_bootstrap, team), timeout=30, what="the slow event priced")
    finally:
        stop(worker)


def test_the_worker_keeps_its_faust_directories_under_the_data_dir(tmp_path, monkeypatch):
    """Faust puts `<app id>-data/` in the working directory unless told: a worker started from a checkout littered it
    (and one in a container with a read-only working directory could not start). Its directories belong under
    TOKENMETER_DATA_DIR, with the rest of its state."""
    from streams.worker import create_worker_app
    from tokenmeter.settings import Settings

    cwd, data_dir = tmp_path / "cwd", tmp_path / "state" / "nested"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    app = create_worker_app(Settings(data_dir=data_dir), app_id="tokenmeter-worker-datadir-test")
    app._create_directories()  # what Faust runs when the worker starts
    assert list(cwd.iterdir()) == []
    assert Path(app.conf.tabledir).resolve().is_relative_to(data_dir.resolve())
    assert Path(app.conf.tabledir).is_dir()
