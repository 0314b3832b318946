"""`tokenmeter reopen` on a real chDB warehouse: a closed month is archived (never deleted) with who, when and why;
a month whose corrections a later close booked is re-opened only with those later months (`--cascade`); after a
re-open, closing again counts each dollar once; closes and re-opens of one closes directory run one at a time."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from warehouse.backends import WarehouseError
from warehouse.month_close import close_month, closed_months

pytestmark = pytest.mark.slow(seconds=10)  # rough seconds: longest files first (tests/suite_order.py)


def test_two_closes_of_one_month_at_once_close_it_once(wh, make_event, tmp_path):
    """Nothing serialised `close`: two at once both passed the "already closed" check (it is read before the
    month's charges are queried, the write comes after) and both reported success, the second snapshot replacing
    the first under the same name. One of them must be refused."""
    closes = tmp_path / "closes"
    wh.insert_priced([make_event(f"race-{i}", "race-org", team="a", cost="0.1", ts=f"2021-02-0{1 + i}T08:00:00Z")
                      for i in range(3)])
    start, results = threading.Barrier(2), []

    def close() -> None:
        start.wait()
        try:
            results.append(close_month(wh, closes, "2021-02", closed_by=threading.current_thread().name))
        except WarehouseError as exc:
            results.append(exc)

    threads = [threading.Thread(target=close, name=f"closer-{n}") for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    done = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, WarehouseError)]
    assert len(done) == 1 and len(refused) == 1, results
    assert "already closed" in str(refused[0])
    assert closed_months(closes)["2021-02"]["closed_by"] == done[0]["closed_by"]
    assert Decimal(done[0]["total_usd"]) == Decimal("0.3")
