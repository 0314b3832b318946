"""The owner's expiry of holds by an index (streams/budgets/expiry.py): the same holds expire as with a scan, in
expiry order, and a tick no longer costs time in proportion to the open holds."""

import gc
import time
from datetime import timedelta
from decimal import Decimal as D

import pytest

from streams.budgets.expiry import REBUILD_SLACK
from streams.budgets.owner import EXPIRED_MEMORY

from test_holds import LATER, NOW, defs, owner_with, priced, usage_messages

pytestmark = pytest.mark.slow(seconds=17)  # rough seconds: longest files first (tests/suite_order.py)


def expired_ids(owner, at):
    return [(h.budget, h.reservation_id) for h in owner.expire(at).holds]


def test_holds_expire_in_expiry_order_whatever_order_they_were_admitted_or_restored_in():
    budgets = defs()
    owner = owner_with(budgets, holds=[  # restored holds, not in expiry order
        {"reservation_id": "restored-late", "budget": "search", "request_id": "q1", "amount": "0.1",
         "created_at": NOW.isoformat(), "expires_at": (NOW + timedelta(seconds=50)).isoformat()},
        {"reservation_id": "restored-early", "budget": "search", "request_id": "q2", "amount": "0.1",
         "created_at": NOW.isoformat(), "expires_at": (NOW + timedelta(seconds=10)).isoformat()}])
    owner.admit({"search": D("0.1")}, "r-40", "req-40", NOW + timedelta(seconds=40), NOW)
    # a forwarded hold from a worker with a shorter TTL: admitted later, expires earlier
    owner.admit({"search": D("0.1"), "gpt-tokens": 10}, "r-20", "req-20", NOW + timedelta(seconds=20), NOW)
    # the same reservation asked again (a retried forward) with a later expiry: its dict slot stays first
    owner.admit({"search": D("0.1")}, "r-30", "req-30", NOW + timedelta(seconds=5), NOW)
    owner.admit({"search": D("0.1")}, "r-30", "req-30", NOW + timedelta(seconds=30), NOW)
    assert expired_ids(owner, NOW + timedelta(seconds=4)) == []
    assert expired_ids(owner, NOW + timedelta(seconds=20)) == [("search", "restored-early"), ("search", "r-20"),
                                                               ("gpt-tokens", "r-20")]
    assert expired_ids(owner, NOW + timedelta(seconds=45)) == [("search", "r-30"), ("search", "r-40")]
    assert expired_ids(owner, NOW + timedelta(seconds=50)) == [("search", "restored-late")]
    view = owner.headroom("search", NOW)
    assert (view["open_reservations"], view["expired"], view["held"]) == (0, 5, "0")


def test_released_settled_and_superseded_holds_never_expire_and_the_index_stays_bounded():
    budgets = defs()
    owner = owner_with(budgets)
    for i in range(3 * REBUILD_SLACK):  # released at once: their index entries are dead
        owner.admit({"search": D("0.001")}, f"gone-{i}", f"gone-{i}", LATER, NOW)
        owner.release(f"gone-{i}")
    owner.admit({"search": D("1")}, "r-settled", "req-settled", LATER, NOW)
    owner.process(usage_messages(budgets, [(0, 1, priced("req-settled", "0.5"))]), now=NOW)
    owner.admit({"search": D("1")}, "r-first", "req-retried", LATER, NOW)
    owner.admit({"search": D("1")}, "r-second", "req-retried", LATER, NOW)  # supersedes r-first
    owner.admit({"search": D("1")}, "r-open", "req-open", LATER, NOW)
    assert len(owner.runtimes["search"].expiry) <= 2 * 2 + REBUILD_SLACK + 1
    assert expired_ids(owner, LATER) == [("search", "r-second"), ("search", "r-open")]
    view = owner.headroom("search", NOW)
    assert (view["released"], view["settled"], view["superseded"], view["expired"]) == (3 * REBUILD_SLACK, 1, 1, 2)
    assert owner.held("search") == 0 and expired_ids(owner, LATER + timedelta(days=1)) == []


def test_a_tick_with_many_open_holds_costs_no_scan_of_them():
    """The tick runs every 5 s on the event loop that admits: with 100,000 open holds a scan took 3.3-8.6 ms there
    (CPU time, so the machine's load hardly moves it); the index looks at the earliest expiry only."""
    budgets = defs()
    owner = owner_with(budgets)
    for i in range(100_000):
        owner.admit({"search": D("0.00001")}, f"r-{i}", f"req-{i}", LATER, NOW)
    cpu = []
    for _ in range(5):
        started = time.thread_time()
        assert owner.expire(NOW + timedelta(seconds=1)).holds == []
        cpu.append(time.thread_time() - started)
    assert min(cpu) < 0.001, f"expire() took {min(cpu) * 1000:.2f} ms of CPU with 100,000 open holds"
    assert len(owner.expire(LATER).holds) == 100_000


def _expiry_cpu_per_hold(holds: int) -> float:
    """CPU seconds per hold of the tick that expires `holds` holds and forgets them at once (past EXPIRED_MEMORY)."""
    budgets = defs()
    owner = owner_with(budgets)
    for i in range(holds):
        owner.admit({"search": D("0.00001")}, f"r-{i}", f"req-{i}", NOW + timedelta(seconds=1), NOW)
    gc.disable()  # the test's own heap of holds must not decide the figure
    try:
        started = time.thread_time()
        assert len(owner.expire(NOW + EXPIRED_MEMORY + timedelta(seconds=2)).holds) == holds
        return (time.thread_time() - started) / holds
    finally:
        gc.enable()


def test_expiring_and_forgetting_many_holds_in_one_tick_costs_the_same_per_hold():
    """A tick that expires m holds also forgets expired holds from the front of `expired_recently`; with a plain
    dict each forget skipped every slot deleted before it (O(m^2): 50,000 holds ~0.5 s more on the admitting loop).
    A ratio of two sizes, so the machine's speed and load cancel out."""
    small, large = _expiry_cpu_per_hold(20_000), _expiry_cpu_per_hold(160_000)
    assert large / small < 2.0, f"{small * 1e6:.1f} us per hold at 20,000, {large * 1e6:.1f} us at 160,000"
