"""Who answers a reservation for a budget-spend partition while the group moves partitions (reservations.py,
`_call_owner`), without processes: the routing decision alone."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from streams.budgets.readiness import Readiness
from streams.budgets.reservations import ReservationService
from tokenmeter.settings import Settings, free_port


def _service(tmp_path) -> ReservationService:
    readiness = Readiness(4)
    readiness.assign({0, 1, 2, 3})
    app = SimpleNamespace(conf=SimpleNamespace(canonical_url="http://127.0.0.1:6066/"))
    service = SimpleNamespace(settings=Settings(data_dir=tmp_path), readiness=readiness, app=app)
    return ReservationService(service, book=None)


def test_a_worker_with_a_revocation_pending_does_not_forward_to_a_stale_owner_record(tmp_path):
    """CI (a81234b) saw a fresh budgets worker answer 503 "not ready: owner of partition 1 at <dead url> unreachable"
    on its first reservation: the session broker's tokenmeter.budget-owners held an earlier test's record naming a
    dead address (a previous owner, as after a restart at a new pod IP), and Faust's second rebalance at start-up
    revoked the worker's partitions just after it was ready. Between the revocation and the next assignment no
    worker knows the owners (the group revokes every member's partitions), so the worker forwarded to the last record
    it had read: a 1 s connection wait, then a reason naming an address nobody runs. It says the ownership is moving
    instead, and forwards nothing."""
    reservations = _service(tmp_path)
    dead = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    reservations.owner_urls[1] = dead
    reservations.revoked = True

    async def local():
        return 201, {"holds": []}

    async def call() -> tuple[int, dict]:
        try:
            return await reservations._call_owner(1, "POST", "/v1/reservations/_hold", {}, local)
        finally:
            await reservations.stop()

    status, answer = asyncio.run(call())
    assert status == 421 and "rebalance" in answer["error"] and dead not in answer["error"], answer
    assert reservations.stats["forwarded"] == 0


def test_a_partition_assigned_here_is_answered_here_whatever_the_owner_record_says(tmp_path):
    reservations = _service(tmp_path)
    reservations.owner_urls[2] = f"http://127.0.0.1:{free_port()}/"

    async def local():
        return 201, {"holds": ["here"]}

    async def call() -> tuple[int, dict]:
        try:
            return await reservations._call_owner(2, "POST", "/v1/reservations/_hold", {}, local)
        finally:
            await reservations.stop()

    assert asyncio.run(call()) == (201, {"holds": ["here"]})
    assert reservations.stats["forwarded"] == 0


class _Web:
    """What the reservation routes ask of their web object: json(body, status, headers)."""

    def json(self, body: dict, status: int = 200, headers: dict | None = None) -> tuple[int, dict, dict]:
        return status, body, headers or {}


def test_a_release_its_owner_cannot_answer_is_503_to_retry_not_404_no_open_hold(tmp_path):
    """DELETE /v1/reservations/<id> whose hold's owner did not answer (the ownership moving, or the owner
    unreachable) said 404 "no open hold": a gateway believes the hold is gone while it stays until its TTL, and
    does not retry. It is 503 with Retry-After and the reason now."""
    from streams.budgets.reservations import new_reservation_id
    from streams.budgets.service import BudgetService

    reservations = _service(tmp_path)
    reservations.service.not_ready_response = lambda web, why: BudgetService.not_ready_response(None, web, why)
    reservations.owner_urls[1] = f"http://127.0.0.1:{free_port()}/"
    reservations.revoked = True

    async def delete() -> tuple[int, dict, dict]:
        try:
            return await reservations.delete(_Web(), new_reservation_id([1]))
        finally:
            await reservations.stop()

    status, body, headers = asyncio.run(delete())
    assert status == 503 and headers["Retry-After"] == "1", (status, body)
    assert "rebalance" in body["reason"], body
