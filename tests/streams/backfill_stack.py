"""A `tokenmeter up`-like stack for backfill tests (issue #17): a real embedded broker with 4 partitions, the real
Faust worker as a child process (`python -m app worker`: tokenmeter.usage -> tokenmeter.priced) and the real anomaly
runner, fed with weeks of *usage* history produced the ways a backfill is produced in practice:

- "global": in global event-time order (one merged stream, each chunk grouped per partition key as the collectors'
  sink does);
- "concurrent": each team's history in order (one gateway log file per team) but the files produced concurrently,
  one chunk of each file in turn, so a team with little traffic runs days ahead of a busy one in event time;
- "sequential": one team's whole history after another's (a loop over files). The detector cannot rebuild event
  time from that when two teams share a partition; it must say so.

Teams are picked so that several share a partition (the worker's output key is the team).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

import orjson
from aiokafka import AIOKafkaProducer

from app.process import child_preexec
from tests.streams.anomaly_traffic import MONDAY, traffic
from tokenmeter import microbatch, topics
from tokenmeter.events import partition_key
from tokenmeter.settings import free_port

ROOT = Path(__file__).resolve().parents[2]
DAY, WEEK = 86400, 7 * 86400
# team -> peak calls per key per 5 minutes; partitions of "team:<name>" with 4 partitions (murmur2):
# search 0, support 0, growth 1, data 1, design 2, ops 3, hr 3
TEAMS = {"search": 4.0, "support": 1.0, "growth": 3.0, "data": 1.0, "design": 2.0, "ops": 3.0, "hr": 0.8}
CHUNK = 500  # events per message (the collectors' sink frames at most 500)


def usage_history(days: int, teams: dict[str, float] = TEAMS) -> tuple[dict[str, list[dict]], int]:
    """`days` of seasonal usage per team (canonical usage events, each team's list in event-time order), ending at
    least a week ago on the same weekdays every run. Returns (events per team, start epoch)."""
    weeks = (int(time.time()) - days * DAY - MONDAY) // WEEK - 1
    shift = weeks * WEEK
    per_team: dict[str, list[dict]] = {}
    for n, (team, peak) in enumerate(teams.items()):
        keys = (f"{team}-k1", f"{team}-k2")
        events = [e for batch in traffic(MONDAY, MONDAY + days * DAY, peak=peak, seed=10 + n, keys=keys, team=team)
                  for e in batch]
        usage = []
        for e in events:
            t = int(datetime.fromisoformat(e["ts"]).timestamp()) + shift  # a UTC "Z" time (C parser: 45k events)
            usage.append({"event_id": f"{e['event_id']}-{team}-{weeks}", "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                            time.gmtime(t)),
                          "source": "backfill-test", "provider": "openai", "model": e["model"], "status": e["status"],
                          "attribution": e["attribution"], "usage": e["usage"]})
        usage.sort(key=lambda u: u["ts"])
        per_team[team] = usage
    return per_team, MONDAY + shift


def messages(per_team: dict[str, list[dict]], order: str) -> list[tuple[bytes, bytes]]:
    """(key, value) usage messages in the order a producer of this kind writes them."""
    def framed(events: list[dict]) -> list[tuple[bytes, bytes]]:
        groups: dict[bytes, list[bytes]] = {}
        for e in events:
            groups.setdefault(partition_key(e), []).append(orjson.dumps(e))
        return [(key, value) for key, encoded in groups.items() for value in microbatch.frame(encoded)]

    if order == "global":
        merged = sorted((e for events in per_team.values() for e in events), key=lambda e: e["ts"])
        return [m for i in range(0, len(merged), CHUNK) for m in framed(merged[i:i + CHUNK])]
    chunks = {team: [framed(events[i:i + CHUNK]) for i in range(0, len(events), CHUNK)]
              for team, events in per_team.items()}
    if order == "sequential":
        return [m for team in chunks for chunk in chunks[team] for m in chunk]
    if order == "concurrent":  # one chunk of every file in turn: each file in order, files concurrently
        out = []
        for turn in range(max(map(len, chunks.values()))):
            for team in chunks:
                if turn < len(chunks[team]):
                    out += chunks[team][turn]
        return out
    raise ValueError(order)


async def produce(bootstrap: str, items: list[tuple[bytes, bytes]], topic: str = topics.USAGE) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=512 * 1024,
                                max_request_size=4_000_000)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in items]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def wait_for_backfill(detector, total: int, buckets: int, *, read_s: float, check=lambda: None) -> None:
    """Until the detector has read `total` events (within `read_s`; `check()` between polls may raise), then until
    its idle polls closed `buckets` buckets (the watermark trails new keys by a few seconds; within 30 s), then one
    more second of idle polls: the wall clock, far ahead of the history, must close nothing more."""
    deadline = time.monotonic() + read_s
    while detector.engine.stats["events"] < total and time.monotonic() < deadline:
        check()
        await asyncio.sleep(0.3)
    deadline = time.monotonic() + 30
    while detector.engine.stats["buckets_closed"] < buckets and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
    await asyncio.sleep(1.0)  # a window to show that nothing happens, not a wait for something that does


@contextmanager
def worker(bootstrap: str, tmp_path: Path) -> Iterator[subprocess.Popen]:
    """The real Faust worker as a child process; always stopped."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENMETER_KAFKA_BOOTSTRAP=bootstrap,
               TOKENMETER_DATA_DIR=str(tmp_path / "worker-data"), TOKENMETER_API_PORT=str(free_port()),
               TOKENMETER_LOG_LEVEL="warning")
    log = open(tmp_path / "worker.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "app", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=child_preexec)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
