"""`tokenmeter collect openai-usage|anthropic-usage` against a local fake of the providers' admin APIs (documented
payload format, 2-item pages, one 429 with Retry-After), read back from the real broker's provider-usage topic."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from process_support import now_inside_one_day
from test_collectors_mode_support import cli_env, read_topic, start_cli, stop_process

from collectors.provider_usage import AnthropicUsage, OpenAIUsage, ProviderFormatError, anthropic_client, openai_client
from collectors.provider_usage.anthropic import cents_to_dollars
from collectors.provider_usage.common import retry_after_seconds
from tokenmeter import topics

PAGE_SIZE = 2  # the fake returns at most 2 buckets per page, so 3 buckets take 2 pages
RAW_NUMBER = re.compile(r'"__num__([-+0-9.eE]+)"')


def raw(number: str) -> str:
    """A JSON number written verbatim into the response text (json.dumps would go through float)."""
    return f"__num__{number}"


class FakeAdminApi:
    """Serves buckets in the documented format, checks auth, pages by `PAGE_SIZE`, throttles chosen paths once."""

    def __init__(self, provider: str, key: str, buckets: dict[str, list[dict[str, Any]]]):
        self.provider = provider
        self.key = key
        self.buckets = buckets
        self.throttle_once: set[str] = set(buckets)
        self.requests: list[tuple[str, dict[str, list[str]], int]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                url = urlsplit(self.path)
                status, body, headers = fake.answer(url.path, parse_qs(url.query), self.headers)
                fake.requests.append((url.path, parse_qs(url.query), status))
                data = RAW_NUMBER.sub(r"\1", json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def answer(self, path: str, query: dict[str, list[str]], headers: Any) -> tuple[int, Any, dict[str, str]]:
        if self.provider == "openai":
            authorized = headers.get("Authorization") == f"Bearer {self.key}"
            refusal = {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
        else:
            if headers.get("anthropic-version") != "2023-06-01":
                return 400, {"type": "error", "error": {"type": "invalid_request_error",
                                                        "message": "anthropic-version header is required"}}, {}
            authorized = headers.get("x-api-key") == self.key
            refusal = {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
        if not authorized:
            return 401, refusal, {}
        if path not in self.buckets:
            return 404, {"error": {"message": f"no route {path}"}}, {}
        if path in self.throttle_once:
            self.throttle_once.discard(path)
            return 429, {"error": {"message": "rate limited"}}, {"Retry-After": "0"}
        if self.provider == "openai":
            start = int(query["start_time"][0])
            matching = [b for b in self.buckets[path] if b["start_time"] >= start]
        else:
            start_at = datetime.fromisoformat(query["starting_at"][0])
            matching = [b for b in self.buckets[path]
                        if datetime.fromisoformat(b["starting_at"]) >= start_at]
        offset = int(base64.b64decode(query["page"][0][5:])) if "page" in query else 0
        size = min(int(query.get("limit", ["7"])[0]), PAGE_SIZE)
        page = matching[offset:offset + size]
        more = offset + size < len(matching)
        token = "page_" + base64.b64encode(str(offset + size).encode()).decode() if more else None
        body: dict[str, Any] = {"data": page, "has_more": more, "next_page": token}
        if self.provider == "openai":
            body["object"] = "page"
        return 200, body, {}


def _days() -> list[datetime]:
    # the poller (a child) reads the real clock and fetches today's bucket again: a test that straddled midnight
    # would find yesterday complete, so near midnight this waits it out
    today = now_inside_one_day().replace(hour=0, minute=0, second=0)
    return [today - timedelta(days=2), today - timedelta(days=1), today]  # the last one is still incomplete


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _mine(values: list[Any], tag: str) -> list[dict[str, Any]]:
    return [v for v in values if isinstance(v, dict) and tag in json.dumps(v.get("group"))]


def _read_back(bootstrap: str, tag: str, expected: int) -> list[dict[str, Any]]:
    values = read_topic(bootstrap, topics.PROVIDER_USAGE, lambda vs: len(_mine(vs, tag)) >= expected)
    return _mine(values, tag)


@pytest.fixture
def openai_api():
    tag = uuid.uuid4().hex[:10]
    days = _days()
    costs = ["0.1234567890123456789", "12.5", "3e-7"]
    usage_buckets, cost_buckets = [], []
    for i, day in enumerate(days):
        bounds = {"object": "bucket", "start_time": int(day.timestamp()),
                  "end_time": int((day + timedelta(days=1)).timestamp())}
        usage_buckets.append({**bounds, "results": [
            {"object": "organization.usage.completions.result", "input_tokens": 1000 + i, "output_tokens": 500,
             "input_cached_tokens": 800, "input_audio_tokens": 0, "output_audio_tokens": 0,
             "num_model_requests": 5 + i, "project_id": f"proj_{tag}", "user_id": None, "api_key_id": None,
             "model": "gpt-4o-mini-2024-07-18", "batch": None, "service_tier": None}]})
        cost_buckets.append({**bounds, "results": [
            {"object": "organization.costs.result", "amount": {"value": raw(costs[i]), "currency": "usd"},
             "line_item": "gpt-4o-mini-2024-07-18, input", "project_id": f"proj_{tag}"}]})
    api = FakeAdminApi("openai", f"sk-admin-{tag}", {"/v1/organization/usage/completions": usage_buckets,
                                                     "/v1/organization/costs": cost_buckets})
    api.tag, api.days = tag, days
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture
def anthropic_api():
    tag = uuid.uuid4().hex[:10]
    days = _days()
    usage_buckets, cost_buckets = [], []
    for i, day in enumerate(days):
        bounds = {"starting_at": _iso(day), "ending_at": _iso(day + timedelta(days=1))}
        usage_buckets.append({**bounds, "results": [
            {"uncached_input_tokens": 100 + i, "cache_creation": {"ephemeral_1h_input_tokens": 30,
                                                                  "ephemeral_5m_input_tokens": 20},
             "cache_read_input_tokens": 400, "output_tokens": 250, "server_tool_use": {"web_search_requests": 0},
             "api_key_id": None, "workspace_id": f"wrkspc_{tag}", "model": "claude-sonnet-4-20250514",
             "service_tier": "standard", "context_window": "0-200k"}]})
        cost_buckets.append({**bounds, "results": [
            {"currency": "USD", "amount": "123.78912", "workspace_id": f"wrkspc_{tag}",
             "description": "Claude Sonnet 4 Usage - Input Tokens", "cost_type": "tokens",
             "context_window": "0-200k", "model": "claude-sonnet-4-20250514", "service_tier": "standard",
             "token_type": "uncached_input_tokens"},
            {"currency": "USD", "amount": "0.000000000000000000000000000001", "workspace_id": f"wrkspc_{tag}",
             "description": "Claude Sonnet 4 Usage - Output Tokens", "cost_type": "tokens",
             "context_window": "0-200k", "model": "claude-sonnet-4-20250514", "service_tier": "batch",
             "token_type": "output_tokens"}]})
    api = FakeAdminApi("anthropic", f"sk-ant-admin01-{tag}", {"/v1/organizations/usage_report/messages": usage_buckets,
                                                               "/v1/organizations/cost_report": cost_buckets})
    api.tag, api.days = tag, days
    try:
        yield api
    finally:
        api.stop()


def _run_cli(args: list[str], env: dict[str, str], log: Path) -> int:
    proc = start_cli(args, env, log)
    try:
        return proc.wait(90)
    finally:
        stop_process(proc)


def test_openai_usage_once_pages_retries_and_exact_costs(kafka_bootstrap, tmp_path, openai_api):
    env = cli_env(kafka_bootstrap, tmp_path, OPENAI_ADMIN_KEY=openai_api.key)
    args = ["openai-usage", "--once", "--since", openai_api.days[0].date().isoformat(),
            "--base-url", openai_api.base_url, "--group-by", "model,project_id"]
    log = tmp_path / "openai.log"
    assert _run_cli(args, env, log) == 0, log.read_text()
    assert openai_api.key not in log.read_text()

    records = _read_back(kafka_bootstrap, openai_api.tag, 6)
    usage = sorted((r for r in records if r["kind"] == "usage"), key=lambda r: r["bucket_start"])
    cost = sorted((r for r in records if r["kind"] == "cost"), key=lambda r: r["bucket_start"])
    assert len(usage) == 3 and len(cost) == 3 and len({r["id"] for r in records}) == 6
    assert [r["bucket_start"] for r in usage] == [_iso(d) for d in openai_api.days]
    first = usage[0]
    assert (first["provider"], first["model"], first["project_id"]) == (
        "openai", "gpt-4o-mini-2024-07-18", f"proj_{openai_api.tag}")
    assert (first["input_tokens"], first["cached_input_tokens"], first["output_tokens"], first["requests"]) == (
        1000, 800, 500, 5)  # input_tokens already includes the cached ones
    assert [r["cost_usd"] for r in cost] == ["0.1234567890123456789", "12.5", "0.0000003"]
    assert sum(Decimal(r["cost_usd"]) for r in cost) == Decimal("12.6234570890123456789")
    assert cost[0]["line_item"] == "gpt-4o-mini-2024-07-18, input"

    # One 429 per endpoint was retried; 3 buckets came over 2 pages; the key went as a Bearer token only.
    for path in ("/v1/organization/usage/completions", "/v1/organization/costs"):
        calls = [(q, s) for p, q, s in openai_api.requests if p == path]
        assert [s for _, s in calls] == [429, 200, 200]
        assert "page" in calls[2][0] and calls[1][0]["group_by"]
    assert openai_api.requests[0][1]["group_by"] == ["model", "project_id"]

    # Restart: continue from the last complete bucket; today's bucket is fetched again under the same id.
    state = json.loads((tmp_path / "provider-usage" / "openai.json").read_text())
    assert state["usage"]["complete_until"] == _iso(openai_api.days[2])
    openai_api.requests.clear()
    assert _run_cli(args, env, log) == 0, log.read_text()
    assert {q["start_time"][0] for _, q, _ in openai_api.requests} == {str(int(openai_api.days[2].timestamp()))}
    again = _read_back(kafka_bootstrap, openai_api.tag, 8)
    assert len(again) == 8 and len({r["id"] for r in again}) == 6


def test_openai_usage_401_names_the_env_variable(kafka_bootstrap, tmp_path, openai_api):
    env = cli_env(kafka_bootstrap, tmp_path, OPENAI_ADMIN_KEY="sk-admin-wrong-secret")
    log = tmp_path / "openai-401.log"
    args = ["openai-usage", "--once", "--base-url", openai_api.base_url]
    assert _run_cli(args, env, log) != 0
    output = log.read_text()
    assert "401" in output and "OPENAI_ADMIN_KEY" in output and "sk-admin-wrong-secret" not in output
    assert not (tmp_path / "provider-usage" / "openai.json").exists()


def test_anthropic_usage_once_cents_and_cache_tokens(kafka_bootstrap, tmp_path, anthropic_api):
    key_file = tmp_path / "anthropic.key"
    key_file.write_text(anthropic_api.key + "\n")
    env = cli_env(kafka_bootstrap, tmp_path)
    log = tmp_path / "anthropic.log"
    args = ["anthropic-usage", "--once", "--since", _iso(anthropic_api.days[0]), "--admin-key-file", str(key_file),
            "--base-url", anthropic_api.base_url]
    assert _run_cli(args, env, log) == 0, log.read_text()

    records = _read_back(kafka_bootstrap, anthropic_api.tag, 9)
    usage = sorted((r for r in records if r["kind"] == "usage"), key=lambda r: r["bucket_start"])
    cost = [r for r in records if r["kind"] == "cost"]
    assert len(usage) == 3 and len(cost) == 6
    first = usage[0]
    assert (first["input_tokens"], first["cached_input_tokens"], first["cache_write_tokens"],
            first["cache_write_1h_tokens"], first["output_tokens"]) == (550, 400, 50, 30, 250)
    assert (first["workspace_id"], first["service_tier"], first["requests"]) == (
        f"wrkspc_{anthropic_api.tag}", "standard", None)
    assert sorted({r["cost_usd"] for r in cost}) == ["0.00000000000000000000000000000001", "1.2378912"]
    output_line = next(r for r in cost if r["token_type"] == "output_tokens")
    assert output_line["batch"] is True and output_line["model"] == "claude-sonnet-4-20250514"

    for path in ("/v1/organizations/usage_report/messages", "/v1/organizations/cost_report"):
        assert [s for p, _, s in anthropic_api.requests if p == path] == [429, 200, 200]
    usage_query = next(q for p, q, s in anthropic_api.requests if p.endswith("/messages") and s == 200)
    assert usage_query["group_by[]"] == ["model", "workspace_id"] and usage_query["bucket_width"] == ["1d"]


def test_anthropic_401_and_bad_amount_are_clear_errors(anthropic_api):
    from collectors.provider_usage import AuthError

    async def fetch(key: str, kind: str) -> Any:
        client = anthropic_client(anthropic_api.base_url, key, "environment variable ANTHROPIC_ADMIN_KEY",
                                  backoff_s=0)
        try:
            return await AnthropicUsage().fetch(client, kind, anthropic_api.days[0], datetime.now(timezone.utc))
        finally:
            await client.close()

    with pytest.raises(AuthError, match="ANTHROPIC_ADMIN_KEY") as refused:
        asyncio.run(fetch("sk-ant-wrong", "usage"))
    assert "sk-ant-wrong" not in str(refused.value)

    anthropic_api.buckets["/v1/organizations/cost_report"][1]["results"][0]["amount"] = "12,5"
    with pytest.raises(ProviderFormatError, match=r"page 1 data\[1\]\.results\[0\]\.amount"):
        asyncio.run(fetch(anthropic_api.key, "cost"))


def test_money_conversions_are_exact():
    assert cents_to_dollars("123.78912", "amount") == Decimal("1.2378912")
    assert format(cents_to_dollars("1" * 40, "amount"), "f") == "1" * 38 + ".11"  # no context rounding
    for bad in (None, "", "NaN", 1.5, True):
        with pytest.raises(ProviderFormatError, match="amount"):
            cents_to_dollars(bad, "amount")
    spec = OpenAIUsage()
    bucket = {"results": [{"object": "organization.costs.result", "amount": {"value": "0.06", "currency": "usd"}}]}
    with pytest.raises(ProviderFormatError, match=r"results\[0\]\.amount\.value"):
        spec.rows("cost", datetime.now(timezone.utc), datetime.now(timezone.utc), bucket, "b", "now")
    with pytest.raises(ValueError, match="--group-by"):
        OpenAIUsage(group_by=("workspace_id",))
    assert retry_after_seconds("3") == 3.0 and retry_after_seconds(None) is None
    assert openai_client  # exported


def test_a_usage_row_of_requests_without_tokens_is_kept_as_the_provider_reported():
    """left24: all-zero token counts beside requests in a provider's usage report are not a lost count of ours: the
    report is the provider's own statement (never priced into spend; the cost report carries the money), so it is
    kept as reported, not refused (a format error stops the poller) nor dropped. Drift reads 0 tokens as "no token
    count to compare" (warehouse.drift.likely_cause), so such a row never makes a gap look like a price change."""
    from datetime import date

    from warehouse.drift import DriftRow, Thresholds, likely_cause

    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    record = OpenAIUsage()._usage({"object": "organization.usage.completions.result", "model": "gpt-4o",
                                   "input_tokens": 0, "output_tokens": 0, "num_model_requests": 4},
                                  "data[0].results[0]", start, start + timedelta(days=1), "2026-11-02T00:00:00Z")
    assert (record["requests"], record["input_tokens"], record["output_tokens"]) == (4, 0, 0)
    row = DriftRow(day=date(2026, 11, 1), provider="openai", model="gpt-4o", metered_cost=Decimal("1"),
                   reported_cost=Decimal("3"), metered_tokens=1000, reported_tokens=record["input_tokens"],
                   unpriced_events=0, explained=Decimal("1"))
    assert likely_cause(row, Thresholds()) == "missing_source"  # not "price_change" on tokens that "agree"
