"""Issue #7 end to end: priced events with an injected anomaly -> anomaly detector -> alert dispatcher -> a real
local webhook, and the same anomaly as an entry of the dashboard's anomaly list (loader -> chDB -> dashboard data)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from aiohttp import web

from streams.alerts.dispatcher import run_dispatcher
from streams.anomalies.runner import Detector
from tests.streams.test_anomalies_runner import produce, unpriced_batches
from tokenmeter.settings import free_port, load_settings
from tokenmeter.topics import PRICED

pytestmark = pytest.mark.slow(seconds=2)  # rough seconds: longest files first (tests/suite_order.py)


async def until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    """A broker of its own: the detector reads `tokenmeter.priced` from its beginning, and the session broker's
    topic holds other files' records (other keys, other event times) that decide its watermark. In one clean-clone
    run the alert did not come within 90 s on the shared broker (passed on the same code in the run before). The cause
    is fixed (docs/anomalies.md, "Watermark liveness"; tests/streams/test_anomalies_liveness.py); the broker of its
    own stays, so this file never depends on what other files left on the topic."""
    return own_broker


@pytest.mark.timeout(150)
def test_injected_anomaly_reaches_webhook_and_dashboard(kafka_bootstrap, tmp_path):
    from dashboards.access import ScopedWarehouse
    from dashboards.anomalies_data import list_anomalies
    from dashboards.users import Principal
    from warehouse import open_warehouse
    from warehouse.loader import run_loader

    port = free_port()
    model = f"acme-e2e-{uuid.uuid4().hex[:6]}"
    settings = load_settings(kafka_bootstrap=kafka_bootstrap, data_dir=tmp_path,
                             anomaly_notify=[f"webhook=http://127.0.0.1:{port}/hook"],
                             alert_max_attempts=2, alert_backoff_seconds=0.2, alert_backoff_max_seconds=0.5)
    # leak21: the routes are the dispatcher's; the detector's own (here /detector) are neither published on
    # tokenmeter.alerts nor delivered to
    detector_settings = settings.model_copy(update={"anomaly_notify": [f"webhook=http://127.0.0.1:{port}/detector"]})
    received: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        received.append({"path": request.path, "alert_id": request.headers.get("X-Tokenmeter-Alert-Id"),
                         "body": await request.read()})
        return web.Response(status=200)

    async def scenario():
        app = web.Application()
        app.router.add_post("/hook", hook)
        app.router.add_post("/detector", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        stop = asyncio.Event()
        loaded = asyncio.Event()
        tasks, warehouse = [], None
        try:
            await produce(kafka_bootstrap, PRICED, unpriced_batches(model, 45))
            # the events are on the topic before the detector starts: a 1 s trail instead of 10 (not under test here)
            detector = Detector(detector_settings, group_id=f"e2e-{uuid.uuid4().hex[:8]}", trail_s=1.0)
            tasks = [asyncio.create_task(detector.run(stop)),
                     asyncio.create_task(run_dispatcher(settings, stop)),
                     asyncio.create_task(run_loader(settings, stop, ready=loaded.set))]

            async def webhook_hit():
                for tasks_done in [t for t in tasks if t.done()]:
                    tasks_done.result()  # a crashed service fails the test with its own error
                return [r for r in received if model.encode() in r["body"]]

            hits = await until(webhook_hit, 90, "the anomaly alert at the webhook")
            body = orjson.loads(hits[0]["body"])
            assert {h["path"] for h in hits} == {"/hook"}
            assert hits[0]["alert_id"].startswith("anomaly-") and "unpriced" in orjson.dumps(body).decode().lower()

            await asyncio.wait_for(loaded.wait(), 30)
            warehouse = await asyncio.to_thread(open_warehouse, settings)
            scoped = ScopedWarehouse(warehouse, Principal("finance-user", "finance"))
            now = datetime.now(timezone.utc)

            async def dashboard_entry():
                rows = await asyncio.to_thread(list_anomalies, scoped, now - timedelta(days=1), now + timedelta(hours=1))
                return [r for r in rows if r["scope_value"] == model]

            rows = await until(dashboard_entry, 60, "the anomaly in the dashboard's list")
            assert rows[0]["kind"] == "unpriced_usage" and rows[0]["scope_dim"] == "model"
            assert hits[0]["alert_id"].split(":")[0] == rows[0]["id"]
        finally:
            stop.set()
            if tasks:
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
            if warehouse is not None:  # chDB allows one path per process: release ours for the next test
                warehouse.close()
            await runner.cleanup()

    asyncio.run(scenario())
