"""The broker backlog `up` samples (app.broker.unconsumed_backlog, BacklogWatcher) and what `tokenmeter status`
says of it: records waiting per stage, and a stage that commits nothing while records wait. Before, the sample was
taken but only read after a broker loss; a child whose event loop turned (fresh heartbeat) with a stuck consumer
showed `running` and nothing else."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from app.broker import unconsumed_backlog, with_progress
from app.supervisor import STALLED_S, describe_stages
from tokenmeter import topics


def test_the_backlog_counts_what_a_stage_has_not_committed_and_what_it_committed(own_broker):
    async def scenario() -> tuple[dict, dict]:
        producer = AIOKafkaProducer(bootstrap_servers=own_broker)
        await producer.start()
        try:
            for i in range(12):
                await producer.send_and_wait(topics.PRICED, b"{}", partition=i % 2)
        finally:
            await producer.stop()
        before = await unconsumed_backlog(own_broker, 4)
        consumer = AIOKafkaConsumer(bootstrap_servers=own_broker, group_id="tokenmeter-loader",
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topics.PRICED, p) for p in (0, 1)]
            consumer.assign(tps)
            await consumer.commit({tp: 6 for tp in tps})  # the loader has read everything
        finally:
            await consumer.stop()
        return before, await unconsumed_backlog(own_broker, 4)

    before, after = asyncio.run(scenario())
    assert before["backlog"][topics.PRICED] == 12 and before["committed"][topics.PRICED] == 0
    assert after["backlog"][topics.PRICED] == 0 and after["committed"][topics.PRICED] == 12
    assert set(after["backlog"]) == {topics.USAGE, topics.PRICED, topics.ALERTS}


def test_a_stage_with_records_waiting_and_no_commit_is_said_stalled():
    def sample(at: float, waiting: int, committed: int, previous: dict | None = None) -> dict:
        return with_progress(previous, {"at": at, "backlog": {topics.PRICED: waiting, topics.USAGE: 0},
                                        "committed": {topics.PRICED: committed, topics.USAGE: 5}})

    first = sample(1000.0, 40, 100)
    moving = sample(1002.0, 35, 140, first)
    stuck = sample(1002.0 + STALLED_S, 80, 140, moving)  # more waiting, nothing committed since 1002
    assert stuck["progress_at"] == {topics.PRICED: 1002.0, topics.USAGE: 1002.0 + STALLED_S}
    text = describe_stages(stuck, now=1003.0 + STALLED_S)
    assert text.startswith("  waiting in the broker (sampled 1 s ago; a lower bound): ")
    assert f"loader 80 (nothing committed for {STALLED_S + 1} s)" in text and "worker 0," in text
    assert "alerts 0" in text
    drained = sample(1004.0 + STALLED_S, 0, 140, stuck)  # nothing waiting: not stalled, whatever the commits
    assert "nothing committed" not in describe_stages(drained, now=2000.0 + STALLED_S)
    assert "nothing committed" not in describe_stages(moving, now=1002.0 + STALLED_S - 1)


def test_status_prints_the_backlog_line_of_a_running_up(tmp_path):
    import json
    import os
    import time

    from app.supervisor import STATUS_FILE, print_status
    from tokenmeter.settings import Settings

    now = time.time()
    backlog = {"at": now - 2, "backlog": {topics.USAGE: 3, topics.PRICED: 1204, topics.ALERTS: 0},
               "committed": {}, "progress_at": {topics.USAGE: now - 2, topics.PRICED: now - 95, topics.ALERTS: now}}
    (tmp_path / STATUS_FILE).write_text(json.dumps({"pid": os.getppid(), "state": "running", "children": [
        {"name": "loader", "state": "running", "pid": 1, "restarts": 0}], "backlog": backlog}))
    out: list[str] = []
    assert print_status(Settings(data_dir=tmp_path), False, out.append) == 0
    assert any("worker 3, loader 1,204 (nothing committed for 95 s), alerts 0" in line for line in out), out
    for damaged in ({"backlog": {}}, "not an object", {"at": "soon"}):  # no traceback from status (walk29)
        (tmp_path / STATUS_FILE).write_text(json.dumps({"pid": os.getppid(), "state": "running", "children": [],
                                                        "backlog": damaged}))
        out.clear()
        assert print_status(Settings(data_dir=tmp_path), False, out.append) == 0
        assert not any("waiting in the broker" in line for line in out)


def test_the_backlog_counts_every_record_of_a_batch_the_broker_acknowledged(own_broker):
    """soak34: the embedded broker's ListOffsets(latest) under-reports a partition's end by a produce batch, so
    50 records just acknowledged read as 1 waiting: a broker loss reported far fewer records at risk than it took
    (a soak: 164 reported, 245 lost). The end is the high watermark of a fetch response."""
    async def scenario() -> dict:
        producer = AIOKafkaProducer(bootstrap_servers=own_broker, linger_ms=20)
        await producer.start()
        try:
            sent = [await producer.send(topics.USAGE, b"{}", partition=1) for _ in range(50)]  # one batch or two
            await asyncio.gather(*sent)
        finally:
            await producer.stop()
        return await unconsumed_backlog(own_broker, 4)

    assert asyncio.run(scenario())["backlog"][topics.USAGE] == 50


def test_the_watcher_keeps_its_connections_and_sees_records_acknowledged_between_samples(own_broker):
    """soak35: each sample opened and closed an admin client and a consumer (bootstrap, metadata, new connections),
    ~0.7 CPU-s a minute of `up`'s supervisor and ~2.3 of the broker at one sample every 2 s. The watcher now keeps
    its clients: the same few connections from sample to sample, and still every record acknowledged in between."""
    import time

    import psutil

    from app.broker import BacklogWatcher
    from process_support import wait_for

    port = int(own_broker.rsplit(":", 1)[1])

    def local_ports() -> set[int]:
        return {c.laddr.port for c in psutil.Process().net_connections("tcp")
                if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED}

    async def produce(n: int) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=own_broker)
        await producer.start()
        try:
            for _ in range(n):
                await producer.send_and_wait(topics.ALERTS, b"{}", partition=3)
        finally:
            await producer.stop()

    watcher = BacklogWatcher(own_broker, 4, every_s=0.1).start()
    try:
        def sampled_after(moment: float) -> dict | None:
            latest = watcher.latest
            return latest if latest and latest["at"] > moment else None

        wait_for(lambda: sampled_after(0), 30, "a first sample")
        before = watcher.latest["backlog"][topics.ALERTS]
        snapshots, samples, last_at = [], 0, 0.0
        deadline = time.monotonic() + 30
        while samples < 8 and time.monotonic() < deadline:
            latest = wait_for(lambda: sampled_after(last_at), 30, "the next sample")
            last_at, samples = latest["at"], samples + 1
            snapshots.append(local_ports())
        assert samples == 8
        assert snapshots[0] and all(ports == snapshots[0] for ports in snapshots), \
            f"the watcher's connections to the broker, after each of {samples} samples: {snapshots}"
        asyncio.run(produce(7))
        produced_at = time.time()
        latest = wait_for(lambda: sampled_after(produced_at), 30, "a sample after the produce")
        assert latest["backlog"][topics.ALERTS] == before + 7
    finally:
        watcher.stop()
