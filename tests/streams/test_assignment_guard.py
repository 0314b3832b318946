"""SourceAssignment's bookkeeping (the broker-backed behaviour is in test_worker_assignment.py): what counts as
idle, and that re-joins are bounded in total until an assignment holds a source partition again."""

import asyncio
from collections import namedtuple

from streams.assignment_guard import SourceAssignment

TP = namedtuple("TP", "topic partition")  # the two fields Faust's TP has


def test_idle_until_an_assignment_holds_a_source_partition():
    guard = SourceAssignment(("usage", "spend"), rejoin_delays=())
    assert "no partition assignment yet" in guard.problem()
    guard.on_assigned([TP("app-__assignor-__leader", 0)])
    assert "holds no partition of usage, spend" in guard.problem()
    guard.on_assigned([TP("spend", 2), TP("app-__assignor-__leader", 0)])
    assert guard.problem() is None and guard.held() == {"usage": [], "spend": [2]}


def test_rejoins_are_bounded_and_start_again_after_a_good_assignment():
    async def scenario():
        guard = SourceAssignment(("usage",), rejoin_delays=(0, 0, 0))
        calls = []

        async def rejoin():
            calls.append(1)
            return True

        for _ in range(5):  # each re-join brings another assignment without a source partition
            guard.on_assigned([TP("leader", 0)], rejoin)
            await asyncio.sleep(0.01)
        assert (len(calls), guard.rejoins) == (3, 3)  # then it stays reported idle, no rebalance storm
        guard.on_assigned([TP("usage", 0)], rejoin)
        guard.on_assigned([TP("leader", 0)], rejoin)
        await asyncio.sleep(0.01)
        assert len(calls) == 4

    asyncio.run(scenario())


def test_a_new_assignment_cancels_the_pending_rejoin():
    async def scenario():
        guard = SourceAssignment(("usage",), rejoin_delays=(0.05,))
        calls = []

        async def rejoin():
            calls.append(1)
            return True

        guard.on_assigned([TP("leader", 0)], rejoin)
        guard.on_assigned([TP("usage", 1)], rejoin)
        await asyncio.sleep(0.1)
        assert calls == [] and guard.problem() is None

    asyncio.run(scenario())
