"""`tokenmeter prices ...` through the real CLI entry point, with a real HTTP server for the URL import."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest
from click.testing import CliRunner

from app.cli import main

# A few entries in model_prices_and_context_window.json's own format (per-token floats, as LiteLLM writes them).
COST_MAP = """{
  "sample_spec": {"input_cost_per_token": 0.0, "litellm_provider": "one of https://docs.litellm.ai/docs/providers",
                  "mode": "one of: chat, embedding, completion, image_generation"},
  "gpt-4o": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05, "cache_read_input_token_cost": 1.25e-06,
             "litellm_provider": "openai", "mode": "chat", "max_input_tokens": 128000},
  "gpt-4o-mini": {"input_cost_per_token": 1.65e-07, "output_cost_per_token": 6.6e-07,
                  "cache_read_input_token_cost": 8.25e-08, "litellm_provider": "openai", "mode": "chat"},
  "dall-e-3": {"input_cost_per_pixel": 4.0054321e-08, "output_cost_per_pixel": 0.0,
               "litellm_provider": "openai", "mode": "image_generation"},
  "acme/acme-llm-1": {"input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
                      "cache_read_input_token_cost": 3e-07, "litellm_provider": "acme", "mode": "chat"}
}"""


@pytest.fixture()
def env(tmp_path, monkeypatch):
    for name in ("TOKENMETER_CONFIG", "TOKENMETER_PRICE_OVERRIDES", "TOKENMETER_AZURE_DEPLOYMENTS"):
        monkeypatch.delenv(name, raising=False)
    data_dir = tmp_path / "data"
    monkeypatch.setenv("TOKENMETER_DATA_DIR", str(data_dir))
    source_dir = tmp_path / "www"
    source_dir.mkdir()
    (source_dir / "model_prices_and_context_window.json").write_text(COST_MAP)
    return data_dir, source_dir / "model_prices_and_context_window.json"


def run(*args: str):
    return CliRunner().invoke(main, ["prices", *args], catch_exceptions=False)


@pytest.fixture()
def http_url(env):
    _, cost_map = env
    handler = partial(SimpleHTTPRequestHandler, directory=str(cost_map.parent))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{cost_map.name}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_import_dry_run_shows_changes_and_writes_nothing(env):
    data_dir, cost_map = env
    result = run("import", str(cost_map), "--dry-run")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "added: 1  changed: 1  unchanged: 1  skipped: 1" in out
    assert "+ acme/acme-llm-1: input 3, cached_input 0.3, output 15 (USD per 1M tokens)" in out
    assert "~ openai/gpt-4o-mini:" in out
    for change in ("cached_input: 0.075 -> 0.0825", "input: 0.15 -> 0.165", "output: 0.6 -> 0.66"):
        assert change in out
    assert "dry run: nothing written" in out
    assert not (data_dir / "pricing").exists()


def test_import_from_url_is_used_by_list_and_show(env, http_url):
    data_dir, _ = env
    result = run("import", http_url, "--providers", "openai,acme")
    assert result.exit_code == 0, result.output
    assert "written to" in result.output and (data_dir / "pricing" / "litellm.yaml").is_file()

    listed = orjson.loads(run("list", "--provider", "openai", "--format", "json").output)
    mini = next(r for r in listed if r["model"] == "gpt-4o-mini")
    assert (mini["input"], mini["cached_input"], mini["output"]) == ("0.165", "0.0825", "0.66")
    assert all(r["provider"] == "openai" for r in listed)

    shown = run("show", "acme-llm-1", "--provider", "acme")
    assert shown.exit_code == 0, shown.output
    assert "entry: acme/acme-llm-1" in shown.output and "<- in force" in shown.output
    assert "litellm.yaml" in shown.output

    again = run("import", http_url, "--providers", "openai,acme", "--dry-run")
    assert "added: 0  changed: 0  unchanged: 3" in again.output  # the import is now part of the book


def test_import_only_selected_providers(env):
    _, cost_map = env
    result = run("import", str(cost_map), "--providers", "acme", "--dry-run")
    assert "added: 1  changed: 0  unchanged: 0" in result.output
    assert "provider not selected" in result.output


def test_import_bad_source_is_a_clear_error(env, tmp_path):
    result = run("import", str(tmp_path / "missing.json"))
    assert result.exit_code == 1
    assert "cannot read the LiteLLM cost map" in result.output
    broken = tmp_path / "broken.json"
    broken.write_text('{"m": {"input_cost_per_token": 1e-06, "output_cost_per_token": -1e-06, '
                      '"litellm_provider": "acme", "mode": "chat"}}')
    result = run("import", str(broken))
    assert result.exit_code == 1 and "output" in result.output


def test_list_table_has_prices_and_sources(env):
    result = run("list", "--provider", "openai")
    assert result.exit_code == 0
    header, *lines = result.output.splitlines()
    assert header.split() == ["model", "provider", "input", "cached", "output", "since", "source"]
    gpt4o = next(line.split() for line in lines if line.split()[0] == "gpt-4o")
    assert gpt4o[1:5] == ["openai", "2.5", "1.25", "10"] and gpt4o[6].startswith("https://")


def test_show_version_in_force_and_unpriced_reasons(env):
    old = run("show", "openai/gpt-4o", "--at", "2024-06-01")
    assert old.exit_code == 0, old.output
    assert "names tried: openai/gpt-4o, gpt-4o" in old.output
    in_force = [line for line in old.output.splitlines() if "<- in force" in line]
    assert in_force == ["    2024-05-13  input 5  output 15  <- in force"]
    assert "batch.input" in old.output and "source: https://" in old.output

    unknown = run("show", "no-such-model")
    assert unknown.exit_code == 1 and "UNPRICED: unknown model 'no-such-model'" in unknown.output
    too_early = run("show", "gpt-4o", "--at", "2020-01-01")
    assert too_early.exit_code == 1 and "no price for openai/gpt-4o in force" in too_early.output
    bad_time = run("show", "gpt-4o", "--at", "yesterday")
    assert bad_time.exit_code == 2 and "--at" in bad_time.output


def test_accuracy_formats(env):
    markdown = run("accuracy", "--format", "markdown")
    assert markdown.exit_code == 0
    assert markdown.output.startswith("| family | calls |")
    assert "| openai-o200k |" in markdown.output
    rows = orjson.loads(run("accuracy", "--format", "json").output)
    assert {r["family"] for r in rows} >= {"openai-o200k", "openai-cl100k", "claude", "gemini"}
    assert "input err" in run("accuracy").output


def test_a_model_new_to_the_catalog_is_priced_from_today_unless_a_date_is_stated(env):
    """walk33: an added model was dated 1970-01-01, so `reprice` priced its whole past (closed months too, as
    corrections) at the map's price of today. Like a changed price it now starts today (UTC), or on the day
    `--effective-from` states, and the command says which."""
    _, cost_map = env
    today = datetime.now(timezone.utc).date()
    result = run("import", str(cost_map), "--providers", "acme")
    assert result.exit_code == 0, result.output
    assert f"in force from {today.isoformat()}" in result.output
    yesterday = (today - timedelta(days=1)).isoformat()
    before = run("show", "acme-llm-1", "--provider", "acme", "--at", yesterday)
    assert before.exit_code == 1 and f"first price from {today.isoformat()}" in before.output
    assert run("show", "acme-llm-1", "--provider", "acme").exit_code == 0

    stated = run("import", str(cost_map), "--providers", "acme,openai", "--effective-from", "2026-11-01")
    assert stated.exit_code == 0, stated.output
    assert "in force from 2026-11-01" in stated.output
    in_force = run("show", "acme-llm-1", "--provider", "acme", "--at", "2026-11-01T00:00:00Z")
    assert "2026-11-01  input 3  output 15  <- in force" in in_force.output
    assert run("show", "acme-llm-1", "--provider", "acme", "--at", "2026-10-31T23:59:59Z").exit_code == 1
    mini = run("show", "gpt-4o-mini", "--provider", "openai", "--at", "2026-11-01")
    assert "2026-11-01  input 0.165  output 0.66  <- in force" in mini.output

    bad = run("import", str(cost_map), "--effective-from", "next week")
    assert bad.exit_code == 2 and "--effective-from" in bad.output
