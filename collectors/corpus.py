"""A randomised corpus of gateway records (valid and hostile) for the collectors' equivalence check.

Records are Kafka message values as the sources write them: Kong kafka-log entries (one, or arrays of up to 50),
OTel TracesData (OTLP/JSON, or OTLP/protobuf when the mutated trace is still expressible in protobuf), APISIX
kafka-logger entries (one, or arrays), LiteLLM StandardLoggingPayloads (one per message) and canonical events (one,
or arrays). Valid records come from the bench's generators (`collectors.bench`) plus the variants each dialect
reads specially (Kong streams with zero output, semantic cache hits, extra plugin blocks, the abbreviated and the
older `ai-proxy` shapes, Anthropic/Gemini gaps, logged payloads; OTel OpenInference, wrapper spans, base64 ids,
error status, string ints, OpenRouter costs; APISIX cache detail, lost stream counts, request-id headers; LiteLLM
cache writes of both versions, OpenRouter costs, cache hits, tags, other time forms; canonical events with every
optional field). Hostile records come from random mutations at random depths: keys deleted, values replaced by null,
wrong types, negative, fractional, huge or far-dated numbers, empty and padded strings, unknown keys; and a few
undecodable records (not JSON, truncated, empty, tombstones). Deterministic for a seed.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any, Iterator

import orjson

from collectors import bench

DIALECTS = ("kong", "otel", "canonical", "apisix", "litellm")
_HOSTILE_VALUES: list[Any] = [None, "", "  ", " 42 ", "x", "-1", "1e3", "12.0", 0, -1, -0.5, 1.5, 10**13, 2**70,
                              True, False, [], {}, [1, 2], {"a": 1}, "9" * 40, "ünïcødé", "a\"b\\c\n",
                              1e300, "NaN", "2025-13-45T99:00:00Z", "1730419200000", 1730419200, 32503680000000]
# A source's attribution mapping of every selector kind, per dialect (the equivalence runs each corpus with the
# dialect's defaults and with this).
MAPPINGS: dict[str, dict[str, Any]] = {
    "kong": {"team": ["header:X-Tokenmeter-Team", "field:consumer_groups.0.name", "field:service.name"],
             "org": "const:acme", "project": None, "user": ["field:consumer", "field:consumer.username"],
             "feature": ["header:x-feature", "field:request.headers.x-feature"],
             "tags": {"env": "header:x-env", "route": "field:route.id", "ip": "client_ip", "first": "field:ai.-1"},
             "provider": "openai"},
    "otel": {"team": ["span:tokenmeter.team", "resource:service.name"], "org": ["const:acme"],
             "user": ["attr:user.id", "field:name"], "tags": {"model": "attr:gen_ai.request.model",
                                                             "span": "field:spanId", "kind": "field:kind"},
             "inherit_defaults": False},
    "canonical": {"org": "const:acme", "team": "field:attribution.user", "tags": {"src": "field:source"}},
    "apisix": {"team": ["header:x-team", "field:consumer.group_id"], "org": "const:acme",
               "tags": {"route": "field:route_id", "ip": "client_ip", "first": "field:llm_summary.model"},
               "provider": "openai"},
    "litellm": {"team": ["field:metadata.user_api_key_team_id", "header:x-team"],
                "user": "field:metadata.user_api_key_user_id", "inherit_defaults": False,
                "tags": {"model": "field:model", "key": "field:metadata.user_api_key_hash", "first": "field:messages.0.role"}},
}
_NEW_KEYS = ["extra", "gen_ai.usage.cost", "cache", "prompt_tokens", "x-tokenmeter-team", "tool_requests"]


def _dumps(value: Any) -> bytes:
    """JSON text as a gateway writes it; integers beyond 64 bits too (orjson cannot write those, nor read them)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every (container path) in a JSON value, so a mutation can hit any depth."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            if isinstance(child, (dict, list)):
                yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            if isinstance(child, (dict, list)):
                yield from _paths(child, (*prefix, index))


def _at(value: Any, path: tuple) -> Any:
    for step in path:
        value = value[step]
    return value


def mutate(rng: random.Random, value: Any, times: int = 1) -> Any:
    """A copy of `value` with `times` random mutations somewhere inside."""
    value = copy.deepcopy(value)
    for _ in range(times):
        containers = list(_paths(value))
        target = _at(value, rng.choice(containers))
        if isinstance(target, dict):
            keys = list(target)
            roll = rng.random()
            if not keys or roll < 0.1:
                target[rng.choice(_NEW_KEYS)] = copy.deepcopy(rng.choice(_HOSTILE_VALUES))
            elif roll < 0.3:
                del target[rng.choice(keys)]
            else:
                target[rng.choice(keys)] = copy.deepcopy(rng.choice(_HOSTILE_VALUES))
        elif isinstance(target, list):
            if target and rng.random() < 0.5:
                target[rng.randrange(len(target))] = copy.deepcopy(rng.choice(_HOSTILE_VALUES))
            else:
                target.append(copy.deepcopy(rng.choice(_HOSTILE_VALUES)))
    return value


# --- Kong -----------------------------------------------------------------------------------------------------

def _kong_variant(rng: random.Random, entry: dict[str, Any]) -> dict[str, Any]:
    proxy = entry["ai"]["proxy"]
    roll = rng.randrange(12)
    if roll == 0:  # Kong/kong#14535: a stream logged with zero output, with and without payloads
        proxy["meta"]["request_mode"] = "stream"
        proxy["usage"]["completion_tokens"] = 0
        if rng.random() < 0.5:
            proxy["payload"] = {"request": orjson.dumps({"messages": [{"role": "user", "content": "Hi there"}]}).decode(),
                                "response": {"choices": [{"message": {"content": "Hello!"}}]}}
    elif roll == 1:
        proxy["cache"] = {"cache_status": rng.choice(["Hit", "Miss", "hit", ""])}
    elif roll == 2:
        entry["ai"]["ai-request-transformer"] = {"meta": dict(proxy["meta"]), "usage": dict(proxy["usage"])}
    elif roll == 3:
        entry["ai"] = {"meta": proxy["meta"], "usage": proxy["usage"]}  # the abbreviated docs shape
    elif roll == 4:
        entry["ai"] = {"ai-proxy": proxy}
        proxy["usage"]["prompt_token"] = proxy["usage"].pop("prompt_tokens")
    elif roll == 5:
        proxy["meta"]["provider_name"] = rng.choice(["anthropic", "gemini", "vertex_ai", "Azure", "bedrock"])
        proxy["meta"]["response_model"] = rng.choice(["claude-sonnet-4-5", "gemini-2.5-pro", "gemini-1.5-flash"])
    elif roll == 6:
        entry["request"]["headers"] = {"X-Tokenmeter-Team": ["team-a", "team-b"], "X-Feature": "Search",
                                       "X-Org": rng.choice(["acme", ""])}
    elif roll == 7:
        del entry["request"]["id"]
        if rng.random() < 0.5:
            entry["response"]["headers"].pop("x-kong-request-id")
    elif roll == 8:
        entry["upstream_status"] = rng.choice([500, "502", "abc", None, 404])
    elif roll == 9:
        proxy["usage"]["prompt_tokens_details"] = {"cached_tokens": rng.randint(0, 50)}
        proxy["usage"]["completion_tokens_details"] = {"reasoning_tokens": rng.randint(0, 5)}
    elif roll == 10:
        entry.pop("ai")  # a non-AI route sharing the log: no event
    return entry


def kong_records(rng: random.Random, n: int) -> list[bytes | None]:
    records: list[bytes | None] = []
    made = 0
    while made < n:
        size = rng.choice([1, 1, 3, 10, 50])
        entries = []
        for i in range(size):
            _, entry = bench._kong_entry(rng, made + i)
            if rng.random() < 0.4:
                entry = _kong_variant(rng, entry)
            if rng.random() < 0.3:
                entry = mutate(rng, entry, rng.choice([1, 1, 2, 3]))
            entries.append(entry)
        made += size
        records.append(_dumps(entries if size > 1 or rng.random() < 0.5 else entries[0]))
    return records


# --- OTel -----------------------------------------------------------------------------------------------------

def _otel_json(rng: random.Random, first: int, count: int) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

    _, data = bench._otel_record(rng, first, count)
    message = TracesData()
    message.ParseFromString(data)
    traces = MessageToDict(message)
    for rs in traces["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                span["traceId"] = bytes.fromhex(_b64hex(span["traceId"])).hex()
                span["spanId"] = bytes.fromhex(_b64hex(span["spanId"])).hex()
    return traces


def _b64hex(value: str) -> str:
    import base64

    return base64.b64decode(value).hex()


def _attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value}}


def _otel_variant(rng: random.Random, span: dict[str, Any]) -> None:
    attrs = span["attributes"]
    roll = rng.randrange(12)
    if roll == 0:
        attrs[:] = [a for a in attrs if not a["key"].startswith("gen_ai.usage")]
        attrs.append(_attr("gen_ai.input.messages", '[{"role":"user","content":"Count me"}]'))
    elif roll == 1:
        attrs.append(_attr("gen_ai.operation.name", rng.choice(["invoke_agent", "execute_tool", "embeddings"])))
    elif roll == 2:  # an OpenInference LLM span (Envoy AI Gateway)
        span["attributes"] = [_attr("openinference.span.kind", rng.choice(["LLM", "CHAIN", "EMBEDDING"])),
                              _attr("llm.model_name", "gpt-4o-mini"), _attr("llm.provider", "openai"),
                              _attr("llm.token_count.prompt", rng.randint(1, 900)),
                              _attr("llm.token_count.completion", rng.randint(1, 90))]
    elif roll == 3:
        span["status"] = {"code": rng.choice([2, "STATUS_CODE_ERROR", 1, "ERROR"])}
    elif roll == 4:
        attrs.append(_attr("gen_ai.usage.cache_read.input_tokens", rng.randint(0, 20)))
        attrs.append(_attr("gen_ai.usage.reasoning.output_tokens", rng.randint(0, 5)))
    elif roll == 5:
        import base64

        span["traceId"] = base64.b64encode(bytes.fromhex(span["traceId"])).decode()
    elif roll == 6:
        span.pop(rng.choice(["traceId", "spanId", "endTimeUnixNano"]))
    elif roll == 7:
        attrs[:] = [a for a in attrs if a["key"] != "gen_ai.provider.name"]
        attrs.append(_attr("gen_ai.system", rng.choice(["openrouter", "gcp.gemini", "aws.bedrock", "az.ai.openai"])))
        attrs.append(_attr("gen_ai.usage.cost", rng.choice([0.0012, "0.5", -1.0, 3])))
    elif roll == 8:
        attrs.append(_attr("gen_ai.openai.response.service_tier", rng.choice(["flex", "priority", ""])))
    elif roll == 9:
        attrs.append({"key": "gen_ai.usage.input_tokens", "value": {"intValue": rng.choice(["12", "-4", "1.5"])}})
    elif roll == 10:
        span["attributes"] = [_attr("http.method", "GET")]  # not a GenAI span: skipped
    elif roll == 11:  # array attributes: the finish reasons of every GenAI instrumentation's chat span, and others
        attrs.append({"key": "gen_ai.response.finish_reasons", "value": {"arrayValue": {"values": [
            {"stringValue": reason} for reason in rng.choice([["stop"], ["length", "stop"], []])]}}})
        if rng.random() < 0.3:
            attrs.append({"key": rng.choice(["tokenmeter.project", "gen_ai.response.model"]), "value": {
                "arrayValue": {"values": rng.choice([[{"intValue": "-3"}, {"boolValue": True}, {"doubleValue": 0.5}],
                                                     [{"stringValue": "a"}, {}], [{"arrayValue": {}}]])}}})


def otel_records(rng: random.Random, n: int) -> list[bytes | None]:
    from google.protobuf.json_format import ParseDict
    from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

    records: list[bytes | None] = []
    made = 0
    while made < n:
        count = rng.choice([1, 5, 20])
        traces = _otel_json(rng, made, count)
        made += count
        for span in traces["resourceSpans"][0]["scopeSpans"][0]["spans"]:
            if rng.random() < 0.4:
                _otel_variant(rng, span)
        if rng.random() < 0.25:
            traces = mutate(rng, traces, rng.choice([1, 2, 3]))
        if rng.random() < 0.5:
            try:  # protobuf ids are bytes: ParseDict reads them as base64
                proto = copy.deepcopy(traces)
                for rs in proto.get("resourceSpans") or []:
                    for ss in rs.get("scopeSpans") or []:
                        for span in ss.get("spans") or []:
                            for key in ("traceId", "spanId"):
                                if isinstance(span, dict) and isinstance(span.get(key), str):
                                    import base64

                                    span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
                records.append(ParseDict(proto, TracesData()).SerializeToString())
                continue
            except Exception:  # noqa: BLE001 - a mutation protobuf cannot carry: sent as OTLP/JSON
                pass
        records.append(_dumps(traces))
    return records


# --- APISIX -----------------------------------------------------------------------------------------------------

def _apisix_variant(rng: random.Random, entry: dict[str, Any]) -> dict[str, Any]:
    summary = entry["llm_summary"]
    roll = rng.randrange(12)
    if roll == 0:  # after apache/apisix df0a284: cache and reasoning detail, Anthropic or OpenAI shaped
        summary.update(cache_read_input_tokens=rng.randint(0, 300), cache_creation_input_tokens=rng.randint(0, 100),
                       reasoning_tokens=rng.randint(0, 5), provider=rng.choice(["anthropic", "openai", None]))
        entry["request"]["uri"] = rng.choice(["/v1/messages", "/v1/chat/completions", "/anthropic/v1/messages/"])
    elif roll == 1:  # a stream whose count was lost, with the logged text
        summary["completion_tokens"] = 0
        entry["llm_response_text"] = {"content": rng.choice(["Hello!", ""])}
        entry["llm_request"] = {"messages": [{"role": "user", "content": "Hi"}]}
    elif roll == 2:
        entry["request"]["headers"] = {"X-Request-Id": rng.choice(["req-1 ", ["req-2"], ""]), "X-Team": "core"}
    elif roll == 3:
        entry["response"]["status"] = rng.choice([500, "502", 404, None, "x"])
    elif roll == 4:
        entry.pop("request_id")
    elif roll == 5:
        summary["provider"] = rng.choice(["Azure", "  ", "deepseek", "gcp.gemini"])
        summary["model"] = rng.choice(["", "  ", None, "mistral-large"])
    elif roll == 6:
        entry["start_time"] = rng.choice([1_742_531_280, "1742531280142", "2025-03-21T04:28:00Z", 1_742_531_280.5])
    elif roll == 7:
        entry.update(latency=rng.choice([-1, "900", 1e16, 0.00001, 0]))
        summary["duration"] = rng.choice([None, 0, 12.5, "30"])
    elif roll == 8:
        entry.pop("llm_summary")  # a non-AI route sharing the logger: no event
    elif roll == 9:
        summary["prompt_tokens"] = rng.choice(["120", 12.0, True, 10**12 + 1])
    return entry


def apisix_records(rng: random.Random, n: int) -> list[bytes | None]:
    records: list[bytes | None] = []
    made = 0
    while made < n:
        size = rng.choice([1, 1, 1, 5, 20])  # kafka-logger batch_max_size 1 (one entry) or an array
        entries = []
        for i in range(size):
            _, entry = bench._apisix_entry(rng, made + i)
            if rng.random() < 0.4:
                entry = _apisix_variant(rng, entry)
            if rng.random() < 0.3:
                entry = mutate(rng, entry, rng.choice([1, 1, 2, 3]))
            entries.append(entry)
        made += size
        records.append(_dumps(entries if size > 1 else entries[0]))
    return records


# --- LiteLLM ----------------------------------------------------------------------------------------------------

def _litellm_variant(rng: random.Random, payload: dict[str, Any]) -> dict[str, Any]:
    usage = payload["response"]["usage"]
    roll = rng.randrange(14)
    if roll == 0:
        payload["cache_hit"] = True
    elif roll == 1:
        payload["status"] = rng.choice(["failure", "error", None])
    elif roll == 2:
        payload.update(request_tags=rng.choice([["feature:search", "beta", " env=prod "], "tag", [5, ""]]),
                       end_user=rng.choice(["alice", " ", None]))
    elif roll == 3:  # Anthropic cache writes: 1.72.x or 1.110.x, settled by the logged cost or not
        usage.update(prompt_tokens=usage["prompt_tokens"] + 400, cache_creation_input_tokens=400,
                     cache_read_input_tokens=rng.choice([0, 50]))
        payload.update(custom_llm_provider="anthropic", call_type=rng.choice(["acompletion", "anthropic_messages"]))
        if rng.random() < 0.5:
            payload["model_map_information"] = {"model_map_value": {
                "input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
                "cache_creation_input_token_cost": 3.75e-06, "cache_read_input_token_cost": 3e-07}}
    elif roll == 4:  # OpenRouter's own cost, bring-your-own-key or not
        payload["custom_llm_provider"] = "openrouter"
        usage.update(cost=rng.choice([0.0012, "0.5", -1]), is_byok=rng.choice([True, False]),
                     cost_details={"upstream_inference_cost": 0.002})
    elif roll == 5:
        payload.update(startTime=rng.choice([1_737_710_446.847371, "2025-01-24T09:20:46Z", " 2025-01-24 09:20:46.847371",
                                             "2025-01-24 09:20:46"]))
    elif roll == 6:
        payload.pop("id")
        payload["litellm_call_id"] = rng.choice(["call-1", 42, " "])
    elif roll == 7:
        payload["response"].pop("usage")  # only the top-level counts, or a usage_object
        if rng.random() < 0.5:
            payload["metadata"]["usage_object"] = {"prompt_tokens": 12, "completion_tokens": 3}
    elif roll == 8:
        payload["response"]["model"] = rng.choice(["", None, 42, " gpt-4o "])
    elif roll == 9:
        payload["metadata"]["requester_custom_headers"] = {"X-Team": "core", "x-tokenmeter-feature": "chat"}
    elif roll == 10:
        usage["completion_tokens_details"] = {"reasoning_tokens": rng.randint(0, 5)}
        usage["cost"] = 0.0001  # LiteLLM's own estimate in streamed usage: not read
    elif roll == 11:
        payload.update(endTime=rng.choice([None, "2025-01-24 09:19:00.000000", 5]), stream=True,
                       completionStartTime=rng.choice(["2025-01-24 09:20:46.847371", None, "x"]))
    return payload


def litellm_records(rng: random.Random, n: int) -> list[bytes | None]:
    records: list[bytes | None] = []
    for i in range(n):  # one StandardLoggingPayload per message
        _, payload = bench._litellm_entry(rng, i)
        if rng.random() < 0.4:
            payload = _litellm_variant(rng, payload)
        if rng.random() < 0.3:
            payload = mutate(rng, payload, rng.choice([1, 1, 2, 3]))
        records.append(_dumps(payload))
    return records


# --- canonical --------------------------------------------------------------------------------------------------

def _canonical_event(rng: random.Random, i: int) -> dict[str, Any]:
    provider, model, _ = bench.MODELS[i % len(bench.MODELS)]
    event: dict[str, Any] = {
        "event_id": f"evt-{rng.getrandbits(64):016x}", "ts": f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:"
        f"{rng.randrange(60):02d}{rng.choice(['', '.5', '.123456', 'Z'])}{rng.choice(['Z', '+02:00', '-00:00'])}",
        "source": rng.choice(["sdk", "canonical", "internal-proxy"]), "provider": provider, "model": model,
        "attribution": {"team": f"team-{i % 12}", "user": f"user-{i % 97}",
                        "tags": {"env": rng.choice(["prod", "dev"])}},
        "usage": {"input_tokens": rng.randint(10, 5000), "output_tokens": rng.randint(1, 900)},
    }
    if event["ts"].endswith("ZZ") or "Z+" in event["ts"] or "Z-" in event["ts"]:
        event["ts"] = event["ts"].replace("Z", "", 1)
    roll = rng.randrange(8)
    if roll == 0:
        event["usage"]["cached_input_tokens"] = rng.randint(0, event["usage"]["input_tokens"])
        event["usage"]["tool_requests"] = {"web_search": rng.randint(0, 3)}
    elif roll == 1:
        event.update(latency_ms=rng.choice([12, 12.5, 0.0001]), ttft_ms=3.0, batch=rng.random() < 0.5,
                     service_tier=rng.choice(["flex", "priority"]), status="error", operation="embeddings")
    elif roll == 2:
        event["correlation"] = {"response_id": f"chatcmpl-{i}", "trace_id": "a" * 32}
    elif roll == 3:
        event["reported_cost_usd"] = rng.choice(["0.0012", "1", 0.5])
    elif roll == 4:
        event.pop("usage")
        event["content"] = {"prompt": "Hello", "completion": "Hi"}
    elif roll == 5:
        event["usage_assumption"] = "litellm-cache-writes-assumed-in-prompt-tokens"
    return event


def canonical_records(rng: random.Random, n: int) -> list[bytes | None]:
    records: list[bytes | None] = []
    made = 0
    while made < n:
        size = rng.choice([1, 2, 10, 100])
        events = [_canonical_event(rng, made + i) for i in range(size)]
        events = [mutate(rng, e, rng.choice([1, 2])) if rng.random() < 0.3 else e for e in events]
        made += size
        records.append(_dumps(events if size > 1 or rng.random() < 0.5 else events[0]))
    return records


_BROKEN: list[bytes | None] = [None, b"", b"   ", b"{", b"[1, 2", b"not json", b"\xff\xfe\x00", b"[]", b"{}", b"null",
                               b"42", b'"text"', b"true", b"-1.5", b"data: {}\n\n",
                               b"\x0a\x02\x08\x01"]


def records(dialect: str, n: int, seed: int | str = 0) -> list[bytes | None]:
    """About n events' worth of `dialect` records, some of them hostile; deterministic for a seed."""
    rng = random.Random(f"{seed}:{dialect}")
    make = {"kong": kong_records, "otel": otel_records, "canonical": canonical_records, "apisix": apisix_records,
            "litellm": litellm_records}[dialect]
    out = make(rng, n)
    for broken in [*_BROKEN, *(rng.choice(_BROKEN) for _ in range(len(out) // 50))]:  # each kind at least once
        out.insert(rng.randrange(len(out) + 1), broken)
    return out
