"""The collector bench with N bridge processes in one consumer group (`collect kafka --processes N`, multi29).

The 1-process figure (collectors/bench.py) runs the bridge in the bench's own process. Here N child processes each
run the real `KafkaBridge` on the same source topic and group, as `--processes N` does (the same class, the same
pending-record directory), writing to the bench's own usage topic. Each child holds its first fetched batch at a
door (as the in-process bench does) and the bench opens the doors together only when the group has settled (every
member assigned a share, every member at the door), so group joins and rebalances stay out of the clock.

Clock: from the first member through the door to the last member's last acknowledged event (wall clocks of one
machine). CPU: the members' own CPU time over their share of that window, summed, per event (the broker is another
process, not counted, as in the 1-process figure). Done when the group's committed offsets reach the source topic's
end (every batch acknowledged, then committed); each event id is then checked on the usage topic exactly once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from collectors.bench import (SOURCE_PARTITIONS, CollectorBenchError, _create_topic, _end_offsets, _ids_written,
                              _produce, gateway_records)
from collectors.kafka_bridge import KafkaBridge
from collectors.sink import KafkaSink
from tokenmeter.child_process import child_preexec
from tokenmeter.commitloop import Batch

DOOR_POLL_S = 0.005


class _MemberSink(KafkaSink):
    """The real sink; notes the wall and CPU clocks of its last acknowledged publish."""

    last_at: float | None = None
    last_cpu: float | None = None

    async def publish(self, events: list[Any], dialect: str = "?") -> int:
        written = await super().publish(events, dialect)
        self.last_at, self.last_cpu = time.time(), time.process_time()
        return written


class _MemberBridge(KafkaBridge):
    """The real bridge, held at the door with its first batch until the bench's `go` file appears."""

    def __init__(self, *args: Any, status: Path, go: Path, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.status, self.go = status, go
        self.assigned = 0
        self.at_door = False
        self.go_at: float | None = None
        self.go_cpu: float | None = None
        self.on_assigned = self._assigned

    def _assigned(self, assigned: set[TopicPartition]) -> None:
        self.assigned = len(assigned)
        self._report()

    async def _prepare(self, batch: Batch) -> None:
        if len(batch) and not self.at_door:
            self.at_door = True
            self._report()
            while not self.go.exists():
                await asyncio.sleep(DOOR_POLL_S)
            self.go_at, self.go_cpu = time.time(), time.process_time()
        await super()._prepare(batch)

    def _report(self, **final: Any) -> None:
        tmp = self.status.with_suffix(".tmp")
        tmp.write_text(json.dumps({"assigned": self.assigned, "at_door": self.at_door, **final}))
        os.replace(tmp, self.status)


def member_main(bootstrap: str, source: str, dialect: str, group: str, usage_topic: str, work: str, k: int) -> None:
    """One child: bridge until SIGTERM, then write its counters and clocks to `<work>/<k>.json`."""
    logging.basicConfig(level=logging.WARNING)
    work_dir = Path(work)
    sink = _MemberSink(bootstrap, "collect:kafka", topic=usage_topic)
    bridge = _MemberBridge(bootstrap, source, dialect, group, sink, from_beginning=True, log_every_s=3600,
                           state_path=work_dir / "state.json", status=work_dir / f"{k}.json", go=work_dir / "go")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await bridge.run(stop)

    asyncio.run(main())
    bridge._report(written=sink.counters.written, read=sink.counters.read, rejected=sink.counters.rejected,
                   go_at=bridge.go_at, go_cpu=bridge.go_cpu, last_at=sink.last_at, last_cpu=sink.last_cpu)


async def _all_committed(bootstrap: str, topic: str, group: str, ends: dict[TopicPartition, int],
                         deadline: float, members: list[subprocess.Popen]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        while True:
            committed = {tp: await consumer.committed(tp) or 0 for tp in ends}
            if all(committed[tp] >= end for tp, end in ends.items()):
                return
            if any(m.poll() is not None for m in members):
                raise CollectorBenchError(f"{topic}: a member exited during the run")
            if time.monotonic() > deadline:
                raise CollectorBenchError(f"{topic}: not all committed in time ({committed} of {ends})")
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()


def measure_dialect(bootstrap: str, dialect: str, n: int, processes: int, usage_topic: str,
                    seed: int = 7) -> dict[str, float]:
    """{"events_per_s", "cpu_us_per_event", "processes"} for `dialect` bridged by `processes` members."""
    if not 1 <= processes <= SOURCE_PARTITIONS:
        raise ValueError(f"processes must be 1-{SOURCE_PARTITIONS} (the source topic's partitions), got {processes}")
    run_id = uuid.uuid4().hex[:8]
    values, expected = gateway_records(dialect, n, f"{seed}:{run_id}")
    source, group = f"bench.collect.{dialect}.p{processes}.{run_id}", f"bench-collect-{dialect}-p-{run_id}"
    timeout = max(120.0, n / 100)
    with tempfile.TemporaryDirectory(prefix="tokenmeter-bench-members-") as work:
        asyncio.run(_create_topic(bootstrap, usage_topic))
        asyncio.run(_create_topic(bootstrap, source))
        asyncio.run(_produce(bootstrap, source, values))
        ends = asyncio.run(_end_offsets(bootstrap, source))
        before = asyncio.run(_end_offsets(bootstrap, usage_topic))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        members = [subprocess.Popen(
            [sys.executable, "-c", "from collectors.bench_processes import member_main; "
             f"member_main({bootstrap!r}, {source!r}, {dialect!r}, {group!r}, {usage_topic!r}, {work!r}, {k})"],
            env=env, stdin=subprocess.DEVNULL, preexec_fn=child_preexec) for k in range(processes)]
        try:
            deadline = time.monotonic() + timeout
            statuses = [Path(work) / f"{k}.json" for k in range(processes)]
            while not _settled(statuses, min(processes, SOURCE_PARTITIONS)):
                exited = [f"member {k} exited with {m.returncode}" for k, m in enumerate(members)
                          if m.poll() is not None]
                if exited or time.monotonic() > deadline:  # which of the two, and where each member stood
                    raise CollectorBenchError(
                        f"{dialect}: the {processes} members did not settle at the door: "
                        f"{'; '.join(exited) or f'not within {timeout:.0f} s'}; statuses: {_statuses_said(statuses)}")
                time.sleep(0.05)
            (Path(work) / "go").touch()
            asyncio.run(_all_committed(bootstrap, source, group, ends, deadline, members))
        finally:
            for member in members:  # at once: they leave the group in one rebalance (docs/testing.md)
                if member.poll() is None:
                    member.send_signal(signal.SIGTERM)
            for member in members:
                try:
                    member.wait(30)
                except subprocess.TimeoutExpired:
                    member.kill()
                    member.wait()
        reports = [json.loads(path.read_text()) for path in statuses]
    found = asyncio.run(_ids_written(bootstrap, usage_topic, before, timeout))
    missing = [i for i in expected if found[i] != 1]
    if missing or sum(r.get("written", 0) for r in reports) != n or any(r.get("rejected") for r in reports):
        raise CollectorBenchError(f"{dialect}, {processes} processes: {len(missing)} of {n} expected event ids "
                                  f"not on {usage_topic} exactly once; members reported {reports}")
    working = [r for r in reports if r.get("last_at") is not None and r.get("go_at") is not None]
    start, end = min(r["go_at"] for r in working), max(r["last_at"] for r in working)
    cpu = sum(r["last_cpu"] - r["go_cpu"] for r in working)
    return {"events_per_s": n / (end - start), "cpu_us_per_event": cpu / n * 1e6, "processes": len(working)}


def _statuses_said(statuses: list[Path]) -> str:
    """What each member last wrote of itself (assigned partitions, at the door), or that it wrote nothing."""
    said = []
    for path in statuses:
        try:
            said.append(f"{path.stem}: {path.read_text()[:200]}")
        except OSError:
            said.append(f"{path.stem}: nothing written")
    return ", ".join(said)


def _settled(statuses: list[Path], members: int) -> bool:
    """Every member at the door with a share of the partitions, the shares covering the topic: the group's last
    rebalance is done (a member given nothing would have no batch to bring to the door)."""
    try:
        found = [json.loads(path.read_text()) for path in statuses]
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    sharing = [s for s in found if s["assigned"] > 0]
    return (all(s["at_door"] for s in found) and len(sharing) == members
            and sum(s["assigned"] for s in found) == SOURCE_PARTITIONS)


def measure_collectors_processes(bootstrap: str, n: int, processes: int, dialects: tuple[str, ...],
                                 usage_topic: str) -> dict[str, dict[str, float]]:
    """Per dialect, one at a time: events/s (wall), CPU-us per event of the members, members that worked."""
    return {dialect: measure_dialect(bootstrap, dialect, n, processes, usage_topic) for dialect in dialects}
