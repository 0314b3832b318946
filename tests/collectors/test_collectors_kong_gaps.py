"""Kong logs some providers' usage short, and tokenmeter cannot restore what is not logged: such events are
metered as logged and MARKED (usage_assumption), so reports show which spend is a lower bound.

Kong/kong 22246ef28c16842098369b494eef879222e30c7b (2026-07-01): kong/llm/drivers/anthropic.lua sets
prompt_tokens = usage.input_tokens (Anthropic's input WITHOUT cache reads/writes, none logged);
kong/llm/drivers/gemini.lua sets completion_tokens = usageMetadata.candidatesTokenCount (WITHOUT
thoughtsTokenCount, which Gemini bills as output)."""

from __future__ import annotations

from collectors import DIALECTS

kong = DIALECTS["kong"]


def _entry(payload, provider, model):
    entry = payload("kong_openai")
    meta = entry["ai"]["proxy"]["meta"]
    meta.update(provider_name=provider, request_model=model, response_model=model)
    return entry


def test_kong_anthropic_usage_is_marked_as_missing_cache_tokens(payload):
    [event] = kong.parse(_entry(payload, "anthropic", "claude-sonnet-4-5-20250929"))
    assert event.usage.input_tokens == 13
    assert event.usage_assumption == "kong-anthropic-input-excludes-cache-tokens"


def test_kong_gemini_thinking_models_are_marked_as_missing_thoughts(payload):
    [thinking] = kong.parse(_entry(payload, "gemini", "gemini-2.5-flash"))
    assert thinking.usage_assumption == "kong-gemini-output-excludes-thinking-tokens"
    [older] = kong.parse(_entry(payload, "gemini", "gemini-2.0-flash"))
    assert older.usage_assumption is None


def test_kong_openai_is_complete(payload):
    [event] = kong.parse(payload("kong_openai"))
    assert event.usage_assumption is None
