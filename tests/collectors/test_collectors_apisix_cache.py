"""APISIX llm_summary with the cache and reasoning fields (ai-proxy since 2026-06, apache/apisix df0a284).

APISIX fills llm_summary from the CLIENT protocol's usage: for Anthropic Messages `prompt_tokens` is Anthropic's
`input_tokens` (cache reads and writes EXCLUDED); for OpenAI Chat it is OpenAI's `prompt_tokens` (cache INCLUDED).
"""

from __future__ import annotations

from collectors import DIALECTS, AttributionMapping

apisix = DIALECTS["apisix"]


def _parts(usage):
    return (usage.input_tokens, usage.cached_input_tokens, usage.cache_write_tokens, usage.output_tokens,
            usage.reasoning_tokens)


def test_anthropic_summary_adds_cache_tokens_to_prompt_tokens(sourced):
    entry, provenance = sourced("apisix_anthropic_cache_summary")
    assert provenance["repository"] == "apache/apisix"
    [event] = apisix.parse(entry)
    assert event.provider == "anthropic"
    assert _parts(event.usage) == (350, 200, 100, 30, 0)
    assert event.usage_assumption is None


def test_anthropic_summary_cache_reads_below_prompt_tokens_are_still_added(sourced):
    # Not dead-lettered like the first case, but silently under-priced before: 3000 uncached + 200 cache reads.
    entry, _ = sourced("apisix_anthropic_cache_summary")
    entry["llm_summary"].update(prompt_tokens=3000, cache_read_input_tokens=200, cache_creation_input_tokens=0,
                                total_tokens=3030)
    entry["request"]["uri"] = "/anything"  # a custom route path: the provider alone decides
    [event] = apisix.parse(entry)
    assert _parts(event.usage) == (3200, 200, 0, 30, 0)


def test_anthropic_messages_client_protocol_on_another_provider_is_exclusive(sourced):
    entry, _ = sourced("apisix_anthropic_cache_summary")
    entry["llm_summary"].update(prompt_tokens=3000, cache_read_input_tokens=200, cache_creation_input_tokens=0)
    [event] = apisix.parse(entry, AttributionMapping.from_dict({"provider": "openrouter"}))
    assert event.provider == "openrouter"
    assert _parts(event.usage)[:2] == (3200, 200)  # client called /v1/messages: Anthropic-shaped usage


def test_openai_summary_prompt_tokens_already_include_cache_and_reasoning_is_read(sourced):
    entry, provenance = sourced("apisix_openai_cache_reasoning_summary")
    assert provenance["path"].startswith("t/fixtures/openai/")
    [event] = apisix.parse(entry)
    assert event.provider == "openai"
    assert _parts(event.usage) == (30, 10, 5, 15, 7)


def test_string_values_and_older_entries_without_cache_fields(sourced, payload):
    entry, _ = sourced("apisix_openai_cache_reasoning_summary")
    entry["llm_summary"].update({k: str(v) for k, v in entry["llm_summary"].items() if isinstance(v, int)})
    [event] = apisix.parse(entry)
    assert _parts(event.usage) == (30, 10, 5, 15, 7)
    [older] = apisix.parse(payload("apisix_entry"))  # before the fields existed
    assert _parts(older.usage) == (23, 0, 0, 8, 0)
