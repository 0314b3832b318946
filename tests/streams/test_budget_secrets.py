"""Issue 11 item 8: notify-route secrets are stored once (0600) and shown masked everywhere else; the worker API
binds to TOKENMETER_HOST; writing through the API needs the admin token; the dispatcher still delivers, reading
the real targets from the one protected store. Real worker, real broker, real dispatcher, real HTTP endpoint."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import orjson
import pytest
from test_alerts_support import alert_settings, endpoint, new_topics, running_dispatcher
from test_alerts_support import produce as produce_alerts
from test_budgets_worker import ROOT, _ok, event, produce, start_worker, stop, wait_for

from streams.topic_reader import read_topic
from tokenmeter import topics
from tokenmeter.settings import free_port

pytestmark = pytest.mark.slow(seconds=8)  # rough seconds: longest files first (tests/suite_order.py)

PD_KEY = "S3cr3tPagerDutyRoutingKey0123456"  # 32 letters/digits


def listen_addresses(port: int) -> set[str]:
    """Local addresses with a socket in LISTEN on `port` (from /proc/net/tcp: state 0A)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def request(method: str, url: str, body: dict | None = None, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = orjson.dumps(body) if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=headers),
                                    timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_route_secrets_never_leave_their_store_and_still_deliver(kafka_bootstrap, tmp_path):
    async def scenario() -> None:
        async with endpoint() as ep:
            slack_secret, hook_secret = f"T0/B0/slk{uuid.uuid4().hex}", f"tok{uuid.uuid4().hex}"
            secrets_ = [slack_secret, hook_secret, PD_KEY]
            data = tmp_path / "data"
            api_port = free_port()
            env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENMETER_KAFKA_BOOTSTRAP=kafka_bootstrap,
                       TOKENMETER_DATA_DIR=str(data), TOKENMETER_API_PORT=str(api_port),
                       TOKENMETER_HOST="127.0.0.1", TOKENMETER_WORKER_BATCH_SECONDS="0.2")
            env.pop("TOKENMETER_ADMIN_TOKEN", None)
            name, team = f"sec-{uuid.uuid4().hex[:6]}", f"team-{uuid.uuid4().hex[:6]}"
            set_budget = subprocess.run(
                [sys.executable, "-m", "app", "budget", "set", name, "--scope", f"team={team}",
                 "--limit-usd", "1", "--thresholds", "50", "--notify", f"slack={ep.url('/services/' + slack_secret)}",
                 "--notify", f"pagerduty={PD_KEY}", "--notify", f"webhook={ep.url('/hook/' + hook_secret)}?k=v"],
                env=env, capture_output=True, text=True, timeout=60)
            assert set_budget.returncode == 0, set_budget.stderr
            assert not any(s in set_budget.stdout + set_budget.stderr for s in secrets_)
            budget_records = [r for r in await read_topic(kafka_bootstrap, topics.BUDGETS) if r.key == name]
            assert budget_records and not any(s.encode() in r.value for r in budget_records for s in secrets_)

            worker = start_worker(env, tmp_path / "worker.log")
            try:
                base = f"http://127.0.0.1:{api_port}"
                await asyncio.to_thread(wait_for, lambda: _ok(f"{base}/health"), 90, "worker health")
                assert listen_addresses(api_port) == {"127.0.0.1"}  # not 0.0.0.0

                status, body = await asyncio.to_thread(
                    wait_for, lambda: (r := request("GET", f"{base}/v1/budgets"))[0] == 200 and name.encode() in r[1]
                    and r, 60, "the budget in /v1/budgets")
                assert not any(s.encode() in body for s in secrets_), body
                shown = next(b for b in orjson.loads(body)["budgets"] if b["name"] == name)["notify"]
                assert len(shown) == 3 and all("#secret=r-" in n for n in shown)

                await asyncio.to_thread(asyncio.run, produce(kafka_bootstrap, [[event(team, 1_000_000, 0)]]))

                def our_alerts() -> list:
                    return [r for r in asyncio.run(read_topic(kafka_bootstrap, topics.ALERTS))
                            if r.value and name.encode() in r.value]
                alerts = await asyncio.to_thread(wait_for, our_alerts, 60, "the 50% alert")
                assert not any(s.encode() in r.value for r in alerts for s in secrets_)

                mirror, store = data / "budgets.json", data / "route-secrets.json"
                assert mode(mirror) == 0o600 and not any(s in mirror.read_text() for s in secrets_)
                assert mode(store) == 0o600 and all(s in store.read_text() for s in secrets_)

                # Writing through the API needs the admin token (generated 0600 at the first start).
                new = {"scope": {"team": team}, "limit": "5", "notify": [f"pagerduty={PD_KEY}"]}
                assert (await asyncio.to_thread(request, "PUT", f"{base}/v1/budgets/{name}-2", new))[0] == 401
                assert (await asyncio.to_thread(request, "PUT", f"{base}/v1/budgets/{name}-2", new, "wrong"))[0] == 401
                token_file = data / "admin.token"
                assert mode(token_file) == 0o600
                status, body = await asyncio.to_thread(request, "PUT", f"{base}/v1/budgets/{name}-2", new,
                                                       token_file.read_text().strip())
                assert status == 200 and PD_KEY.encode() not in body, body
                token = token_file.read_text().strip()
                await asyncio.to_thread(wait_for, lambda: f"{name}-2".encode() in request(
                    "GET", f"{base}/v1/budgets")[1], 30, "the budget saved through the API")
                put_records = [r for r in await read_topic(kafka_bootstrap, topics.BUDGETS) if r.key == f"{name}-2"]
                assert put_records and all(PD_KEY.encode() not in r.value for r in put_records)
                assert (await asyncio.to_thread(request, "DELETE", f"{base}/v1/budgets/{name}-2"))[0] == 401
                assert (await asyncio.to_thread(request, "DELETE", f"{base}/v1/budgets/{name}-2", None, token))[0] == 200
                bad = await asyncio.to_thread(request, "PUT", f"{base}/v1/budgets/{name}-3", {"limit": "x"}, token)
                assert bad[0] == 400 and b"limit" in bad[1]
            finally:
                stop(worker)
            log_text = (tmp_path / "worker.log").read_text(errors="replace")
            assert not any(s in log_text for s in secrets_)

            # The dispatcher reads the real targets from the store: every route is delivered.
            names = await new_topics(kafka_bootstrap)
            settings = alert_settings(kafka_bootstrap, data_dir=data, pagerduty_url=ep.url("/v2/enqueue"),
                                      alert_max_attempts=1)
            await produce_alerts(kafka_bootstrap, names.alerts, [alerts[0].value])
            async with running_dispatcher(settings, names):
                await ep.wait_for(3)
            assert ep.on(f"/services/{slack_secret}") and ep.on(f"/hook/{hook_secret}")
            assert ep.on("/v2/enqueue")[0].json()["routing_key"] == PD_KEY

    asyncio.run(scenario())
