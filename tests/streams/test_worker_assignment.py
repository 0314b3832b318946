"""A worker whose group assignment holds no partition of its source topics (tokenmeter.usage, budget-spend)
processes nothing. Seen in the suite: the worker's assignment held only `<app>-__assignor-__leader` and the test
timed out. Here another member of the worker's group leads it and assigns every source partition to itself
(what a leader with stale metadata, or a dead member not yet expired, amounts to for this worker): /health must
answer 503 `idle`, and the worker must ask the group to rebalance so that a fair leader can give it partitions."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

from kafka_support import SESSION_TIMEOUT_MS
from process_support import stop, wait_for
from tokenmeter import topics
from tokenmeter.settings import free_port

pytestmark = pytest.mark.slow(seconds=22)  # rough seconds (tests/suite_order.py): two workers joining a group
ROOT = Path(__file__).resolve().parents[2]
SOURCES = (topics.USAGE, topics.BUDGET_SPEND)


class Greedy(AbstractPartitionAssignor):
    """Named like the worker's protocol, so this member's leadership decides: the first `greedy_rounds` assignments
    with another member keep every source partition here, later ones are aiokafka's round-robin."""

    name = "roundrobin"
    version = 0
    greedy_rounds = 1
    me: str | None = None
    rounds = 0

    @classmethod
    def assign(cls, cluster, members):  # noqa: ANN001, ANN206
        from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

        if len(members) > 1:
            cls.rounds += 1
            if cls.rounds > cls.greedy_rounds:
                return RoundRobinPartitionAssignor.assign(cluster, members)
        mine = min(m for m, meta in members.items() if set(meta.subscription) == set(SOURCES))
        wanted: dict[str, dict[str, list[int]]] = collections.defaultdict(lambda: collections.defaultdict(list))
        for member, meta in members.items():
            for topic in meta.subscription:
                owner = mine if topic in SOURCES else member
                wanted[owner][topic] = sorted(cluster.partitions_for_topic(topic) or ())
        return {m: ConsumerProtocolMemberAssignment(cls.version, sorted(wanted[m].items()), b"") for m in members}

    @classmethod
    def metadata(cls, topics_):  # noqa: ANN001, ANN206
        return ConsumerProtocolMemberMetadata(cls.version, list(topics_), b"")

    @classmethod
    def on_assignment(cls, assignment):  # noqa: ANN001, ANN206
        pass


class Hog:
    """A plain consumer in the worker's group, on its own thread and loop, that joins first (and so leads)."""

    def __init__(self, bootstrap: str, group: str, greedy_rounds: int):
        Greedy.greedy_rounds, Greedy.rounds = greedy_rounds, 0
        self.bootstrap, self.group = bootstrap, group
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.consumer: AIOKafkaConsumer | None = None

    def _run(self, coro):  # noqa: ANN001, ANN202
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def start(self) -> None:
        async def start():
            self.consumer = AIOKafkaConsumer(*SOURCES, bootstrap_servers=self.bootstrap, group_id=self.group,
                                             partition_assignment_strategy=[Greedy], enable_auto_commit=False,
                                             session_timeout_ms=SESSION_TIMEOUT_MS, heartbeat_interval_ms=500,
                                             rebalance_timeout_ms=3000)
            await self.consumer.start()
            while not self.consumer.assignment():
                await asyncio.sleep(0.05)  # (fetching keeps it in the group; getmany below runs in a task)
            self._poll = asyncio.ensure_future(self._keep_polling())

        self._run(start())

    async def _keep_polling(self) -> None:
        while True:
            await self.consumer.getmany(timeout_ms=200)

    def stop(self) -> None:
        async def stop():
            if getattr(self, "_poll", None):
                self._poll.cancel()
            if self.consumer is not None:
                await self.consumer.stop()

        try:
            self._run(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


def _health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, {}


def _start_worker(bootstrap: str, app_id: str, port: int, log_path: Path) -> subprocess.Popen:
    """The real worker (`faust_worker(create_worker_app(...))`) with its own group id, so the group is this test's."""
    code = ("import sys; from streams.worker import create_worker_app, faust_worker; "
            "from tokenmeter.settings import load_settings; s = load_settings(); "
            f"faust_worker(create_worker_app(s, app_id={app_id!r}), s).execute_from_commandline()")
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENMETER_KAFKA_BOOTSTRAP=bootstrap,
               TOKENMETER_DATA_DIR=str(log_path.parent / "data"), TOKENMETER_API_PORT=str(port),
               TOKENMETER_LOG_LEVEL="info")
    return subprocess.Popen([sys.executable, "-c", code, "worker"], env=env, cwd=ROOT,
                            stdout=open(log_path, "ab"), stderr=subprocess.STDOUT)


@pytest.mark.parametrize("greedy_rounds, expect", [(1, "heals"), (1000, "idle")])
def test_a_worker_holding_no_source_partition_is_reported_and_rejoins(kafka_bootstrap, tmp_path, greedy_rounds,
                                                                      expect):
    app_id = f"tokenmeter-worker-assign-{uuid.uuid4().hex[:8]}"
    port = free_port()
    hog = Hog(kafka_bootstrap, app_id, greedy_rounds)
    worker = None
    try:
        hog.start()
        worker = _start_worker(kafka_bootstrap, app_id, port, tmp_path / "worker.log")
        idle = wait_for(lambda: (lambda h: h[1] if h[1].get("status") == "idle" and
                                 h[1]["assignment"]["assignments"] else None)(_health(port)),
                        timeout=60, what="/health reporting the worker idle after its first assignment")
        assert idle["assignment"]["partitions"] == {t: [] for t in SOURCES}
        assert "holds no partition of tokenmeter.usage" in idle["reason"]
        if expect == "heals":  # the worker asks for a rebalance; the leader is fair this time
            ok = wait_for(lambda: (lambda h: h if h[0] == 200 else None)(_health(port)), timeout=30,
                          what="/health 200 after the worker re-joined")
            assert ok[1]["status"] == "ok"
            stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/stats", timeout=2).read())
            assert stats["assignment"]["rejoins"] >= 1 and any(stats["assignment"]["partitions"].values())
        else:  # a leader that keeps every partition: still reported, the worker keeps running
            wait_for(lambda: _health(port)[1].get("assignment", {}).get("rejoins", 0) >= 1, timeout=30,
                     what="a re-join")
            assert _health(port)[0] == 503 and worker.poll() is None
    finally:
        if worker is not None:
            stop(worker)
        hog.stop()
