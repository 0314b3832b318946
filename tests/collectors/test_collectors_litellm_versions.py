"""LiteLLM + Anthropic cache writes across versions: 1.72.x adds only cache READS to prompt_tokens, 1.110.x adds
reads and writes. The payload's own response_cost and model-map prices tell the versions apart; a payload they
cannot settle is metered with the current rule and marked (usage_assumption), never silently."""

from __future__ import annotations

from collectors import DIALECTS
from collectors.dialects.litellm import ASSUMED_CACHE_WRITES_IN_PROMPT

litellm = DIALECTS["litellm"]
PRICES = {"input": 3e-06, "read": 3e-07, "write": 3.75e-06, "output": 1.5e-05}  # the payload's model map


def _parts(usage):
    return (usage.input_tokens, usage.cached_input_tokens, usage.cache_write_tokens, usage.output_tokens)


def _set_usage(payload, prompt, read, write, output, cost):
    usage = payload["response"]["usage"]
    usage.update(prompt_tokens=prompt, completion_tokens=output, total_tokens=prompt + output,
                 cache_read_input_tokens=read, cache_creation_input_tokens=write,
                 prompt_tokens_details={"audio_tokens": None, "cached_tokens": read})
    payload.update(prompt_tokens=prompt, completion_tokens=output, total_tokens=prompt + output, response_cost=cost)
    payload["hidden_params"]["response_cost"] = cost


def test_real_1_72_3_payload_cache_write_outside_prompt_tokens(sourced):
    payload, provenance = sourced("litellm_1_72_3_anthropic_cache_write")
    assert provenance["repository"] == "BerriAI/litellm"
    [event] = litellm.parse(payload)
    assert _parts(event.usage) == (1167, 0, 1163, 235)
    assert event.usage_assumption is None  # only one reading is consistent


def test_1_72_larger_numbers_told_apart_by_response_cost(sourced):
    payload, _ = sourced("litellm_1_72_3_anthropic_cache_write")
    cost = 5000 * PRICES["input"] + 1163 * PRICES["write"] + 235 * PRICES["output"]  # 1.72: writes on top
    _set_usage(payload, 5000, 0, 1163, 235, cost)
    [event] = litellm.parse(payload)
    assert _parts(event.usage) == (6163, 0, 1163, 235)
    assert event.usage_assumption is None


def test_1_110_payload_cache_reads_and_writes_inside_prompt_tokens(sourced):
    payload, _ = sourced("litellm_1_72_3_anthropic_cache_write")
    cost = 12 * PRICES["input"] + 2048 * PRICES["read"] + 1163 * PRICES["write"] + 235 * PRICES["output"]
    _set_usage(payload, 12 + 2048 + 1163, 2048, 1163, 235, cost)
    [event] = litellm.parse(payload)
    assert _parts(event.usage) == (3223, 2048, 1163, 235)
    assert event.usage_assumption is None


def test_ambiguous_payload_is_metered_with_the_current_rule_and_marked(sourced):
    payload, _ = sourced("litellm_1_72_3_anthropic_cache_write")
    _set_usage(payload, 5000, 0, 1163, 235, 0.0)  # no cost to compare (e.g. a model LiteLLM could not price)
    del payload["model_map_information"]
    [event] = litellm.parse(payload)
    assert _parts(event.usage) == (5000, 0, 1163, 235)
    assert event.usage_assumption == ASSUMED_CACHE_WRITES_IN_PROMPT


def test_no_cache_writes_is_never_ambiguous(payload):
    [event] = litellm.parse(payload("litellm_success"))
    assert event.usage_assumption is None
