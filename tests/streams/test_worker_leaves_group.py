"""A worker stopped cleanly leaves its consumer group at once, also when it joined the group's first generation.

The embedded broker (tansu) numbers a group's first generation 0, where Kafka starts at 1, and aiokafka sends its
LeaveGroup on stop only in a generation above 0 (`GroupCoordinator._maybe_leave_group`). So the first worker of a
group stayed in it as a ghost for a whole session timeout after it had exited (10 s in production, 4 s in the
tests): the next worker's join waited for the ghost (measured at the production 10 s: ready after 20.6 s instead
of ~8 s), and the rebalance when the ghost expired could revoke the partitions of a worker that was just ready.
In the suite that is the first worker of each xdist worker's session broker, followed by the next file's."""

from __future__ import annotations

import asyncio
import os
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from process_support import start_worker, stop, wait_for
from tokenmeter.settings import free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow(seconds=8)  # rough seconds: longest files first (tests/suite_order.py)


def _members(bootstrap: str, group: str) -> list[str]:
    async def describe() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            [response] = await admin.describe_consumer_groups([group])
        finally:
            await admin.close()
        [(error, _, _, _, _, members)] = response.groups
        assert error == 0, response
        return [member[0] for member in members]
    return asyncio.run(describe())


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_the_first_worker_of_a_group_leaves_it_when_stopped_and_subscribes_without_a_fixed_wait(own_broker, tmp_path):
    """A fresh broker, so the worker joins generation 0; a session of 8 s (the join waits half of it), so a ghost
    would outlast the check by seconds."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENMETER_KAFKA_BOOTSTRAP=own_broker,
               TOKENMETER_DATA_DIR=str(tmp_path / "data"), TOKENMETER_API_PORT=str(port),
               TOKENMETER_KAFKA_SESSION_TIMEOUT_SECONDS="8")
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        wait_for(lambda: _ready(port), timeout=90, what="worker ready")
        assert len(_members(own_broker, "tokenmeter-worker")) == 1
        stop(worker, signal.SIGTERM)
        assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]
        assert _members(own_broker, "tokenmeter-worker") == [], "the stopped worker is still a member of its group"
    finally:
        stop(worker)
    # patch 5: not Faust's 1 s before the consumer subscribes (the worker has no tables)
    log = (tmp_path / "worker.log").read_text()
    assert _seconds_between(log, "Waiting for tables to be registered", "Updating subscribed topics") < 0.5, log


def _seconds_between(log: str, first: str, then: str) -> float:
    """Seconds from the first log line containing `first` to the next one containing `then` (Faust's and mode's
    INFO lines carry a millisecond timestamp: `[2026-12-05 21:58:32,242] [pid] [INFO] ...`)."""
    from datetime import datetime

    def at(line: str) -> datetime:
        return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")

    lines = log.splitlines()
    start = next(i for i, line in enumerate(lines) if first in line)
    end = next(i for i in range(start, len(lines)) if then in lines[i])
    return (at(lines[end]) - at(lines[start])).total_seconds()
