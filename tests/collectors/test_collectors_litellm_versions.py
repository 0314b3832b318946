"""LiteLLM + Anthropic cache writes across versions: 1.72.x adds only cache READS to prompt_tokens, 1.110.x adds
reads and writes. The payload's own response_cost and model-map prices tell the versions apart; a payload they
cannot settle is metered with the current rule and marked (usage_assumption), never silently.

The payloads are real: the StandardLoggingPayload litellm 1.72.3 and 1.110.2 (PyPI) hand their callbacks for one
recorded Anthropic response (pydantic/pydantic-ai tests/models/cassettes/test_anthropic/
test_anthropic_cache_real_api.yaml @ 4fda389, replayed from a loopback server: tests/conformance/tools/
gen_litellm.py). Tests that need other numbers (the issue's prompt_tokens 4 / cache writes 1163, and LiteLLM
issue #11364's dump) set them on that real shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collectors import DIALECTS
from collectors.dialects.litellm import ASSUMED_CACHE_WRITES_IN_PROMPT

litellm = DIALECTS["litellm"]
CORPUS = Path(__file__).parents[1] / "conformance" / "payloads" / "litellm"
# claude-sonnet-4-5 in LiteLLM's model map (1.110.2 logs these in model_map_information; 1.72.3 knew no price for it)
PRICES = {"input": 3e-06, "read": 3e-07, "write": 3.75e-06, "output": 1.5e-05}


def real(version: str = "1_72_3") -> dict:
    return json.loads((CORPUS / f"v{version}_anthropic_cache_write.json").read_text())


def _parts(usage):
    return (usage.input_tokens, usage.cached_input_tokens, usage.cache_write_tokens, usage.output_tokens)


def _set_usage(payload, prompt, read, write, output, cost):
    """Other numbers on the real 1.72.3 shape, with the model-map prices LiteLLM would log beside them."""
    usage = payload["response"]["usage"]
    usage.update(prompt_tokens=prompt, completion_tokens=output, total_tokens=prompt + output,
                 cache_read_input_tokens=read, cache_creation_input_tokens=write)
    usage["prompt_tokens_details"]["cached_tokens"] = read
    payload.update(prompt_tokens=prompt, completion_tokens=output, total_tokens=prompt + output, response_cost=cost)
    payload["model_map_information"]["model_map_value"] = {
        "input_cost_per_token": PRICES["input"], "cache_read_input_token_cost": PRICES["read"],
        "cache_creation_input_token_cost": PRICES["write"], "output_cost_per_token": PRICES["output"]}


def test_real_1_72_3_payload_settled_without_an_assumption():
    payload = real("1_72_3")  # prompt_tokens 1114 = 3 uncached + 1111 reads; 418 writes beside it; no cost logged
    assert (payload["prompt_tokens"], payload["response_cost"], payload["call_type"]) == (1114, 0.0, "completion")
    [event] = litellm.parse(payload)
    assert _parts(event.usage) == (1532, 1111, 418, 33)
    # Writes inside 1114 is impossible (3 - 418 < 0); Anthropic's own convention (reads outside) is never what
    # LiteLLM's chat completion path logs, so nothing is left to assume.
    assert event.usage_assumption is None


def test_real_1_110_2_payload_reads_and_writes_inside_prompt_tokens():
    [event] = litellm.parse(real("1_110_2"))
    assert _parts(event.usage) == (1532, 1111, 418, 33) and event.usage_assumption is None


def test_issue_numbers_cache_write_outside_prompt_tokens():
    payload = real()  # issue 12: a 1.72.3 payload with prompt_tokens 4 and 1163 cache writes was dead-lettered
    _set_usage(payload, 4, 0, 1163, 235, 4 * PRICES["input"] + 1163 * PRICES["write"] + 235 * PRICES["output"])
    [event] = litellm.parse(payload)
    assert _parts(event.usage) == (1167, 0, 1163, 235)
    assert event.usage_assumption is None  # only one reading is consistent


def test_litellm_issue_11364_dump_reads_inside_writes_outside():
    """BerriAI/litellm#11364 (2025-06-03, the 1.72 weeks): a real spend-log usage with prompt_tokens 30946 (6 +
    30940 reads), 460 writes beside it, 102 output, and LiteLLM's cost $0.096093, which charged all 30946 at the
    input rate (the bug reported there): no reading matches that cost, but the chat call type settles it."""
    payload = real()
    _set_usage(payload, 30946, 30940, 460, 102, 0.096093)
    [event] = litellm.parse(payload)
    assert _parts(event.usage) == (31406, 30940, 460, 102)
    assert event.usage_assumption is None


def test_1_72_larger_numbers_told_apart_by_response_cost():
    payload = real()
    cost = 5000 * PRICES["input"] + 1163 * PRICES["write"] + 235 * PRICES["output"]  # 1.72: writes on top
    _set_usage(payload, 5000, 0, 1163, 235, cost)
    [event] = litellm.parse(payload)
    assert _parts(event.usage) == (6163, 0, 1163, 235)
    assert event.usage_assumption is None


def test_1_110_payload_numbers_told_apart_by_response_cost():
    payload = real()
    cost = 12 * PRICES["input"] + 2048 * PRICES["read"] + 1163 * PRICES["write"] + 235 * PRICES["output"]
    _set_usage(payload, 12 + 2048 + 1163, 2048, 1163, 235, cost)
    [event] = litellm.parse(payload)
    assert _parts(event.usage) == (3223, 2048, 1163, 235)
    assert event.usage_assumption is None


def test_ambiguous_payload_is_metered_with_the_current_rule_and_marked():
    payload = real()
    _set_usage(payload, 5000, 0, 1163, 235, 0.0)  # no cost to compare (as 1.72.3 logs for a model it cannot price)
    [event] = litellm.parse(payload)
    assert _parts(event.usage) == (5000, 0, 1163, 235)
    assert event.usage_assumption == ASSUMED_CACHE_WRITES_IN_PROMPT


def test_anthropic_messages_logging_may_exclude_reads():
    """/v1/messages pass-through logging (call_type anthropic_messages) may log Anthropic's own convention (reads
    and writes outside prompt_tokens, litellm PR #23342): that reading stays possible there. prompt_tokens 2100 with
    2048 reads and 1163 writes is settled for a chat completion (52 uncached + reads inside) but not for it."""
    payload = real()
    _set_usage(payload, 2100, 2048, 1163, 235, 0.0)
    [chat] = litellm.parse(payload)
    assert _parts(chat.usage) == (3263, 2048, 1163, 235) and chat.usage_assumption is None
    payload["call_type"] = "anthropic_messages"
    [messages] = litellm.parse(payload)
    assert messages.usage_assumption == ASSUMED_CACHE_WRITES_IN_PROMPT


def test_no_cache_writes_is_never_ambiguous(payload):
    [event] = litellm.parse(payload("litellm_success"))
    assert event.usage_assumption is None


def test_cache_reads_beyond_prompt_tokens_are_a_dead_letter_not_a_crash():
    """No LiteLLM reading fits a chat payload whose cache reads exceed prompt_tokens (found by the equivalence
    corpus: a mutated count of 10^13). It crashed the converter with an IndexError, stopping the bridge; it must
    be an error naming the fields, which the bridge dead-letters like any other."""
    from aiokafka.structs import TopicPartition

    from collectors import DialectError
    from collectors.equivalence import Message
    from collectors.kafka_bridge import KafkaBridge
    from collectors.sink import KafkaSink

    payload = real("1_72_3")  # call_type "completion": reads are always inside prompt_tokens
    _set_usage(payload, prompt=100, read=500, write=10, output=5, cost=0.0)
    with pytest.raises(DialectError, match="cached_input_tokens .* exceed input_tokens") as caught:
        litellm.parse(payload)
    assert caught.value.path == "response.usage"
    bridge = KafkaBridge("127.0.0.1:9", "source", "litellm", "group", KafkaSink("127.0.0.1:9", "collect-kafka"))
    events, letters = bridge._convert({TopicPartition("source", 0): [Message(0, json.dumps(payload).encode())]})
    assert events == [] and "exceed input_tokens" in letters[0]["reason"]


@pytest.mark.parametrize("call_type", [["acompletion"], {"type": "completion"}])
def test_a_call_type_that_is_not_text_is_read_as_absent_not_a_crash(call_type):
    """A cache-write payload whose `call_type` is a list or an object (found by the declared-shape corpus,
    tests/collectors/test_declared_shapes.py): settling the cache convention tested it for membership in a set and
    raised TypeError ("unhashable type"), which stopped the Kafka bridge. It is read as an absent call type (the
    operation is already the default for it): the same event as without one."""
    payload = real("1_110_2")
    without = dict(payload)
    del without["call_type"]
    [expected] = litellm.parse(without)
    [event] = litellm.parse({**payload, "call_type": call_type})
    assert event.model_dump_json() == expected.model_dump_json()
    [encoded] = litellm.parse(json.dumps({**payload, "call_type": call_type}).encode(), encoded=True)
    assert encoded.model_dump_json() == expected.model_dump_json()
