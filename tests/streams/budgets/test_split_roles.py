"""Split worker roles (admit9, issue 15), on real processes: one pricing worker (`TOKENMETER_WORKER_ROLE=pricing`)
consumes all the usage and prices it; two budgets workers (`budgets`) own the budgets and answer the reservations,
consuming no usage. Reservations admitted on the budgets workers are settled by usage priced on the pricing one,
a restarted owner restores its open holds and settles them, an unsettled hold expires, and the overshoot guarantee
of test_reservations_overshoot holds across the roles. A rolling switch from role all to the split roles keeps one
owner per budget and counts each event once."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
import uuid
from decimal import Decimal

import pytest

from reserve_support import call, ready, send_usage, start_worker, stop, usage_event, wait_for, worker_env, zone_at_noon
from streams.budgets import parse_budget, write_budgets
from test_reservations_overshoot import CLIENTS, assert_never_past_a_limit, gateway, write_three_budgets
from tokenmeter import topics
from tokenmeter.settings import free_port

pytestmark = pytest.mark.slow(seconds=30)  # rough seconds: longest files first (tests/suite_order.py)


def _stats(port: int) -> dict:
    return call("GET", f"http://127.0.0.1:{port}/v1/stats")[1]


def _status(method: str, url: str) -> int:
    """The HTTP status alone (a route a role does not serve answers aiohttp's plain-text 404)."""
    request = urllib.request.Request(url, data=b"{}" if method == "POST" else None, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def _health_ok(port: int) -> bool:
    return call("GET", f"http://127.0.0.1:{port}/health")[0] == 200


def _start(role: str, bootstrap: str, tmp_path, i: int, **extra: str) -> tuple[int, object]:
    port = free_port()
    env = worker_env(bootstrap, tmp_path / f"{role}{i}", port, TOKENMETER_WORKER_ROLE=role, **extra)
    return port, start_worker(env, tmp_path / f"{role}{i}.log")


def _views(ports: list[int], names: set[str]) -> dict[str, dict]:
    views = {}
    for port in ports:
        for view in call("GET", f"http://127.0.0.1:{port}/v1/reservations")[1].get("budgets", []):
            if view["budget"] in names:
                views[view["budget"]] = view
    return views


@pytest.fixture(scope="module")
def pricing_port(kafka_bootstrap, tmp_path_factory):
    """The pricing worker of the two tests on the session broker (each start costs a group join and the imports):
    neither restarts it, and each counts its own team's events."""
    port, proc = _start("pricing", kafka_bootstrap, tmp_path_factory.mktemp("pricing"), 0)
    try:
        yield port
    finally:
        stop(proc)


def test_split_roles_admit_on_budget_workers_and_settle_usage_priced_elsewhere(kafka_bootstrap, tmp_path,
                                                                                pricing_port):
    # three budgets on three budget-spend partitions: both budgets workers own some
    team, env, names, limits = write_three_budgets(kafka_bootstrap, uuid.uuid4().hex[:6], "split")
    processes = []
    try:
        budget_ports = []
        for i in range(2):
            port, proc = _start("budgets", kafka_bootstrap, tmp_path, i)
            processes.append(proc)
            budget_ports.append(port)
        wait_for(lambda: _health_ok(pricing_port), timeout=90, what="the pricing worker holding usage partitions")
        for port in budget_ports:
            wait_for(lambda port=port: ready(port), timeout=90, what=f"budgets worker {port} ready")

        def both_own_something() -> bool:  # other tests' budgets may share the broker: count ours
            owned = [len([n for n in _views([p], set(limits))]) for p in budget_ports]
            return all(owned) and sum(owned) == 3 and all(ready(p) for p in budget_ports)
        wait_for(both_own_something, timeout=90, what="the three budgets owned by both budgets workers")

        # Two consumer groups: every usage partition on the pricing worker, every budget-spend one on the budgets
        # workers, and each role without the other's endpoints.
        pricing = _stats(pricing_port)
        assert pricing["role"] == "pricing"
        assert pricing["assignment"]["partitions"] == {topics.USAGE: [0, 1, 2, 3]}
        assert _status("POST", f"http://127.0.0.1:{pricing_port}/v1/reservations") == 404
        assert _status("GET", f"http://127.0.0.1:{pricing_port}/v1/decision") == 404
        held = []
        for port in budget_ports:
            stats = _stats(port)
            assert stats["role"] == "budgets" and list(stats["assignment"]["partitions"]) == [topics.BUDGET_SPEND]
            held += stats["assignment"]["partitions"][topics.BUDGET_SPEND]
        assert sorted(held) == [0, 1, 2, 3]

        stats = {"admitted": 0, "refused": 0, "unavailable": 0, "real": Decimal(0), "tokens": 0}
        urls = [f"http://127.0.0.1:{port}" for port in budget_ports]

        async def run() -> None:
            await asyncio.gather(*(gateway(c, urls, kafka_bootstrap, team, env, stats) for c in range(CLIENTS)))
        asyncio.run(run())
        print(f"split roles: {stats}")

        def settled() -> dict | None:
            views = _views(budget_ports, set(limits))
            return views if len(views) == 3 and all(v["open_reservations"] == 0 for v in views.values()) else None
        views = wait_for(settled, timeout=60, what="every hold settled by usage the pricing worker priced")
        assert_never_past_a_limit(stats, views, names, limits)
        forwarded = sum(call("GET", f"{url}/v1/reservations")[1]["stats"]["forwarded"] for url in urls)
        assert forwarded > 0  # holds forwarded between the budgets workers to each budget's owner
        assert _stats(pricing_port)["events_in"] >= stats["admitted"]  # the pricing worker priced them ...
        assert all(_stats(p)["events_in"] == 0 for p in budget_ports)  # ... and the budgets workers consumed none
    finally:
        for proc in processes:
            stop(proc)


def test_split_roles_restarted_owner_restores_a_hold_then_settles_it_and_expires_another(kafka_bootstrap, tmp_path,
                                                                                         pricing_port):
    tag = uuid.uuid4().hex[:6]
    team, name = f"split-r-{tag}", f"split-r-{tag}"
    write_budgets(kafka_bootstrap, [parse_budget({"name": name, "scope": {"team": team}, "period": "day",
                                                  "tz": zone_at_noon(), "limit": "5", "action": "block"})])
    extra = {"TOKENMETER_RESERVATION_TTL_SECONDS": "8"}
    processes = []
    try:
        port, owner = _start("budgets", kafka_bootstrap, tmp_path, 0, **extra)
        processes.append(owner)
        wait_for(lambda: _health_ok(pricing_port), timeout=90, what="the pricing worker holding usage partitions")
        wait_for(lambda: ready(port) and name in _views([port], {name}), timeout=90, what="the budget owned")
        url = f"http://127.0.0.1:{port}/v1/reservations"

        def reserve(request_id: str) -> dict:
            def attempt() -> tuple[int, dict] | None:  # a gateway retries a 503 (Retry-After): Faust's second
                # rebalance at start-up can revoke the partitions of a worker that was just ready
                status, body = call("POST", url, {"provider": "openai", "model": "gpt-4o", "service_tier": "default",
                                                  "attribution": {"team": team}, "prompt_tokens": 1000,
                                                  "max_output_tokens": 100, "request_id": request_id})
                return None if status == 503 else (status, body)
            status, body = wait_for(attempt, timeout=60, what=f"reservation {request_id} answered")
            assert status == 201 and [h["budget"] for h in body["holds"]] == [name], (status, body)
            return body

        settled_id, expiring_id = f"rq-{tag}-1", f"rq-{tag}-2"
        reserve(settled_id)
        reserve(expiring_id)
        stop(owner)  # the only budgets worker goes away with two open holds
        port, owner = _start("budgets", kafka_bootstrap, tmp_path, 1, **extra)
        processes.append(owner)
        view = wait_for(lambda: ready(port) and _views([port], {name}).get(name), timeout=90,
                        what="the restarted owner restoring the budget")
        assert view["open_reservations"] == 2, view  # both holds restored from tokenmeter.budget-holds

        asyncio.run(send_usage(kafka_bootstrap, [usage_event(team, 800, 50, event_id=settled_id)]))
        cost = 800 * Decimal("2.50") / 1_000_000 + 50 * Decimal("10.00") / 1_000_000

        def after() -> dict | None:
            view = _views([port], {name}).get(name)
            return view if view and view["open_reservations"] == 0 else None
        view = wait_for(after, timeout=60, what="one hold settled by the priced usage, the other expired")
        assert Decimal(view["committed"]) == cost, view
        assert view["expired"] == 1 and Decimal(view["held"]) == 0, view
        assert _stats(port)["events_in"] == 0
    finally:
        for proc in processes:
            stop(proc)


def _committed_usage(bootstrap: str, group: str) -> int:
    """The sum of `group`'s committed offsets on tokenmeter.usage (-1, none, counts 0)."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    async def read() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(
                group, partitions=[TopicPartition(topics.USAGE, p) for p in range(4)])
        finally:
            await admin.close()
        return sum(max(0, meta.offset) for meta in offsets.values())
    return asyncio.run(read())


def test_a_switch_from_role_all_to_split_roles_keeps_one_owner_per_budget_and_the_usage_offsets(own_broker, tmp_path):
    """A rolling switch: role all runs, then a budgets worker joins (they share the budget-spend partitions: one owner
    per budget), then a pricing worker starts where role all left the usage (it prices only what came after) and
    prices beside role all meanwhile: the budget still counts every event once."""
    bootstrap = own_broker
    tag = uuid.uuid4().hex[:6]
    team, name = f"switch-{tag}", f"switch-{tag}"
    write_budgets(bootstrap, [parse_budget({"name": name, "scope": {"team": team}, "period": "day",
                                            "tz": zone_at_noon(), "limit": "100", "action": "block"})])
    cost = 800 * Decimal("2.50") / 1_000_000 + 50 * Decimal("10.00") / 1_000_000  # usage_event(team, 800, 50)
    processes = []
    try:
        all_port, proc = _start("all", bootstrap, tmp_path, 0)
        processes.append(proc)
        wait_for(lambda: ready(all_port), timeout=90, what="the role-all worker ready")
        asyncio.run(send_usage(bootstrap, [usage_event(team, 800, 50) for _ in range(6)]))
        wait_for(lambda: _committed_usage(bootstrap, "tokenmeter-worker") == 6, timeout=60,
                 what="role all's group committing the six usage records")

        budgets_port, proc = _start("budgets", bootstrap, tmp_path, 1)
        processes.append(proc)

        def shared() -> bool:
            mine = [_stats(p).get("assignment", {}).get("partitions", {}) for p in (all_port, budgets_port)]
            spend = [set(m.get(topics.BUDGET_SPEND, [])) for m in mine]
            return (all(spend) and not spend[0] & spend[1] and spend[0] | spend[1] == {0, 1, 2, 3}
                    and mine[0].get(topics.USAGE) == [0, 1, 2, 3] and topics.USAGE not in mine[1]
                    and ready(all_port) and ready(budgets_port))
        wait_for(shared, timeout=90, what="role all and budgets sharing the budget-spend partitions, usage on all")

        pricing_port, proc = _start("pricing", bootstrap, tmp_path, 2)
        processes.append(proc)
        wait_for(lambda: _health_ok(pricing_port), timeout=90, what="the pricing worker holding usage partitions")
        asyncio.run(send_usage(bootstrap, [usage_event(team, 800, 50) for _ in range(4)]))
        wait_for(lambda: _stats(pricing_port)["events_in"] == 4 and _stats(all_port)["events_in"] == 10,
                 timeout=60, what="the four new events priced by both role all and pricing")

        def counted() -> dict | None:
            view = _views([all_port, budgets_port], {name}).get(name)
            return view if view and Decimal(view["committed"]) == 10 * cost else None
        wait_for(counted, timeout=60, what="the budget counting each of the ten events once")
        wait_for(lambda: sum(_stats(p)["budgets"]["skipped_redelivered"] for p in (all_port, budgets_port)) >= 4,
                 timeout=60, what="the second pricing of the four events reaching the owner, skipped")
        assert Decimal(_views([all_port, budgets_port], {name})[name]["committed"]) == 10 * cost
        assert _stats(pricing_port)["events_in"] == 4  # it started where role all had left the usage
        assert _stats(budgets_port)["events_in"] == 0
    finally:
        for proc in processes:
            stop(proc)
