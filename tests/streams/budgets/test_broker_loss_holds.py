"""A broker loss must not hand a hard budget's held headroom out again (issue 15, chaos soak: the bill reached
104-112 % of the limit). The embedded broker keeps everything in memory: a call's usage acknowledged by it and
lost with it never reaches the warehouse, and the holds topic goes too, so the rebuilt budget knew neither the
spend nor the hold. Real processes: the supervisor's broker, worker and loader; the worker is killed so the usage
stays unpriced on the broker, the broker is SIGKILLed, and the supervisor restarts it and rebuilds."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from decimal import Decimal

import pytest

from app.supervisor import Supervisor
from reserve_support import call, send_usage, usage_event, wait_for
from streams.budgets import parse_budget, write_budgets
from tokenmeter.settings import free_port, load_settings

pytestmark = pytest.mark.slow(seconds=22)


def reservation(team: str, request_id: str, prompt_tokens: int) -> dict:
    # gpt-4o, default tier: $2.50 / 1M input tokens, no output -> 100k prompt tokens hold $0.25
    return {"provider": "openai", "model": "gpt-4o", "service_tier": "default", "attribution": {"team": team},
            "prompt_tokens": prompt_tokens, "max_output_tokens": 0, "request_id": request_id}


def _stored_steps(settings, reservation_id: str) -> list[str]:
    """The steps of a hold's life in the warehouse, read through the loader (the chDB's owner)."""
    from warehouse import open_warehouse

    wh = open_warehouse(settings, serve=False)
    try:
        frame = wh.query("SELECT DISTINCT status FROM budget_holds WHERE reservation_id = {r:String}",
                         {"r": reservation_id})
        return sorted(frame["status"].to_list()) if frame.height else []
    finally:
        wh.close()


def test_a_hold_whose_usage_the_broker_lost_is_held_again_until_its_usage_arrives(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENMETER_RESERVATION_TTL_SECONDS", "600")
    monkeypatch.setenv("TOKENMETER_API_PORT", str(free_port()))  # the children take their settings from the env
    settings = load_settings(data_dir=tmp_path / "data", embedded_broker_port=free_port(), partitions=4)
    (tmp_path / "data").mkdir()
    sup = Supervisor(settings, demo=False, echo=lambda line: None)
    sup.log_dir.mkdir(parents=True)
    team, name = f"loss-{uuid.uuid4().hex[:6]}", f"loss-{uuid.uuid4().hex[:6]}"
    url = f"http://127.0.0.1:{settings.api_port}/v1/reservations"
    budgets = lambda: {b["budget"]: b for b in call("GET", url)[1].get("budgets", [])}  # noqa: E731
    try:
        broker = sup.spawn("broker", None, uses_kafka=False)
        sup.prepare_broker()
        bootstrap = settings.bootstrap_servers
        write_budgets(bootstrap, [parse_budget({"name": name, "scope": {"team": team}, "period": "day",
                                                "limit": "1", "action": "block"})], data_dir=settings.data_dir)
        worker = sup.spawn("worker", [sys.executable, "-m", "app", "worker"])
        sup.spawn("loader", [sys.executable, "-m", "app", "load"])
        wait_for(lambda: name in budgets(), timeout=120, what="the worker serving the budget")
        status, first = wait_for(lambda: (lambda r: r if r[0] == 201 else None)(
            call("POST", url, reservation(team, "req-1", 100_000))), what="the reservation")
        assert first["held"]["cost_usd"] == "0.250000000000"
        wait_for(lambda: settings.warehouse_path.exists(), what="the loader's warehouse")
        wait_for(lambda: _stored_steps(settings, first["reservation_id"]) == ["held"], timeout=60,
                 what="the hold's log record in the warehouse (tokenmeter.budget-hold-log -> budget_holds)")
        # The call's usage ($0.05) is acknowledged by the broker while no worker prices it, then the broker dies.
        worker.proc.kill()
        worker.proc.wait()
        asyncio.run(send_usage(bootstrap, [usage_event(team, 20_000, 0, event_id="req-1")]))
        broker.proc.kill()
        broker.proc.wait()
        deadline = time.monotonic() + 120
        while not (sup.broker_restarts and worker.alive()):  # the supervisor restarts the broker and rebuilds
            assert time.monotonic() < deadline, "the broker and the worker did not come back"
            sup.tend()
            time.sleep(0.1)
        wait_for(lambda: name in budgets(), timeout=120, what="the budget restored after the broker loss")
        view = budgets()[name]
        # the warehouse never got the usage; the hold is held again at its worst case
        assert (Decimal(view["committed"]), Decimal(view["held"]), view.get("carried")) == (
            Decimal(0), Decimal("0.25"), 1), view
        status, refusal = wait_for(lambda: (lambda r: r if r[0] in (201, 403) else None)(  # not 503 (not ready)
            call("POST", url, reservation(team, "req-2", 320_000))), what="an answer")  # $0.80 worst case
        assert status == 403 and Decimal(refusal["headroom"]) == Decimal("0.75"), refusal
        # the usage arrives after all (a source re-sent it): the real cost counts, the hold goes, not both
        asyncio.run(send_usage(bootstrap, [usage_event(team, 20_000, 0, event_id="req-1")]))
        wait_for(lambda: Decimal(budgets()[name]["held"]) == 0, what="the carried hold settled")
        view = budgets()[name]
        assert (Decimal(view["committed"]), view["open_reservations"]) == (Decimal("0.05"), 0), view
        assert wait_for(lambda: (lambda r: r if r[0] in (201, 403) else None)(
            call("POST", url, reservation(team, "req-3", 320_000))), what="an answer")[0] == 201
    finally:
        sup.stop()
