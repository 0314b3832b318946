"""LiteLLM cost map import: exact conversion, diff against the catalog, a layer the PriceBook loads."""

from __future__ import annotations

import threading
from datetime import date, datetime, timezone
from decimal import Decimal
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from streams.pricing import import_litellm_cost_map, load_price_book
from tokenmeter.events import Usage, UsageEvent

D = Decimal
# Entries in model_prices_and_context_window.json's own format (per-token floats as the JSON spells them).
COST_MAP = """{
  "sample_spec": {"input_cost_per_token": 0.0, "litellm_provider": "one of https://docs.litellm.ai/docs/providers",
                  "mode": "one of: chat, embedding, completion, image_generation, audio_transcription"},
  "gpt-4o": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05, "cache_read_input_token_cost": 1.25e-06,
             "input_cost_per_token_batches": 1.25e-06, "output_cost_per_token_batches": 5e-06,
             "input_cost_per_token_priority": 4.25e-06, "output_cost_per_token_priority": 1.7e-05,
             "cache_read_input_token_cost_priority": 2.125e-06,
             "litellm_provider": "openai", "mode": "chat", "max_input_tokens": 128000},
  "gpt-4o-mini": {"input_cost_per_token": 1.65e-07, "output_cost_per_token": 6.6e-07,
                  "cache_read_input_token_cost": 8.25e-08, "litellm_provider": "openai", "mode": "chat"},
  "text-embedding-3-small": {"input_cost_per_token": 2e-08, "output_cost_per_token": 0.0,
                             "litellm_provider": "openai", "mode": "embedding"},
  "gemini/gemini-2.5-flash": {"input_cost_per_token": 3e-07, "output_cost_per_token": 2.5e-06,
                              "cache_read_input_token_cost": 3e-08, "litellm_provider": "gemini", "mode": "chat"},
  "dall-e-3": {"input_cost_per_pixel": 4.0054321e-08, "output_cost_per_pixel": 0.0,
               "litellm_provider": "openai", "mode": "image_generation"},
  "acme/acme-llm-1": {
    "input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05, "output_cost_per_reasoning_token": 2e-05,
    "cache_read_input_token_cost": 3e-07, "cache_creation_input_token_cost": 3.75e-06,
    "cache_creation_input_token_cost_above_1hr": 6e-06,
    "input_cost_per_token_above_200k_tokens": 6e-06, "output_cost_per_token_above_200k_tokens": 2.25e-05,
    "cache_read_input_token_cost_above_200k_tokens": 6e-07,
    "cache_creation_input_token_cost_above_200k_tokens": 7.5e-06,
    "cache_creation_input_token_cost_above_1hr_above_200k_tokens": 1.2e-05,
    "input_cost_per_token_batches": 1.5e-06, "output_cost_per_token_batches": 7.5e-06,
    "input_cost_per_token_flex": 1.5e-06, "output_cost_per_token_flex": 8e-06,
    "litellm_provider": "acme", "mode": "chat", "source": "https://acme.example/pricing"},
  "acme/acme-embed": {"input_cost_per_token": 1e-07, "litellm_provider": "acme", "mode": "embedding"}
}"""
IMPORT_DAY = date(2026, 6, 1)


@pytest.fixture()
def cost_map(tmp_path):
    path = tmp_path / "model_prices_and_context_window.json"
    path.write_text(COST_MAP)
    return path


def event(provider: str, model: str, ts: datetime, **fields) -> UsageEvent:
    return UsageEvent(event_id="e", ts=ts, source="test", provider=provider, model=model, **fields)


def test_conversion_and_diff_against_the_catalog(cost_map, tmp_path):
    entries, report = import_litellm_cost_map(cost_map, tmp_path / "data", effective_from=IMPORT_DAY)
    assert sorted(report.added) == ["acme/acme-embed", "acme/acme-llm-1"]
    assert report.changed == {"openai/gpt-4o-mini": ["cached_input: 0.075 -> 0.0825", "input: 0.15 -> 0.165",
                                                     "output: 0.6 -> 0.66"]}
    assert sorted(report.unchanged) == ["gemini/gemini-2.5-flash", "openai/gpt-4o", "openai/text-embedding-3-small"]
    assert report.skipped == {"mode 'image_generation' is not token-priced": 1}
    assert "2 added, 1 changed, 3 unchanged" in report.summary()

    by_key = {e.key: e for e in entries}
    acme = by_key["acme/acme-llm-1"].spec["versions"][0]
    assert acme["effective_from"] == "2026-06-01"  # the import's day: the undated map says nothing of the past
    cache_prices = (acme["cached_input"], acme["cache_write_5m"], acme["cache_write_1h"])
    assert (acme["input"], *cache_prices) == ("3", "0.3", "3.75", "6")
    assert (acme["output"], acme["reasoning"], acme["source"]) == ("15", "20", "https://acme.example/pricing")
    assert acme["long_context"] == {"above_input_tokens": 200000, "input": "6", "cached_input": "0.6",
                                    "cache_write_5m": "7.5", "cache_write_1h": "12", "output": "22.5",
                                    "reasoning": "40"}  # not in the map: derived from the input ratio
    assert "long_context reasoning derived from the input ratio" in acme["notes"]
    assert acme["batch"] == {"multiplier": "0.5"}  # every batch price is half: stored as a multiplier
    assert acme["flex"]["output"] == "8" and acme["flex"]["long_context"]["input"] == "3"
    assert by_key["acme/acme-embed"].spec["versions"][0]["output"] == "0"

    # The changed model gets a dated version that keeps the catalog's tiers the map does not restate: the
    # batch multiplier now applies to the new prices, explicit priority prices stay as they were.
    mini = by_key["openai/gpt-4o-mini"].spec["versions"][0]
    assert (mini["effective_from"], mini["input"], mini["cached_input"]) == ("2026-06-01", "0.165", "0.0825")
    assert mini["batch"] == {"multiplier": "0.5"}
    assert mini["priority"] == {"input": "0.25", "cached_input": "0.125", "output": "1"}

    written = yaml.safe_load(report.written_to.read_text())
    assert set(written["providers"]) == {"acme", "openai"}


def test_the_imported_layer_prices_events(cost_map, tmp_path):
    data_dir = tmp_path / "data"
    import_litellm_cost_map(cost_map, data_dir, effective_from=IMPORT_DAY)
    book = load_price_book(data_dir=data_dir)
    million = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    before = book.price(event("openai", "gpt-4o-mini", datetime(2026, 5, 31, tzinfo=timezone.utc)), million)
    after = book.price(event("openai", "gpt-4o-mini", datetime(2026, 6, 1, tzinfo=timezone.utc)), million)
    assert (before.cost_usd, before.ref.effective_from) == (D("0.75"), "2024-07-18")  # history kept
    assert (after.cost_usd, after.ref.effective_from) == (D("0.825"), "2026-06-01")
    batch = book.price(event("openai", "gpt-4o-mini", datetime(2026, 7, 1, tzinfo=timezone.utc), batch=True), million)
    assert batch.cost_usd == D("0.4125")
    long_call = Usage(input_tokens=250_000, cached_input_tokens=50_000, output_tokens=1_000, reasoning_tokens=400)
    early = book.price(event("acme", "acme-llm-1", datetime(2026, 5, 31, tzinfo=timezone.utc)), long_call)
    assert early.status == "unpriced"  # a model new to the catalog is priced from the import's day on
    acme = book.price(event("acme", "acme-llm-1", datetime(2026, 6, 1, tzinfo=timezone.utc)), long_call)
    assert acme.breakdown == {"input": D("1.2"), "cached_input": D("0.03"), "output": D("0.0135"),
                              "reasoning": D("0.016")}
    # A second import of the same map finds nothing new.
    _, again = import_litellm_cost_map(cost_map, data_dir, effective_from=IMPORT_DAY)
    assert (again.added, again.changed) == ([], {})


def test_import_from_a_url(cost_map, tmp_path):
    handler = partial(SimpleHTTPRequestHandler, directory=str(cost_map.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{cost_map.name}"
        entries, report = import_litellm_cost_map(url, effective_from=IMPORT_DAY, providers=["acme"])
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(e.key for e in entries) == ["acme/acme-embed", "acme/acme-llm-1"]
    assert report.written_to is None and report.source == url
