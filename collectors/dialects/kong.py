"""Kong AI Gateway log entries (http-log, file-log, kafka-log; a kafka-log batch is a JSON array).

Reads `ai.proxy` (3.8+) or the older `ai["ai-proxy"]` block, or `meta`+`usage` directly under `ai` as some of
Kong's docs print it (only when both are there and no plugin block is beside them; else dead-lettered naming
the missing block); other plugin blocks under `ai` that carry their own
`meta`+`usage` (an LLM called by ai-request-transformer, say) become extra events `<request id>:<plugin>`.
- event_id: request.id (= x-kong-request-id), else a hash of the entry (derive_event_id).
- ts: started_at (epoch ms). model: meta.response_model, else meta.request_model, else tried_targets.
- provider: meta.provider_name (else tried_targets); `gemini` whose answering target is a
  `*aiplatform.googleapis.com` host is vertex_ai (Kong's gemini provider drives both).
  status: error when upstream_status >= 400 (int or text).
- usage: OpenAI-shaped, `prompt_token`/`completion_token` spellings too; latency_ms = meta.llm_latency,
  ttft_ms = usage.time_to_first_token. Kong's own `usage.cost` is ignored (we price).
- Streams: Kong logs the provider's prompt_tokens (from its usage frame) and, as completion_tokens, its own
  estimate of ceil(chars / 4) per frame's delta text, with or without log_payloads (Kong/kong
  kong/llm/plugin/shared-filters/normalize-sse-chunk.lua). completion_tokens=0 on a successful stream means Kong read
  no text from the frames (Kong/kong#14535, #14768), not an empty answer; the payload then lacks the answer too, as a
  rule. Such a count is not trusted for output: with a logged answer the text is counted (usage=None); else the
  logged prompt count is kept with output 0 and the event marked `kong-stream-output-not-logged` (its cost a lower
  bound, reportable by usage_assumption), or, with no prompt count, the logged request is counted, marked the same;
  with nothing at all the entry is dead-lettered saying so. A non-zero streamed count from any provider but
  gemini/vertex_ai (whose driver SETS the provider's count) is that estimate, or in older Kong the estimate plus the
  provider's count: recounted from the payload when it holds request and answer, else kept and marked
  `kong-stream-output-estimated` (left24). Markers that both apply are joined with `+`.
  A successful call with no usage block at all is dead-lettered naming log_statistics.
- Semantic cache hit (cache.cache_status=Hit): no upstream call; usage is zero and tagged cache_status.
- AI RAG Injector (`<block>.rag-inject`, 3.10+ and v2): its query embedding is a call the embeddings provider
  bills (`embeddings_tokens` / `embeddings_provider` / `embeddings_model`); it becomes its own event
  `<request id>:rag-inject` (operation embeddings), also on a cache hit. The semantic cache's own embedding logs
  no token count and cannot be metered.
- An entry without an `ai` block (a non-AI route sharing the log) yields no event.
- Known gaps (Kong/kong 22246ef, 2026-07): for Anthropic Kong logs prompt_tokens = input_tokens, without the
  cache reads and writes (not logged at all); for Gemini completion_tokens = candidatesTokenCount, without the
  thinking tokens Gemini bills as output. What is not logged cannot be metered: such events are metered as
  logged and marked `usage_assumption` (their cost is a lower bound), see `_known_gap`.
Versions covered: Kong Gateway 3.x AI Gateway (`ai.proxy` 3.8+, `ai["ai-proxy"]` and `prompt_token` spellings of
3.6-3.8, abbreviated docs shapes) and the AI Gateway v2 (2.0.x) log format. Cannot carry: Anthropic cache tokens,
Gemini thinking tokens (above), server-side tool fees, a cost we could use (Kong's is its own estimate).
"""

from __future__ import annotations

import re
from typing import Any

from collectors.attribution import NO_ATTRIBUTES, AttributionMapping, RecordView, view_headers
from collectors.coerce import as_dict, as_list, dict_field, dig_steps, epoch_to_datetime, float_field, int_field, \
    str_field, to_datetime, to_str
from collectors.dialects.base import Dialect, derived_event_id, http_status_is_error, make_event, require_object
from collectors.dialects.common import ZERO_USAGE_COUNTED, ZERO_USAGE_UNCOUNTED, completion_from_response, content_or_none, list_or_empty, \
    normalize_operation, prompt_from_request, zero_usage_is_not_a_count
from collectors.encoded import EXACT_EPOCH_MS_LIMIT, EncodedEvent, encoded_event, epoch_millis_text, plain_float, \
    utc_text
from collectors.errors import DialectError, join_path
from collectors.providers import normalize_provider
from collectors.usage import OPENAI_DETAIL_KEYS, build_usage, openai_usage
from tokenmeter.events import MAX_TOKENS, Usage, UsageEvent

NAME = "kong"
PRIMARY_BLOCKS = ("proxy", "ai-proxy", "ai-proxy-advanced")


ABBREVIATED_PARTS = ("meta", "usage")


def _abbreviated_block(ai: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]] | None:
    """Kong's docs print some entries with `meta`/`usage` directly under `ai`, the plugin level left out.
    Read as the proxy block only when that is the one reading: both parts there, no plugin block beside."""
    present = [part for part in ABBREVIATED_PARTS if isinstance(ai.get(part), dict)]
    if not present:
        return None
    plugins = [key for key, block in ai.items() if key not in ABBREVIATED_PARTS and isinstance(block, dict)
               and ("meta" in block or "usage" in block)]
    if plugins:
        raise DialectError(f"ambiguous ai block: ai.{present[0]} directly under ai beside plugin block(s) "
                           f"{', '.join(plugins)}", path)
    missing = [part for part in ABBREVIATED_PARTS if part not in present]
    if missing:
        raise DialectError(f"abbreviated ai block (no plugin level) has no ai.{missing[0]}: cannot tell "
                           f"{'model and provider' if missing[0] == 'meta' else 'token usage'}", path)
    return [("proxy", ai)]


def _blocks(ai: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    abbreviated = _abbreviated_block(ai, path)
    if abbreviated:
        return abbreviated
    ordered = [key for key in PRIMARY_BLOCKS if key in ai] + [key for key in ai if key not in PRIMARY_BLOCKS]
    blocks = []
    for key in ordered:
        block = ai[key]
        if isinstance(block, dict) and ("meta" in block or "usage" in block):
            blocks.append((key, block))
    if not blocks:
        raise DialectError("no AI plugin block with meta/usage (expected ai.proxy or ai[\"ai-proxy\"])", path)
    return blocks


_REQUEST_ID_PATHS = (("request", "id"), ("response", "headers", "x-kong-request-id"),
                     ("request", "headers", "x-kong-request-id"))
_STATUS_PATHS = (("upstream_status",), ("response", "status"))
_REQUEST_HEADERS = ("request", "headers")


def _request_id(entry: dict[str, Any]) -> str | None:
    for candidate in _REQUEST_ID_PATHS:
        value = dig_steps(entry, candidate)
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, (str, int)) and str(value).strip():
            return str(value).strip()
    return None


def _is_error(entry: dict[str, Any]) -> bool:
    for candidate in _STATUS_PATHS:
        verdict = http_status_is_error(dig_steps(entry, candidate))
        if verdict is not None:
            return verdict
    return False


def _model(meta: dict[str, Any], block: dict[str, Any], path: str) -> str:
    for key in ("response_model", "request_model"):
        model = str_field(meta, key, path, f"meta.{key}")
        if model:
            return model
    for target in reversed(as_list(block.get("tried_targets"), join_path(path, "tried_targets"))):
        if isinstance(target, dict) and isinstance(target.get("model"), str) and target["model"].strip():
            return target["model"].strip()
    raise DialectError("missing model (meta.response_model and meta.request_model are both absent)", path)


def _provider(meta: dict[str, Any], block: dict[str, Any], mapping: AttributionMapping, path: str) -> str:
    name = str_field(meta, "provider_name", path, "meta.provider_name")
    if not name:
        targets = [t for t in list_or_empty(block.get("tried_targets")) if isinstance(t, dict) and t.get("provider")]
        name = to_str(targets[-1]["provider"], join_path(path, "tried_targets.provider")) if targets \
            else mapping.provider
    provider = normalize_provider(name)
    if not provider:
        raise DialectError("missing provider (meta.provider_name absent and no provider configured)", path)
    return _upstream_provider(provider, block)


_VERTEX_HOST = re.compile(r"(?:[a-z0-9-]+-)?aiplatform\.googleapis\.com\.?$")


def _upstream_provider(provider: str, block: dict[str, Any]) -> str:
    """Kong's `gemini` provider also drives Vertex AI (options.gemini endpoint / project / location) and logs
    provider_name `gemini` either way; the target that answered (the last of `tried_targets`, 3.10+ and v2) names
    the host. Vertex bills some models above the Gemini API (Gemini 2.0 Flash $0.15 / $0.60 against $0.10 / $0.40),
    so a call to `*aiplatform.googleapis.com` is priced as vertex_ai. Without targets it stays gemini."""
    if provider != "gemini":
        return provider
    targets = block.get("tried_targets")
    if type(targets) is not list or not targets or type(targets[-1]) is not dict:
        return provider
    host = targets[-1].get("host")
    if isinstance(host, str) and _VERTEX_HOST.match(host.strip().lower()):
        return "vertex_ai"
    return provider


_GEMINI_THINKING = re.compile(r"(?:.*/)?gemini-(?:2\.5|[3-9])")


def _known_gap(provider: str, model: str, usage: Usage | None) -> str | None:
    """A marker when Kong's log of this provider leaves billed tokens out (see the module docstring)."""
    if usage is None:
        return None
    if provider == "anthropic" and not (usage.cached_input_tokens or usage.cache_write_tokens):
        return "kong-anthropic-input-excludes-cache-tokens"
    if provider in ("gemini", "vertex_ai") and _GEMINI_THINKING.match(model.lower()) and not usage.reasoning_tokens:
        return "kong-gemini-output-excludes-thinking-tokens"
    return None


def _usage(block: dict[str, Any], meta: dict[str, Any], cache_hit: bool, path: str) -> Usage | None:
    usage_path = join_path(path, "usage")
    raw = as_dict(block.get("usage"), usage_path)
    if cache_hit:
        return Usage()
    return openai_usage(raw, usage_path)


KONG_STREAM_OUTPUT_NOT_LOGGED = "kong-stream-output-not-logged"
KONG_STREAM_OUTPUT_ESTIMATED = "kong-stream-output-estimated"
# Kong's drivers whose stream frames carry the provider's output count and SET it (normalize-sse-chunk.lua): for
# every other provider a streamed completion_tokens is Kong's chars/4 estimate (or, in older Kong, that plus the
# provider's count), see the module docstring.
_STREAM_COUNT_IS_THE_PROVIDERS = frozenset({"gemini", "vertex_ai"})


def _stream_output_estimated(usage: Usage | None, meta: dict[str, Any], cache_hit: bool, provider: str) -> bool:
    """A successful stream's non-zero completion_tokens that is Kong's estimate, not the provider's count."""
    return not cache_hit and usage is not None and usage.output_tokens > 0 \
        and meta.get("request_mode") == "stream" and provider not in _STREAM_COUNT_IS_THE_PROVIDERS


def _markers(*markers: str | None) -> str | None:
    """Every gap that applies, joined: an Anthropic stream lacks cache tokens AND carries Kong's output estimate."""
    return "+".join(m for m in markers if m) or None


def _stream_without_output(usage: Usage | None, meta: dict[str, Any], cache_hit: bool) -> bool:
    """Kong/kong#14535: a stream logged with completion_tokens 0 (Kong read no text from its frames)."""
    return not cache_hit and usage is not None and usage.output_tokens == 0 and meta.get("request_mode") == "stream"


def _metered(usage: Usage | None, payload: dict[str, Any], stream_lost: bool, lost_count: bool,
             stream_estimated: bool = False) -> tuple[Usage | None, Any, str | None]:
    """Usage, content and marker of a block whose logged usage is missing (None), lost (all zeros on a successful
    call), a stream without its output count or a stream whose output count is Kong's estimate, from what its
    payload holds."""
    prompt = prompt_from_request(payload.get("request"))
    answer = completion_from_response(payload.get("response"))
    if stream_estimated:
        if prompt and answer:  # both logged: the worker's tokenizer beats chars/4 (tokens source `estimated`)
            return None, content_or_none(prompt, answer), None
        return usage, None, KONG_STREAM_OUTPUT_ESTIMATED  # the provider's prompt count; output Kong's estimate
    if stream_lost:
        if answer:
            return None, content_or_none(prompt, answer), None  # the text Kong logged: counted
        if usage is not None and usage.input_tokens:
            return usage, None, KONG_STREAM_OUTPUT_NOT_LOGGED  # the provider's prompt count; output unknown
        return None, content_or_none(prompt, None), KONG_STREAM_OUTPUT_NOT_LOGGED if prompt else None
    content = content_or_none(prompt, answer)
    if lost_count:  # the text counted; none: the zeros as logged, marked
        return (None, content, ZERO_USAGE_COUNTED) if content is not None else (usage, None, ZERO_USAGE_UNCOUNTED)
    return usage, content, None


def _operation(meta: dict[str, Any], block: dict[str, Any]) -> str:
    if meta.get("operation_name"):
        return normalize_operation(meta["operation_name"])
    targets = [t for t in list_or_empty(block.get("tried_targets")) if isinstance(t, dict) and t.get("route_type")]
    return normalize_operation(targets[-1]["route_type"]) if targets else "chat"


RAG_INJECT = "rag-inject"


def _rag_embedding(block: dict[str, Any], mapping: AttributionMapping, path: str) -> dict[str, Any] | None:
    """The RAG injector's embedding call as event fields, or None when it logged no embedding tokens."""
    rag_path = join_path(path, RAG_INJECT)
    rag = as_dict(block.get(RAG_INJECT), rag_path)
    tokens = int_field(rag, "embeddings_tokens", rag_path)
    if not tokens:
        return None
    model = str_field(rag, "embeddings_model", rag_path)
    if not model:
        raise DialectError("missing embeddings_model beside embeddings_tokens", rag_path)
    provider = normalize_provider(str_field(rag, "embeddings_provider", rag_path) or mapping.provider)
    if not provider:
        raise DialectError("missing embeddings_provider beside embeddings_tokens", rag_path)
    return {"provider": provider, "model": model, "operation": "embeddings",
            "usage": build_usage(join_path(rag_path, "embeddings_tokens"), input_tokens=tokens, output_tokens=0),
            "latency_ms": float_field(rag, "embeddings_latency", rag_path)}


def parse_entry(entry: Any, mapping: AttributionMapping, path: str) -> list[UsageEvent]:
    entry = require_object(entry, path, "Kong log entry")
    if entry.get("ai") is None:
        return []
    ai = dict_field(entry, "ai", path)
    request_id = _request_id(entry)
    ts = to_datetime(entry.get("started_at"), join_path(path, "started_at"))
    if ts is None:
        raise DialectError("missing started_at", path or None)
    headers = dig_steps(entry, _REQUEST_HEADERS)
    if type(headers) is not dict:
        headers = as_dict(headers, join_path(path, "request.headers"))
    view = RecordView(entry, headers=headers)
    status = "error" if _is_error(entry) else "ok"

    events = []
    unmeterable: DialectError | None = None
    for index, (key, block) in enumerate(_blocks(ai, join_path(path, "ai"))):
        block_path = join_path(path, f"ai.{key}")
        meta = dict_field(block, "meta", block_path)
        cache = dict_field(block, "cache", block_path)
        cache_status = str_field(cache, "cache_status", block_path, "cache.cache_status")
        cache_hit = (cache_status or "").lower() == "hit"
        usage = _usage(block, meta, cache_hit, block_path)
        operation = _operation(meta, block)
        content, assumption = None, None
        stream_lost = _stream_without_output(usage, meta, cache_hit)
        if stream_lost and status != "ok":
            usage, stream_lost = None, False  # a failed stream: metered as an error (zero), as before
        lost_count = not cache_hit and zero_usage_is_not_a_count(usage, status, operation)
        provider, model = _provider(meta, block, mapping, block_path), _model(meta, block, block_path)
        stream_estimated = status == "ok" and _stream_output_estimated(usage, meta, cache_hit, provider)
        if usage is None or lost_count or stream_lost or stream_estimated:  # only then is the text needed
            payload = as_dict(block.get("payload"), join_path(block_path, "payload"))
            usage, content, assumption = _metered(usage, payload, stream_lost, lost_count, stream_estimated)
        base_id = request_id or derived_event_id(NAME, entry, path)
        tags = {"cache_status": cache_status} if cache_status else {}
        if index:
            tags["kong_plugin"] = key
        latency = float_field(meta, "llm_latency", block_path, "meta.llm_latency")
        raw_usage = dict_field(block, "usage", block_path)
        ttft = float_field(raw_usage, "time_to_first_token", block_path, "usage.time_to_first_token")
        if usage is None and content is None and status == "ok":
            # Nothing to meter a successful call with: say why here (the worker could only say "neither usage nor
            # content"); the entry's other events (a RAG embedding, other plugin blocks) still count.
            unmeterable = unmeterable or DialectError(_unmeterable_reason(block, meta), join_path(block_path, "usage"))
        else:
            events.append(make_event(
                block_path,
                event_id=base_id if index == 0 else f"{base_id}:{key}",
                ts=ts,
                source=NAME,
                provider=provider,
                model=model,
                operation=operation,
                status=status,
                attribution=mapping.resolve(NAME, view, auto_tags=tags),
                usage=usage,
                content=content,
                latency_ms=latency,
                ttft_ms=ttft or None,
                usage_assumption=_markers(_known_gap(provider, model, usage), assumption),
            ))
        embedding = _rag_embedding(block, mapping, block_path)
        if embedding:
            tags = {**tags, "kong_plugin": RAG_INJECT}
            events.append(make_event(
                join_path(block_path, RAG_INJECT), event_id=f"{base_id}:{RAG_INJECT}", ts=ts, source=NAME,
                status=status, attribution=mapping.resolve(NAME, view, auto_tags=tags), **embedding))
    if unmeterable is not None:
        raise DialectError(unmeterable.reason, unmeterable.path, events)
    return events


def _unmeterable_reason(block: dict[str, Any], meta: dict[str, Any]) -> str:
    if not isinstance(block.get("usage"), dict) or not block["usage"]:
        return ("no usage logged: Kong writes token counts only with ai-proxy logging.log_statistics on (and the "
                "text to count only with logging.log_payloads)")
    if meta.get("request_mode") == "stream":
        return ("streamed call logged no token counts (completion_tokens 0 is what Kong writes when it read no text "
                "from the stream, Kong/kong#14535, #14768) and no payload to count the text of: turn on ai-proxy "
                "logging.log_payloads")
    return "no token counts in usage and no payload to count from (ai-proxy logging.log_payloads)"


# --- the batch form ----------------------------------------------------------------------------------------

def _common_entry(entry: Any, mapping: AttributionMapping) -> EncodedEvent | None:
    """The event of an entry of the common shape (Kong 3.8+ `ai.proxy` only, request id, epoch-ms `started_at`,
    int `upstream_status`, plain OpenAI usage, string meta fields), written as `parse_entry` would have it
    written; None for any other entry, which `parse_entry` then reads (and dead-letters, when it must)."""
    if type(entry) is not dict:
        return None
    ai = entry.get("ai")
    if type(ai) is not dict or len(ai) != 1:
        return None
    block = ai.get("proxy")
    if type(block) is not dict or "cache" in block or RAG_INJECT in block:  # a RAG embedding: a second event
        return None
    meta, raw_usage, request = block.get("meta"), block.get("usage"), entry.get("request")
    if type(meta) is not dict or type(raw_usage) is not dict or type(request) is not dict:
        return None
    request_id, headers, started = request.get("id"), request.get("headers"), entry.get("started_at")
    if type(request_id) is not str or type(headers) is not dict or type(started) is not int \
            or not 10**11 <= started < 10**14:
        return None
    request_id = request_id.strip()
    status = entry.get("upstream_status")
    if not request_id or len(request_id) > 512 or type(status) is not int:
        return None
    prompt, completion = raw_usage.get("prompt_tokens"), raw_usage.get("completion_tokens")
    # `encoded.token_count` of both, inline (this runs once per entry of every Kong batch)
    if type(prompt) is not int or type(completion) is not int or not 0 <= prompt <= MAX_TOKENS \
            or not 0 <= completion <= MAX_TOKENS or not raw_usage.keys().isdisjoint(OPENAI_DETAIL_KEYS):
        return None
    if completion == 0 and (meta.get("request_mode") == "stream" or prompt == 0):
        return None  # Kong/kong#14535, or all zeros: parse_entry decides from the payload text
    name, model, operation = meta.get("provider_name"), meta.get("response_model"), meta.get("operation_name")
    if model is None or (type(model) is str and not model.strip()):
        model = meta.get("request_model")  # as _model: an absent or blank response model
    if type(name) is not str or type(model) is not str or type(operation) is not str or not operation:
        return None
    provider, model = normalize_provider(name), model.strip()
    if not provider or not model:
        return None
    if provider == "gemini":
        provider = _upstream_provider(provider, block)
    logged_latency, ttft = meta.get("llm_latency"), raw_usage.get("time_to_first_token")
    latency = None if logged_latency is None else plain_float(logged_latency)
    ttft_ms = None if ttft is None else plain_float(ttft)
    if (latency is None and logged_latency is not None) or (ttft_ms is None and ttft is not None):
        return None
    ts = epoch_millis_text(started) if started < EXACT_EPOCH_MS_LIMIT \
        else utc_text(epoch_to_datetime(started, "started_at"))
    if ts is None:
        return None
    fields: dict[str, Any] = {
        "event_id": request_id, "ts": ts, "source": NAME, "provider": provider, "model": model,
        "operation": normalize_operation(operation), "status": "error" if status >= 400 else "ok",
        "attribution": mapping.resolve_parts(NAME)(entry, view_headers(headers), NO_ATTRIBUTES, NO_ATTRIBUTES, None),
        "usage": {"input_tokens": prompt, "cached_input_tokens": 0, "cache_write_tokens": 0,  # `plain_usage`
                  "cache_write_1h_tokens": 0, "output_tokens": completion, "reasoning_tokens": 0},
    }
    if latency is not None:
        fields["latency_ms"] = latency
    if ttft_ms:
        fields["ttft_ms"] = ttft_ms
    fields["batch"] = False
    gap = None
    if provider == "anthropic":
        gap = "kong-anthropic-input-excludes-cache-tokens"
    elif provider in ("gemini", "vertex_ai") and _GEMINI_THINKING.match(model.lower()):
        gap = "kong-gemini-output-excludes-thinking-tokens"
    estimated = None
    if status < 400 and meta.get("request_mode") == "stream" and provider not in _STREAM_COUNT_IS_THE_PROVIDERS:
        if "payload" in block:
            return None  # Kong's output estimate beside logged text: parse_entry decides whether to recount
        estimated = KONG_STREAM_OUTPUT_ESTIMATED
    if gap or estimated:  # `_markers(gap, estimated)`, inline: most entries have neither
        fields["usage_assumption"] = f"{gap}+{estimated}" if gap and estimated else gap or estimated
    return encoded_event(fields)



DIALECT = Dialect(NAME, "Kong AI Gateway log entries (ai.proxy / ai[\"ai-proxy\"]), kafka-log arrays", parse_entry,
                  read_common=_common_entry)
