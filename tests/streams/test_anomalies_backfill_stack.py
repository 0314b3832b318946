"""A backfill of two weeks of *usage* through a `tokenmeter up`-like stack (issue #17, "Deliver"): real broker with 4
partitions, the real Faust worker (child process) pricing tokenmeter.usage into tokenmeter.priced, and the real
anomaly runner reading that topic while the history flows, as `tokenmeter up` runs it.

Measured on the code before the fix (14 days, 7 teams, 45,338 events): the priced topic is in event-time order per
key but not per partition (the worker groups a batch by key, and one batch spans up to ~45 hours of history), and
the runner's per-partition watermark made 21,838 events late with 176 anomalies in global order, 9,739 late with 48
anomalies with the teams' files produced concurrently. The history is incident-free: every anomaly is false.
"""

from __future__ import annotations

import asyncio
import functools

import pytest

from app.broker import embedded_broker
from streams.anomalies.baseline import MIN_SAMPLES
from streams.anomalies.runner import Detector
from tests.streams.backfill_stack import TEAMS, messages, produce, usage_history, wait_for_backfill, worker
from tokenmeter.settings import free_port, load_settings

pytestmark = pytest.mark.slow(seconds=60)  # rough seconds: longest files first (tests/suite_order.py)
DAYS = 14


@functools.cache
def history() -> dict[str, list[dict]]:
    """The same two weeks for both orders (building them costs seconds of CPU; nothing below changes them)."""
    return usage_history(DAYS)[0]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One broker and one worker for both orders (a worker's start and group join is ~5 s and ~2.5 CPU-s of the
    file). Each order's history reaches a worker that is already running, as a backfill reaches `up`'s worker."""
    tmp = tmp_path_factory.mktemp("backfill-stack")
    with embedded_broker("127.0.0.1", free_port(), partitions=4) as bootstrap, worker(bootstrap, tmp) as proc:
        yield bootstrap, proc, tmp


def run_backfill(stack, tmp_path, order: str) -> tuple[Detector, int]:
    """The runner reads tokenmeter.priced as `up` runs it: from its group's committed offsets (the first order's
    detector starts at the beginning, the next one after what the previous one committed, i.e. only its own
    order's history), running before the history arrives."""
    bootstrap, proc, stack_dir = stack
    per_team = history()
    items = messages(per_team, order)
    total = sum(map(len, per_team.values()))
    settings = load_settings(kafka_bootstrap=bootstrap, data_dir=tmp_path / "detector", anomaly_notify=[])

    async def scenario() -> Detector:
        detector = Detector(settings, snapshot_every_s=3600)
        stop = asyncio.Event()
        task = asyncio.create_task(detector.run(stop))  # running before the history arrives, as in `up`
        try:
            await produce(bootstrap, items)
            def check() -> None:
                assert proc.poll() is None, f"worker exited: {(stack_dir / 'worker.log').read_text()[-2000:]}"
                if task.done():
                    task.result()

            await wait_for_backfill(detector, total, DAYS * 288 - 12, read_s=150, check=check)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
        return detector

    return asyncio.run(scenario()), total


@pytest.mark.timeout(240)
@pytest.mark.parametrize("order", ["global", "concurrent"])
def test_usage_backfill_through_the_worker_builds_baselines(stack, tmp_path, order):
    detector, total = run_backfill(stack, tmp_path, order)
    stats = detector.engine.stats
    assert stats["events"] == total and stats["bad_events"] == 0, stats
    assert stats["late_events"] <= total * 0.001, stats
    # The watermark is the minimum over the keys: the last hour (the quietest team's last call at night) stays open
    # until later events come; the wall clock does not close history.
    assert stats["buckets_closed"] >= DAYS * 288 - 12, stats
    assert stats["anomalies_opened"] == 0, stats  # incident-free history: every anomaly would be false
    assert detector.counters["alerts"] == 0, detector.counters
    for team in TEAMS:
        state = detector.engine.scopes[("team", team)]
        assert state.age >= DAYS * 288 - 12
        assert max(state.spend.n[168:216]) >= MIN_SAMPLES and max(state.spend.level[168:216]) > 0
