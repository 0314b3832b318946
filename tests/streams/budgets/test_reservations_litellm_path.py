"""The LiteLLM path of docs/budgets.md end to end on real processes: a pre-call hook reserves (the request's
messages counted by tokenmeter, max_tokens as the output bound, LiteLLM's call id as the request id, tagged
`request_id:<call id>` on the request), the call runs, LiteLLM's generic API callback posts its
StandardLoggingPayload to `tokenmeter collect http`, the worker prices it and the owner settles the hold with the
real cost. A refused call raises like LiteLLM's HTTPException; a failed call's payload settles at its cost ($0)."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import httpx
import pytest

from process_support import get_json, http_status
from reserve_support import ready, start_worker, stop, wait_for, worker_env, zone_at_noon
from streams.budgets import parse_budget, write_budgets
from tokenmeter.settings import free_port

pytestmark = pytest.mark.slow(seconds=18)  # rough seconds: longest files first (tests/suite_order.py)
KEY = "litellm-path-" + uuid.uuid4().hex


class Refused(Exception):  # LiteLLM's proxy raises fastapi.HTTPException(status_code, detail) here
    def __init__(self, status_code: int, detail: dict):
        super().__init__(detail.get("reason"))
        self.status_code, self.detail = status_code, detail


class TokenmeterReservations:
    """What the docs' LiteLLM CustomLogger does, minus LiteLLM: async_pre_call_hook reserves, the failure hook
    releases early (the success and failure payloads settle through the collector in any case)."""

    def __init__(self, worker_url: str):
        self.worker_url = worker_url

    async def async_pre_call_hook(self, team_id: str, data: dict) -> dict:
        call_id = data["litellm_call_id"]
        body = {"provider": data.get("custom_llm_provider", "openai"), "model": data["model"],
                "attribution": {"team": team_id}, "prompt": data["messages"],
                "max_output_tokens": data.get("max_tokens"), "request_id": call_id}
        async with httpx.AsyncClient(timeout=1.0) as client:
            r = await client.post(f"{self.worker_url}/v1/reservations", json=body)
        if r.status_code in (403, 429):
            raise Refused(r.status_code, r.json())
        r.raise_for_status()
        data.setdefault("metadata", {}).setdefault("tags", []).append(f"request_id:{call_id}")  # -> request_tags
        data["metadata"]["tokenmeter_reservation"] = r.json()["reservation_id"]
        return data


def standard_logging_payload(data: dict, team: str, prompt_tokens: int, completion_tokens: int,
                             status: str = "success") -> dict:
    """LiteLLM's StandardLoggingPayload as its generic API callback posts it (shape of
    tests/collectors/payloads/litellm_success.json); `id` is the provider's response id, not the call id."""
    now = time.time()
    return {"id": f"chatcmpl-{uuid.uuid4()}", "call_type": "acompletion", "status": status,
            "custom_llm_provider": "openai", "startTime": now - 0.4, "endTime": now, "model": data["model"],
            "metadata": {"user_api_key_team_id": team, "user_api_key_user_id": "bob"},
            "request_tags": data["metadata"]["tags"], "messages": data["messages"],
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "response": {"model": "gpt-4o-2024-08-06", "usage": {"prompt_tokens": prompt_tokens,
                                                               "completion_tokens": completion_tokens,
                                                               "total_tokens": prompt_tokens + completion_tokens}}
            if status == "success" else {}}


def test_litellm_style_guard_reserves_and_the_logged_payload_settles(kafka_bootstrap, tmp_path):
    import asyncio
    import subprocess
    import sys

    from reserve_support import ROOT

    team, name = f"llm-{uuid.uuid4().hex[:6]}", f"llm-{uuid.uuid4().hex[:6]}"
    write_budgets(kafka_bootstrap, [parse_budget({"name": name, "scope": {"team": team}, "period": "day",
                                                  "tz": zone_at_noon(), "limit": "0.05", "action": "block"})])
    port, collector_port = free_port(), free_port()
    env = worker_env(kafka_bootstrap, tmp_path / "data", port)
    worker = start_worker(env, tmp_path / "worker.log")
    collector = subprocess.Popen([sys.executable, "-m", "app", "collect", "http", "--port", str(collector_port),
                                  "--api-key", KEY], env=env, cwd=ROOT, stdout=open(tmp_path / "collector.log", "ab"),
                                 stderr=subprocess.STDOUT)
    worker_url, collector_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{collector_port}"
    guard = TokenmeterReservations(worker_url)

    def log_payload(payload: dict) -> None:  # LiteLLM's generic_api callback (log_format json_array)
        r = httpx.post(f"{collector_url}/v1/logs/litellm", json=[payload],
                       headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
        assert r.status_code < 300, r.text

    def view() -> dict:
        # urllib: httpx.get builds a Client and loads the CA bundle per poll (~40 CPU-ms, suite34)
        return {b["budget"]: b for b in get_json(f"{worker_url}/v1/reservations")[1]["budgets"]}[name]

    try:
        wait_for(lambda: ready(port), what="worker ready")
        wait_for(lambda: _up(f"{collector_url}/healthz"), what="collector up")
        messages = [{"role": "user", "content": "Summarise our Q3 cloud spend in three bullet points."}]
        # gpt-4o, no tier named: worst case at priority prices ($4.25 / $17.00 per 1M), 2,000 output tokens max
        data = {"model": "gpt-4o", "messages": messages, "max_tokens": 2000, "litellm_call_id": str(uuid.uuid4())}
        data = wait_for(lambda: _try(lambda: asyncio.run(guard.async_pre_call_hook(team, dict(data)))),
                        timeout=120, what="first reservation")
        assert Decimal(view()["held"]) > Decimal("0.034")  # 2,000 x $17 / 1M + the counted prompt
        with pytest.raises(Refused) as refused:  # the second concurrent call would pass the $0.05 limit
            asyncio.run(guard.async_pre_call_hook(team, {**data, "litellm_call_id": str(uuid.uuid4()),
                                                         "metadata": {}}))
        assert refused.value.status_code == 403 and refused.value.detail["budget"] == name
        log_payload(standard_logging_payload(data, team, prompt_tokens=20, completion_tokens=500))  # $0.00505
        wait_for(lambda: view()["settled"] == 1, what="the payload settles the hold")
        settled = view()
        assert (Decimal(settled["committed"]), Decimal(settled["held"])) == (Decimal("0.00505"), Decimal(0))
        # the headroom is back: the next call is admitted; it fails at the provider, and its failure payload settles
        again = asyncio.run(guard.async_pre_call_hook(team, {**data, "litellm_call_id": str(uuid.uuid4()),
                                                             "metadata": {}}))
        log_payload(standard_logging_payload(again, team, 0, 0, status="failure"))
        wait_for(lambda: view()["settled"] == 2, what="the failure payload settles the second hold")
        assert Decimal(view()["committed"]) == Decimal("0.00505") and view()["open_reservations"] == 0
    finally:
        stop(worker)
        stop(collector)


def _up(url: str) -> bool:
    return http_status(url, timeout=1) == 200


def _try(fn):
    """fn's value, or on a refusal or HTTP error a falsy _Failed naming it (wait_for shows the last one on time-out)."""
    try:
        return fn()
    except Refused as refused:
        return _Failed(f"refused {refused.status_code}: {refused.detail}")
    except httpx.HTTPStatusError as err:
        return _Failed(f"HTTP {err.response.status_code}: {err.response.text[:300]}")
    except httpx.HTTPError as err:
        return _Failed(f"{type(err).__name__}: {err}")


class _Failed(str):
    def __bool__(self) -> bool:
        return False
