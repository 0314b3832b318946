"""A rebalance moves a budget's holds with its partition: the owner is killed (-9), the surviving worker takes the
budget over with every hold it had admitted (no double admission), and the usage settles them there."""

from __future__ import annotations

import asyncio
import signal
import uuid
from decimal import Decimal

import pytest

from reserve_support import call, ready, send_usage, start_worker, stop, usage_event, wait_for, worker_env, zone_at_noon
from streams.budgets import parse_budget, write_budgets
from tokenmeter.settings import free_port

pytestmark = pytest.mark.slow(seconds=11)  # rough seconds: longest files first (tests/suite_order.py)


def test_holds_survive_the_owner_being_killed(kafka_bootstrap, tmp_path):
    team, name = f"reb-{uuid.uuid4().hex[:6]}", f"reb-{uuid.uuid4().hex[:6]}"
    write_budgets(kafka_bootstrap, [parse_budget({"name": name, "scope": {"team": team}, "period": "day",
                                                  "tz": zone_at_noon(), "limit": "1", "action": "block"})])
    ports = [free_port(), free_port()]
    workers = [start_worker(worker_env(kafka_bootstrap, tmp_path / f"d{i}", port), tmp_path / f"w{i}.log")
               for i, port in enumerate(ports)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]

    def body(request_id: str) -> dict:  # $0.30 worst case: 120k prompt tokens of gpt-4o at $2.50 / 1M
        return {"provider": "openai", "model": "gpt-4o", "service_tier": "default", "attribution": {"team": team},
                "prompt_tokens": 120_000, "max_output_tokens": 0, "request_id": request_id}

    def owner_index() -> int | None:
        for i, url in enumerate(urls):
            if any(b["budget"] == name for b in call("GET", f"{url}/v1/reservations")[1].get("budgets", [])):
                return i
        return None

    try:
        for port in ports:
            wait_for(lambda port=port: ready(port), timeout=90, what="workers ready")

        def settled_owner() -> tuple[int] | None:  # both workers in the group, the budget loaded by one of them
            owned = [call("GET", f"{url}/v1/reservations")[1].get("owners", {}) for url in urls]
            index = owner_index()
            both = all(len(set(o.values())) == 2 for o in owned)
            return (index,) if index is not None and both and all(ready(p) for p in ports) else None
        owner = wait_for(settled_owner, timeout=90, what="the budget's owner")[0]
        survivor = 1 - owner
        # reserve through the worker that does NOT own the budget: forwarded to the owner
        for i in range(3):
            status, answer = wait_for(lambda i=i: (lambda r: r if r[0] == 201 else None)(
                call("POST", f"{urls[survivor]}/v1/reservations", body(f"r{i}"))), what=f"reservation {i}")
        assert call("POST", f"{urls[survivor]}/v1/reservations", body("r3"))[0] == 403  # $0.90 held of $1
        stop(workers[owner], signal.SIGKILL)
        status, refusal = wait_for(lambda: (lambda r: r if r[0] in (201, 403) else None)(
            call("POST", f"{urls[survivor]}/v1/reservations", body("r4"))), timeout=90, what="the new owner")
        assert status == 403 and Decimal(refusal["held"]) == Decimal("0.9"), refusal  # every hold came along
        assert owner_index() == survivor
        asyncio.run(send_usage(kafka_bootstrap, [usage_event(team, 40_000, 0, event_id="r0")]))  # $0.10 real

        def view() -> dict:
            return {b["budget"]: b for b in call("GET", f"{urls[survivor]}/v1/reservations")[1]["budgets"]}[name]
        wait_for(lambda: view()["settled"] >= 1, what="settlement at the new owner")
        assert (Decimal(view()["committed"]), Decimal(view()["held"])) == (Decimal("0.1"), Decimal("0.6"))
        assert call("POST", f"{urls[survivor]}/v1/reservations", body("r5"))[0] == 201  # $0.30 fits again
    finally:
        for worker in workers:
            stop(worker)
