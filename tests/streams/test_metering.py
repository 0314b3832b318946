"""Token metering against OpenAI's published cookbook numbers, with the real tiktoken (offline)."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest

from streams.metering import (
    IMAGE_TOKENS_FLOOR,
    MeteringError,
    bpe_source,
    count_message_tokens,
    count_text_tokens,
    count_tool_tokens,
    get_encoding,
    meter,
    profile_for_model,
    seed_tiktoken_cache,
    tiktoken_cache_dir,
)
from tokenmeter.events import Content, Usage, UsageEvent

REPO = Path(__file__).resolve().parents[2]

# OpenAI cookbook "How to count tokens with tiktoken", section 6: the API reported 129 prompt tokens for
# gpt-3.5-turbo / gpt-4 (cl100k) and 124 for gpt-4o / gpt-4o-mini (o200k).
COOKBOOK_MESSAGES = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
                                  "into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch "
                                                          "base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to "
                                                               "do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client "
                                "deliverable."},
]
# Section 7: with this tool the API reported 105 prompt tokens (gpt-3.5-turbo, gpt-4) and 101 (gpt-4o, -mini).
COOKBOOK_TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "description": "The unit of temperature to return",
                         "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}]
COOKBOOK_TOOL_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


def event(**fields) -> UsageEvent:
    base = dict(event_id="e1", ts=datetime(2025, 10, 1, tzinfo=timezone.utc), source="test", provider="openai",
                model="gpt-4o")
    return UsageEvent(**(base | fields))


@pytest.mark.parametrize("model, expected", [
    ("gpt-3.5-turbo", 129), ("gpt-4", 129), ("gpt-4-0613", 129), ("gpt-4o", 124), ("gpt-4o-mini", 124),
])
def test_chat_messages_match_the_cookbook(model, expected):
    assert count_message_tokens(COOKBOOK_MESSAGES, model) == expected


def test_chat_formula_is_tiktoken_plus_documented_overhead():
    # The same count by hand: tiktoken lengths of every value, 3 per message, 1 per name, 3 for the reply.
    encoding = get_encoding("o200k_base")
    by_hand = 3 + sum(3 + sum(len(encoding.encode(v)) + (k == "name") for k, v in m.items()) for m in COOKBOOK_MESSAGES)
    assert by_hand == 124 == count_message_tokens(COOKBOOK_MESSAGES, "gpt-4o-2024-08-06")


@pytest.mark.parametrize("model, expected", [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101),
                                             ("gpt-4o-mini", 101)])
def test_tool_definitions_match_the_cookbook(model, expected):
    total = count_message_tokens(COOKBOOK_TOOL_MESSAGES, model) + count_tool_tokens(COOKBOOK_TOOLS, model)
    assert total == expected


def test_tool_formats_of_other_apis_count_the_same():
    function = COOKBOOK_TOOLS[0]["function"]
    responses_api = [{"type": "function", **function}]
    anthropic = [{"name": function["name"], "description": function["description"],
                  "input_schema": function["parameters"]}]
    expected = count_tool_tokens(COOKBOOK_TOOLS, "gpt-4o")
    assert count_tool_tokens(responses_api, "gpt-4o") == expected
    assert count_tool_tokens(anthropic, "gpt-4o") == expected
    assert count_tool_tokens([], "gpt-4o") == 0


@pytest.mark.parametrize("model, encoding, exact", [
    ("gpt-4o", "o200k_base", True), ("gpt-4o-2024-08-06", "o200k_base", True),
    ("chatgpt-4o-latest", "o200k_base", True), ("gpt-4.1-mini", "o200k_base", True), ("o1", "o200k_base", True),
    ("o3-mini", "o200k_base", True), ("o4-mini-2025-04-16", "o200k_base", True), ("gpt-5-nano", "o200k_base", True),
    ("openai/gpt-5", "o200k_base", True),
    ("ft:gpt-4o-mini:acme::abc", "o200k_base", True),
    ("gpt-4", "cl100k_base", True), ("gpt-4-turbo", "cl100k_base", True), ("gpt-3.5-turbo", "cl100k_base", True),
    ("gpt-35-turbo", "cl100k_base", True), ("text-embedding-3-small", "cl100k_base", True),
    ("text-embedding-ada-002", "cl100k_base", True),
    ("claude-sonnet-4-5", "o200k_base", False), ("us.anthropic.claude-haiku-4-5-20251001-v1:0", "o200k_base", False),
    ("meta.llama3-3-70b-instruct-v1:0", "cl100k_base", False), ("gemini-2.5-pro", "o200k_base", False),
])
def test_encoding_per_model_family(model, encoding, exact):
    profile = profile_for_model(model)
    assert (profile.encoding, profile.exact_tokenizer) == (encoding, exact)


def test_provider_usage_always_wins_over_content():
    usage = Usage(input_tokens=7, output_tokens=3)
    metered, source = meter(event(usage=usage, content=Content(prompt="a much longer prompt " * 50)))
    assert (metered, source) == (usage, "provider")


def test_content_is_counted_and_marked_estimated():
    completion = "Things working well together will increase revenue."
    metered, source = meter(event(content=Content(prompt=COOKBOOK_MESSAGES, completion=completion)))
    assert source == "estimated"
    assert metered.input_tokens == 124
    assert metered.output_tokens == len(get_encoding("o200k_base").encode(completion))
    assert metered.cached_input_tokens == metered.reasoning_tokens == 0


def test_tools_are_part_of_the_prompt():
    metered, _ = meter(event(content=Content(prompt=COOKBOOK_TOOL_MESSAGES, tools=COOKBOOK_TOOLS)))
    assert metered.input_tokens == 101


def test_plain_text_prompt_has_no_chat_framing():
    text = "The quick brown fox jumps over the lazy dog."
    metered, _ = meter(event(model="text-embedding-3-small", operation="embeddings", content=Content(prompt=text)))
    assert metered.input_tokens == len(get_encoding("cl100k_base").encode(text)) == 10
    assert metered.output_tokens == 0


def test_special_token_text_in_user_content_is_plain_text():
    assert count_text_tokens("<|endoftext|> and <|endofprompt|>", "gpt-4o") > 2


def test_images_count_the_low_detail_floor():
    parts = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                          {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]
    text_only = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}]}]
    assert count_message_tokens(parts, "gpt-4o") - count_message_tokens(text_only, "gpt-4o") == IMAGE_TOKENS_FLOOR


def test_non_openai_models_are_scaled_o200k_estimates():
    text = "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."
    o200k = len(get_encoding("o200k_base").encode(text))
    metered, source = meter(event(provider="anthropic", model="claude-sonnet-4-5-20250929",
                                  content=Content(prompt=text, completion=text)))
    assert source == "estimated"
    assert metered.input_tokens == metered.output_tokens == math.ceil(o200k * 1.2)
    llama, _ = meter(event(provider="bedrock", model="meta.llama3-3-70b-instruct-v1:0", content=Content(prompt=text)))
    assert llama.input_tokens == len(get_encoding("cl100k_base").encode(text))


def test_ok_event_with_nothing_to_count_is_a_metering_error():
    with pytest.raises(MeteringError) as raised:
        meter(event(event_id="no-usage"))
    assert "neither usage nor content" in raised.value.reason
    assert raised.value.event_id == "no-usage"
    with pytest.raises(MeteringError):
        meter(event(content=Content()))


def test_failed_call_without_usage_is_zero_and_estimated():
    metered, source = meter(event(status="error"))
    assert metered == Usage() and source == "estimated"


def test_cache_dir_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert tiktoken_cache_dir() == tmp_path / ".cache" / "tokenmeter" / "tiktoken"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert tiktoken_cache_dir() == tmp_path / "elsewhere"


def test_seed_writes_the_file_tiktoken_expects_and_repairs_a_bad_one(monkeypatch, tmp_path):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    source = bpe_source("cl100k_base")
    assert source.url.endswith("/cl100k_base.tiktoken") and len(source.expected_hash) == 64
    target = tmp_path / hashlib.sha1(source.url.encode()).hexdigest()
    target.write_bytes(b"corrupt")
    assert seed_tiktoken_cache("cl100k_base")
    assert hashlib.sha256(target.read_bytes()).hexdigest() == source.expected_hash


def test_tokenizers_load_offline_in_a_fresh_process(tmp_path):
    # A dead proxy makes any download attempt fail, so success proves the offline seed was used.
    script = textwrap.dedent("""
        from streams.metering import count_text_tokens
        print(count_text_tokens("hello world", "gpt-4o"), count_text_tokens("hello world", "gpt-4"))
    """)
    env = os.environ | {"PYTHONPATH": str(REPO), "TIKTOKEN_CACHE_DIR": str(tmp_path / "cache"),
                        "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "2"]
    assert len(list((tmp_path / "cache").iterdir())) == 2
