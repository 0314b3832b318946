"""The canonical usage event (contract v1) and the priced event the worker adds to it.

One JSON object per LLM call. Every entry point (Kafka topic, HTTP ingest, collectors, `tokenmeter price`)
validates with these models, so a record is either a valid event or a clear, field-level error.

Token semantics follow OpenAI and OpenTelemetry: `input_tokens` counts ALL input tokens, cache reads and
cache writes included; `output_tokens` counts reasoning tokens too. Parsers of other conventions
(Anthropic excludes cache tokens from input; Gemini keeps thoughts out of candidates) convert before
building an event.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PlainSerializer,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from typing_extensions import Annotated

from tokenmeter.stored_money import MAX_STORED_COST_USD

CONTRACT_VERSION = 1

# Money travels as a decimal string so no JSON parser turns it into a float on the way.
DecimalString = Annotated[Decimal, PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json")]

ATTRIBUTION_DIMENSIONS = ("org", "team", "project", "user", "api_key", "feature", "route")

# Server-side tool requests providers bill per request alongside tokens (a closed set: an unknown kind is an
# error, not an unpriced fee). web_search: Anthropic web search, OpenAI web_search_call; web_fetch: Anthropic
# web fetch; file_search: OpenAI file_search_call; code_interpreter: OpenAI code interpreter containers;
# grounding_prompts / grounding_queries: Gemini grounding with Google Search (billed per grounded prompt on
# Gemini 2.x, per search query on Gemini 3). xAI (usage.server_side_tool_usage_details): web_search, x_search,
# code_interpreter (per call), file_search (collections), attachment_search; live_search_sources: its Live Search,
# billed per source used (usage.num_sources_used).
TOOL_REQUEST_KINDS = ("web_search", "web_fetch", "file_search", "code_interpreter", "grounding_prompts",
                      "grounding_queries", "x_search", "attachment_search", "live_search_sources")
ToolRequestKind = Literal["web_search", "web_fetch", "file_search", "code_interpreter", "grounding_prompts",
                          "grounding_queries", "x_search", "attachment_search", "live_search_sources"]
MAX_TOOL_REQUESTS = 100_000  # per kind and call; far above any real call, low enough to stop a typo's millions

# Accepted event times. Older or later events are invalid (a dead letter with the reason at every stage), not
# stored and later deleted by a TTL: the warehouse partitions by month of `ts` (an INSERT may touch at most 100
# partitions) and its TTL arithmetic overflows past 2106. 2020-01-01 predates every LLM API's usage logs, so a
# backfill of old logs still fits; one day of future covers clock skew between gateways. Both can be changed
# per deployment (every process of it must agree): TOKENMETER_EARLIEST_EVENT_TS (RFC 3339) and
# TOKENMETER_MAX_EVENT_FUTURE_SECONDS.
EARLIEST_EVENT_TS = datetime.fromisoformat(
    os.environ.get("TOKENMETER_EARLIEST_EVENT_TS", "2020-01-01T00:00:00+00:00"))
if EARLIEST_EVENT_TS.tzinfo is None:
    EARLIEST_EVENT_TS = EARLIEST_EVENT_TS.replace(tzinfo=timezone.utc)
MAX_EVENT_FUTURE = timedelta(seconds=float(os.environ.get("TOKENMETER_MAX_EVENT_FUTURE_SECONDS", 86400)))

# Largest token count of one field of one call: 10^12 is 10^5 times the largest context window offered today
# (10M tokens), so no real call comes near it, and sums of such counts cannot overflow the warehouse's
# 128-bit sums. A larger value (2^64-1 from a broken gateway) is a dead letter, never summed.
MAX_TOKENS = 10**12


def _not_a_boolean(value: Any) -> Any:
    # pydantic's lax mode reads true as 1: a count or a duration of `true` is a broken producer, refused as the
    # gateway dialects refuse it (collectors/coerce.py), not one token (hostile32)
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got boolean {str(value).lower()}")
    return value


NotBoolean = BeforeValidator(_not_a_boolean)
TokenCount = Annotated[int, NotBoolean, Field(ge=0, le=MAX_TOKENS)]
Duration = Annotated[NonNegativeFloat, NotBoolean]


# A cost a provider or router reported for one call (OpenRouter's usage.cost): at most this much, kept to 12
# decimal places (pico-dollars, the warehouse's scale; the reported figure is a JSON float, so digits beyond
# that are float noise, not money).
MAX_REPORTED_COST_USD = MAX_STORED_COST_USD  # what the warehouse stores (tokenmeter/stored_money.py)
REPORTED_COST_QUANTUM = Decimal("1e-12")


def check_event_time(ts: datetime, now: datetime | None = None) -> datetime:
    """Raise ValueError when `ts` is outside the accepted range [EARLIEST_EVENT_TS, now + MAX_EVENT_FUTURE]."""
    if ts < EARLIEST_EVENT_TS:
        raise ValueError(f"event time {ts.isoformat()} is before {EARLIEST_EVENT_TS.isoformat()}, the earliest "
                         "accepted (TOKENMETER_EARLIEST_EVENT_TS)")
    latest = (now or datetime.now(timezone.utc)) + MAX_EVENT_FUTURE
    if ts > latest:
        raise ValueError(f"event time {ts.isoformat()} is more than {MAX_EVENT_FUTURE} in the future (latest "
                         f"accepted now: {latest.isoformat(timespec='seconds')}; TOKENMETER_MAX_EVENT_FUTURE_SECONDS)")
    return ts


class _Strict(BaseModel):
    # Unknown fields are an error: a typo such as `input_token` must not silently price as zero.
    model_config = ConfigDict(extra="forbid", frozen=False)


class Correlation(_Strict):
    """Ids that name the same LLM call in other sources (a gateway log, an OTel span, an SDK event), so the
    warehouse counts the call once (warehouse/dedup.py): the provider's response id (`chatcmpl-...`, `msg_...`),
    a request id the gateway logs and the client knows (`x-request-id`), and the W3C trace and span id of the
    client span that made the call."""

    response_id: str | None = Field(default=None, min_length=1, max_length=256)
    request_id: str | None = Field(default=None, min_length=1, max_length=256)
    trace_id: str | None = Field(default=None, min_length=1, max_length=64)
    span_id: str | None = Field(default=None, min_length=1, max_length=32)


# Bounds of one event's attribution (cap33): far above what a deployment sends, low enough that a hostile gateway
# cannot make one event 10,000 tags (each a row of the tag rollups) or a 200 KB team name (a key of every rollup,
# budget, anomaly series and dashboard list). OpenTelemetry's SDKs cap a span at 128 attributes by default
# (OTEL_ATTRIBUTE_COUNT_LIMIT); an id, a name, a path or a tag value fits 1,024 characters, a tag key 128.
MAX_TAGS = 128
MAX_TAG_KEY_CHARS = 128
MAX_ATTRIBUTION_CHARS = 1024  # an attribution value (org, team, project, user, api_key, feature, route) or tag value


# Bounds of the event's other free strings (trust34): only the 256 KB event limit held them, so a 200 KB model name
# was priced and became a key of every rollup, budget scope and dashboard list. Real ids are far below: the longest
# in the recorded gateway payloads is a Bedrock inference-profile ARN behind LiteLLM's route prefix (109
# characters, `bedrock/converse/arn:aws:bedrock:...:application-inference-profile/...`), Fireworks' are
# `accounts/fireworks/models/<name>` (~60). Bedrock's API allows a modelId of 2,048 characters: the model's bound.
MAX_MODEL_CHARS = 2048
MAX_NAME_CHARS = 256  # source, provider, operation, service_tier: a gateway's, provider's, operation's or tier's name
TEXT_BOUNDS = {"source": MAX_NAME_CHARS, "provider": MAX_NAME_CHARS, "model": MAX_MODEL_CHARS,
               "operation": MAX_NAME_CHARS, "service_tier": MAX_NAME_CHARS}


def texts_fit(fields: dict[str, Any]) -> bool:
    """Whether an event's JSON form has source, provider, model, operation and service_tier within TEXT_BOUNDS: the
    check of the paths that write an event without the model (as attribution_fits; their readers have checked the
    types), which leave one past them to the model, whose validator words the refusal."""
    get = fields.get
    try:  # unrolled: a loop over TEXT_BOUNDS was ~0.8 us an event of a collector's ~20, this ~0.3
        return (len(get("source") or "") <= MAX_NAME_CHARS and len(get("provider") or "") <= MAX_NAME_CHARS
                and len(get("model") or "") <= MAX_MODEL_CHARS and len(get("operation") or "") <= MAX_NAME_CHARS
                and len(get("service_tier") or "") <= MAX_NAME_CHARS)
    except TypeError:  # a value without a length (a writer's bug): the model decides
        return False


class Attribution(_Strict):
    org: str | None = None
    team: str | None = None
    project: str | None = None
    user: str | None = None
    api_key: str | None = None
    feature: str | None = None
    route: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator(*ATTRIBUTION_DIMENSIONS)
    @classmethod
    def _not_too_long(cls, value: str | None) -> str | None:
        if value is not None and len(value) > MAX_ATTRIBUTION_CHARS:
            raise ValueError(f"{len(value)} characters, at most {MAX_ATTRIBUTION_CHARS}")
        return value

    @field_validator("tags", mode="before")  # before: 100,000 tags are refused before pydantic copies them
    @classmethod
    def _not_too_many(cls, tags: Any) -> Any:
        problem = tags_problem(tags) if isinstance(tags, dict) else None
        if problem is not None:
            raise ValueError(problem)
        return tags


def tags_problem(tags: dict[Any, Any]) -> str | None:
    """What of a tags object is past its bounds, in words (the dead letter's), or None."""
    if len(tags) > MAX_TAGS:
        return f"{len(tags)} tags, at most {MAX_TAGS}"
    for key, value in tags.items():
        if isinstance(key, str) and len(key) > MAX_TAG_KEY_CHARS:
            return f"a tag key of {len(key)} characters ({key[:40]!r}...), at most {MAX_TAG_KEY_CHARS}"
        if isinstance(value, str) and len(value) > MAX_ATTRIBUTION_CHARS:
            return f"tag {str(key)[:40]!r}: a value of {len(value)} characters, at most {MAX_ATTRIBUTION_CHARS}"
    return None


def attribution_fits(attribution: dict[str, Any]) -> bool:
    """Whether an attribution's JSON form (dimensions as text, `tags` a dict) is within the bounds above: the check
    of the paths that write an event without the model (collectors' batch forms, the worker's columns), which leave
    an event past them to the model, whose validators word its refusal."""
    try:  # one pass of len() (the hot path of every collector's batch form: ~0.5-1 us an event)
        for value in attribution.values():
            if len(value) > MAX_ATTRIBUTION_CHARS:  # a dimension's characters (or more than 1,024 tags)
                return False
        tags = attribution.get("tags")
        if tags:
            if len(tags) > MAX_TAGS:
                return False
            for key, value in tags.items():
                if len(key) > MAX_TAG_KEY_CHARS or len(value) > MAX_ATTRIBUTION_CHARS:
                    return False
        return True
    except TypeError:  # a value without a length (a writer's bug): the model decides
        return False


class Usage(_Strict):
    """Token counts of one call. Parts are included in their totals, never added on top."""

    input_tokens: TokenCount = 0
    cached_input_tokens: TokenCount = 0  # cache reads, part of input_tokens
    cache_write_tokens: TokenCount = 0  # part of input_tokens
    cache_write_1h_tokens: TokenCount = 0  # part of cache_write_tokens (1-hour TTL; the rest is 5-minute)
    output_tokens: TokenCount = 0  # reasoning included
    reasoning_tokens: TokenCount = 0  # part of output_tokens
    # Billable server-side tool requests of the call by kind (not tokens; priced per request). None when none.
    tool_requests: dict[ToolRequestKind, Annotated[int, NotBoolean, Field(ge=0, le=MAX_TOOL_REQUESTS)]] | None = None

    @model_validator(mode="after")
    def _parts_within_totals(self) -> "Usage":
        problems = []
        if self.cached_input_tokens + self.cache_write_tokens > self.input_tokens:
            problems.append(
                f"cached_input_tokens ({self.cached_input_tokens}) + cache_write_tokens "
                f"({self.cache_write_tokens}) exceed input_tokens ({self.input_tokens}); "
                "input_tokens must include cache reads and writes"
            )
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            problems.append("cache_write_1h_tokens exceeds cache_write_tokens")
        if self.reasoning_tokens > self.output_tokens:
            problems.append(
                f"reasoning_tokens ({self.reasoning_tokens}) exceed output_tokens ({self.output_tokens}); "
                "output_tokens must include reasoning"
            )
        if problems:
            raise ValueError("; ".join(problems))
        if self.tool_requests is not None:  # one spelling of "none": no zero counts, no empty map
            self.tool_requests = {k: v for k, v in self.tool_requests.items() if v} or None
        return self

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


# Usage's token counts in model order: the fields every columnar reader and writer names (tool_requests aside)
USAGE_PARTS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens", "output_tokens",
               "reasoning_tokens")


# Deepest nesting of content.prompt / content.tools (levels below the field; a chat message list with a tool call
# and a JSON schema is ~10-20). The JSON writers stop near 255 levels (pydantic-core, orjson): deeper content was
# accepted here, then every collector's sink failed to write the event, and `collect http` answered 500 to the
# whole request (hostile24). Checked iteratively: a deep value must not recurse either.
MAX_CONTENT_DEPTH = 100


def _check_depth(value: Any, limit: int = MAX_CONTENT_DEPTH) -> Any:
    level = [value]
    for depth in range(limit + 1):
        level = [child for item in level if isinstance(item, (dict, list))
                 for child in (item.values() if isinstance(item, dict) else item)]
        if not level:
            return value
        if depth == limit - 1 and any(isinstance(item, (dict, list)) for item in level):
            raise ValueError(f"nested deeper than {limit} levels")
    return value


class Content(_Strict):
    """Text of the call, used only to count tokens when usage is missing. Never stored downstream."""

    prompt: str | list[dict[str, Any]] | None = None  # plain text or chat messages
    completion: str | None = None
    tools: list[dict[str, Any]] | None = None  # tool/function definitions sent with the prompt

    @field_validator("prompt", "tools", mode="before")
    @classmethod
    def _not_too_deep(cls, value: Any) -> Any:
        return _check_depth(value)


class UsageEvent(_Strict):
    event_id: str = Field(min_length=1, max_length=512)
    ts: AwareDatetime
    source: str = Field(min_length=1)
    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)
    operation: str = "chat"
    status: Literal["ok", "error"] = "ok"
    attribution: Attribution = Field(default_factory=Attribution)
    usage: Usage | None = None
    content: Content | None = None
    latency_ms: Duration | None = None
    ttft_ms: Duration | None = None
    # true or false only: lax mode took 1, "yes", "on" as true, a call priced at batch rates (half price) silently
    batch: StrictBool = False
    service_tier: str | None = None
    # Set by a collector when the source format is ambiguous and the usage was read under an assumption (e.g.
    # `litellm-cache-writes-in-prompt`): the event is metered with the best rule and this says which, so such
    # events are counted, stored and reportable instead of silently trusted.
    usage_assumption: str | None = Field(default=None, min_length=1, max_length=200)
    # The cost the event's provider reported for this call in USD, when it reports one (OpenRouter's usage.cost,
    # plus the upstream's cost for bring-your-own-key calls). The worker takes it as the cost of record and
    # checks it against the catalog (PricedEvent.reported_cost_check, breakdown line `reported_difference`).
    reported_cost_usd: DecimalString | None = None
    correlation: Correlation | None = None  # cross-source dedup keys (optional)

    @field_validator(*TEXT_BOUNDS)
    @classmethod
    def _text_not_too_long(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and len(value) > TEXT_BOUNDS[info.field_name]:
            raise ValueError(f"{len(value)} characters, at most {TEXT_BOUNDS[info.field_name]}")
        return value

    @field_validator("ts")
    @classmethod
    def _ts_in_accepted_range(cls, ts: datetime) -> datetime:
        return check_event_time(ts)

    @field_validator("reported_cost_usd")
    @classmethod
    def _reported_cost_is_money(cls, value: Decimal | None) -> Decimal | None:
        if value is None:
            return None
        if not value.is_finite() or value < 0 or value >= MAX_REPORTED_COST_USD:
            raise ValueError(f"must be a finite amount >= 0 and below {MAX_REPORTED_COST_USD} USD, got {value}")
        return value.quantize(REPORTED_COST_QUANTUM, ROUND_HALF_EVEN)  # the scale of every other cost


class PriceRef(_Strict):
    """Which catalog entry priced an event, so any cost can be explained and re-priced."""

    entry: str
    effective_from: str | None = None
    catalog_version: str | None = None
    override: str | None = None


class PricedEvent(UsageEvent):
    usage: Usage  # always present once metered
    tokens_source: Literal["provider", "estimated"]
    cost_usd: DecimalString
    cost_breakdown: dict[str, DecimalString] = Field(default_factory=dict)
    pricing_status: Literal["priced", "unpriced"]
    unpriced_reason: str | None = None
    price: PriceRef | None = None
    priced_at: datetime | None = None
    # Only for events with reported_cost_usd: how the reported cost compares with the catalog's price of the same
    # usage ("matches", "differs by ...", or "not checked: <why the catalog cannot price it>").
    reported_cost_check: str | None = None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"content"}, exclude_none=True)


def partition_key(event: UsageEvent | dict[str, Any]) -> bytes:
    """Kafka key: the most specific owner we know, so one team's events stay in order on one partition."""
    if isinstance(event, UsageEvent):  # read off the model: a model_dump per event was half this function's cost
        attribution = event.attribution
        for dim in PARTITION_DIMENSIONS:
            value = getattr(attribution, dim)
            if value:
                return f"{dim}:{value}".encode()
        return b"unattributed"
    attribution = event.get("attribution") or {}
    for dim in PARTITION_DIMENSIONS:
        value = attribution.get(dim)
        if value:
            return f"{dim}:{value}".encode()
    return b"unattributed"


PARTITION_DIMENSIONS = ("team", "org", "project", "api_key", "user")  # most specific owner first


def derive_event_id(source: str, *parts: Any) -> str:
    """Deterministic id for records that carry none, so a replay of the same record deduplicates."""
    digest = hashlib.sha256(orjson.dumps([source, *parts], option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{source}:{digest[:32]}"


def describe_validation_error(error: ValidationError, under: str = "") -> str:
    """One line naming every bad field, e.g. `usage.input_tokens: Input should be >= 0`; `under`: the field the
    validated model is (`attribution` for an Attribution validated on its own)."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in ((under,) if under else ()) + tuple(item["loc"])) or "event"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


__all__ = [
    "ATTRIBUTION_DIMENSIONS",
    "MAX_ATTRIBUTION_CHARS",
    "MAX_TAGS",
    "MAX_TAG_KEY_CHARS",
    "MAX_MODEL_CHARS",
    "MAX_NAME_CHARS",
    "TEXT_BOUNDS",
    "texts_fit",
    "attribution_fits",
    "tags_problem",
    "MAX_CONTENT_DEPTH",
    "MAX_TOOL_REQUESTS",
    "TOOL_REQUEST_KINDS",
    "CONTRACT_VERSION",
    "EARLIEST_EVENT_TS",
    "MAX_EVENT_FUTURE",
    "MAX_REPORTED_COST_USD",
    "MAX_TOKENS",
    "Attribution",
    "Content",
    "PriceRef",
    "PricedEvent",
    "Usage",
    "UsageEvent",
    "check_event_time",
    "derive_event_id",
    "describe_validation_error",
    "partition_key",
]
