"""A randomised corpus of usage records for the equivalence test of the columnar path.

Covers what reaches the worker as canonical events from every dialect (provider spellings of OTel, LiteLLM, Kong,
Bedrock, Vertex, Azure, routers; catalog ids, aliases and snapshot names), every usage kind (cache reads, 5-minute
and 1-hour cache writes, reasoning, long context, tool requests, usage counted from text), service tiers,
batch, unknown models, status error, attributions of every shape, correlation ids (valid, at their bounds and
hostile), reported costs, far-dated and oddly written timestamps (and times at the edges of the accepted range,
relative to the wall clock), token counts around MAX_TOKENS, priced events over MAX_PRICED_EVENT_BYTES,
micro-batches over MAX_EVENTS_PER_RECORD, usage assumptions, duplicates, and invalid rows and records of many
kinds. Deterministic for a seed, except the times relative to the clock.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import orjson

from streams.batch import MAX_EVENTS_PER_RECORD, MAX_PRICED_EVENT_BYTES, RawRecord
from streams.pricing import PriceBook
from tokenmeter.events import (EARLIEST_EVENT_TS, MAX_ATTRIBUTION_CHARS, MAX_EVENT_FUTURE, MAX_MODEL_CHARS,
                               MAX_NAME_CHARS, MAX_TAG_KEY_CHARS, MAX_TAGS, MAX_TOKENS, TEXT_BOUNDS, UsageEvent)

PROVIDER_SPELLINGS = {
    "openai": ["openai", "openai_api"], "azure": ["azure", "azure_openai", "az.ai.openai"],
    "anthropic": ["anthropic"], "bedrock": ["bedrock", "aws.bedrock", "bedrock_converse"],
    "vertex_ai": ["vertex_ai", "gcp.vertex_ai"], "gemini": ["gemini", "gcp.gemini", "google"],
    "mistral": ["mistral", "mistralai"], "deepseek": ["deepseek"], "xai": ["xai", "grok"],
}
ROUTERS = ["openrouter", "litellm", "kong", "unknown-gateway"]
UNKNOWN_MODELS = ["my-finetune-v2", "gpt-17-ultra", "claude-nonexistent-9", "llama-internal", "x" * 300]
TIERS = [None, None, None, "default", "auto", "standard", "on_demand", "flex", "priority", "Priority ", "scale", ""]
ASSUMPTIONS = [None] * 40 + ["litellm-cache-writes-in-prompt"] * 8 + ["a" * 201, ""]
TOOL_KINDS = ["web_search", "web_fetch", "file_search", "code_interpreter", "grounding_prompts", "grounding_queries"]
PROMPTS = ["Hello there", "Summarise this contract in three bullet points.", "def f(x):\n    return x * 2",
           "Bonjour, ça va ? 日本語のテキスト", ""]

# Attributions at the contract's bounds (priced) and one past each (a dead letter naming it), in bytes and in
# characters (a value of at most 1,024 characters in more bytes: frames.py hands it to the dict path to count).
_BOUND_ATTRIBUTIONS = [
    {"team": "t" * MAX_ATTRIBUTION_CHARS}, {"team": "t" * (MAX_ATTRIBUTION_CHARS + 1)},
    {"team": "\u00e9" * MAX_ATTRIBUTION_CHARS}, {"team": "\u00e9" * (MAX_ATTRIBUTION_CHARS + 1)},
    {"team": "a", "tags": {f"k{i}": "v" for i in range(MAX_TAGS)}},
    {"team": "a", "tags": {f"k{i}": "v" for i in range(MAX_TAGS + 1)}},
    {"team": "a", "tags": {"k" * MAX_TAG_KEY_CHARS: "v" * MAX_ATTRIBUTION_CHARS}},
    {"team": "a", "tags": {"k" * (MAX_TAG_KEY_CHARS + 1): "v"}},
    {"team": "a", "tags": {"env": "v" * (MAX_ATTRIBUTION_CHARS + 1)}},
]

# Names at their bounds (tokenmeter/events.py TEXT_BOUNDS: priced) and one past each (a dead letter naming it),
# in bytes and in characters (trust34)
_BOUND_NAMES = [
    {"source": "s" * MAX_NAME_CHARS, "provider": "p" * MAX_NAME_CHARS, "operation": "o" * MAX_NAME_CHARS,
     "service_tier": "t" * MAX_NAME_CHARS},
    {"model": "m" * MAX_MODEL_CHARS}, {"model": "\u00e9" * MAX_MODEL_CHARS}, {"source": "\u00e9" * MAX_NAME_CHARS},
    *({name: "x" * (bound + 1)} for name, bound in TEXT_BOUNDS.items()), {"model": "\u00e9" * (MAX_MODEL_CHARS + 1)},
]
_WIDE = "\U0001F600"  # 4 bytes of UTF-8 in one character: what lets a bounded event still outgrow a message


def _text_of_bytes(size: int) -> str:
    """A tag value of at most 1,024 characters whose UTF-8 is exactly `size` bytes (0..4096)."""
    return _WIDE * (size // 4) + ("", "a", "\u00e9", "\u20ac")[size % 4]


def padding_tags(size: int) -> dict[str, str]:
    """Tags within the contract's bounds whose JSON is exactly `size` bytes longer than `{"p00":""}`'s: how a test
    or the corpus makes a valid event of a given size, now that every other text is bounded (trust34; a long source
    did it before)."""
    tags, rest = {}, size
    while rest > 4 * MAX_ATTRIBUTION_CHARS:
        value = _text_of_bytes(min(4 * MAX_ATTRIBUTION_CHARS, rest - len(',"p00":""')))
        tags[f"p{len(tags) + 1:02d}"] = value
        rest -= len(',"p00":""') + len(value.encode())
    return {"p00": _text_of_bytes(rest), **tags}


def catalog_names(book: PriceBook) -> list[tuple[str, str]]:
    names = []
    for entry in book.entries.values():
        spellings = PROVIDER_SPELLINGS.get(entry.provider, [entry.provider])
        names.append((spellings[0], entry.model))
        for alias in entry.aliases[:2]:
            names.append((spellings[-1], alias))
        names.append((spellings[-1], entry.model.upper()))
    return names


def _near_latest(event: Any) -> bool:
    """Whether an event's time is now within 10 minutes of the latest accepted time. A duplicate replays an event
    generated minutes earlier, while the edge moved on with the clock: one generated 5 minutes past the edge
    (`_edge_ts`) is then seconds from it, valid on one path and late on the other, run seconds later (seen in a
    1,000,000-event run that took 11 minutes under load)."""
    text = event.get("ts") if isinstance(event, dict) else None
    if not isinstance(text, str):
        return False
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return False
    if moment.tzinfo is None:
        return False
    return abs(moment - (datetime.now(timezone.utc) + MAX_EVENT_FUTURE)) < timedelta(minutes=10)


class Corpus:
    def __init__(self, book: PriceBook, seed: int = 14):
        self.rng = random.Random(seed)
        self.names = catalog_names(book)
        self.serial = 0
        self.previous: list[dict[str, Any]] = []
        self.tiered = tiered_versions(book)
        # Correlation ids draw from their own stream, so every other field of the corpus is what it was before.
        self.ids = random.Random(seed * 7919 + 1)
        self.costs = random.Random(seed * 7919 + 2)  # reported costs: their own stream too
        self.collector = random.Random(seed * 7919 + 3)  # collector-written micro-batches and their twists

    def ts(self) -> Any:
        if self.rng.random() < 0.02:
            return self._edge_ts()
        text = self._ts()
        if isinstance(text, str):
            # Not within minutes of the latest accepted time: the validator reads the clock per event, so such
            # a row may be valid on one path and late on the other, run a second later (edge rows: _edge_ts).
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                return text
            if moment.tzinfo is not None and abs(
                    moment - (datetime.now(timezone.utc) + MAX_EVENT_FUTURE)) < timedelta(minutes=10):
                return (moment + timedelta(hours=1)).isoformat()
        return text

    def _edge_ts(self) -> str:
        """A time at an edge of the accepted range [EARLIEST_EVENT_TS, now + MAX_EVENT_FUTURE]."""
        rng = self.rng
        latest = datetime.now(timezone.utc) + MAX_EVENT_FUTURE
        moment = rng.choice([EARLIEST_EVENT_TS, EARLIEST_EVENT_TS - timedelta(microseconds=1),
                             EARLIEST_EVENT_TS + timedelta(seconds=1), latest - timedelta(minutes=5),
                             latest + timedelta(minutes=5), latest + timedelta(days=400)])
        text = moment.astimezone(timezone.utc).isoformat()
        return text.replace("+00:00", rng.choice(["Z", "+00:00"]))

    def _ts(self) -> Any:
        rng = self.rng
        year = rng.choices([2026, 2025, 2024, 2023, 1999, 2099, 9999, 1001], [50, 20, 10, 5, 2, 2, 1, 1])[0]
        month, day = rng.randint(1, 12), rng.randint(1, 28)
        hour, minute, second = rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
        base = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
        fraction = rng.choice(["", "", f".{rng.randint(0, 999999):06d}", ".000000", ".5", f".{rng.randint(0, 999)}"])
        offset = rng.choice(["Z", "Z", "Z", "+00:00", "+02:00", "-05:30", "+14:00", "-00:00", "+23:59"])
        kind = rng.random()
        if kind < 0.96:
            return base + fraction + offset
        if kind < 0.97:
            return base.replace("T", " ") + offset
        if kind < 0.975:
            return f"{year:04d}-{month:02d}-{day:02d}"
        if kind < 0.98:
            return rng.randint(1_600_000_000, 1_800_000_000)
        if kind < 0.985:
            return f"{year:04d}-02-30T10:00:00Z"
        if kind < 0.99:
            return base  # naive: not an AwareDatetime
        return rng.choice(["yesterday", "", None, 12.5, "2026-13-01T00:00:00Z", "2026-01-01T24:00:00Z"])

    def usage(self) -> Any:
        rng = self.rng
        kind = rng.random()
        inp = rng.choice([0, rng.randint(1, 2000), rng.randint(2000, 150_000), rng.randint(200_001, 1_500_000)])
        out = rng.choice([0, rng.randint(1, 500), rng.randint(500, 60_000)])
        usage: dict[str, Any] = {"input_tokens": inp, "output_tokens": out}
        if rng.random() < 0.4 and inp:
            usage["cached_input_tokens"] = rng.randint(0, inp // 2)
        if rng.random() < 0.3 and inp:
            write = rng.randint(0, inp // 3)
            usage["cache_write_tokens"] = write
            if rng.random() < 0.5:
                usage["cache_write_1h_tokens"] = rng.randint(0, write)
        if rng.random() < 0.3 and out:
            usage["reasoning_tokens"] = rng.randint(0, out)
        if rng.random() < 0.05:
            usage["tool_requests"] = {rng.choice(TOOL_KINDS): rng.choice([0, 1, 3, 100_001])}
        if rng.random() < 0.02:
            usage["tool_requests"] = rng.choice([None, {}])
        if rng.random() < 0.3:  # keys in another order than the model's
            usage = dict(reversed(list(usage.items())))
        if kind < 0.015:  # hostile and odd values
            field = rng.choice(list(usage))
            usage[field] = rng.choice([-1, "12", 3.0, True, None, 2**64 - 1, [1], 2**63, 10**15 + 1, MAX_TOKENS + 1])
        elif kind < 0.018:  # at the bound: valid (and a price times it leaves int64: the per-row path)
            usage = {"input_tokens": MAX_TOKENS, "cached_input_tokens": rng.choice([0, MAX_TOKENS]),
                     "output_tokens": rng.choice([0, 1, MAX_TOKENS]), "reasoning_tokens": 0}
        elif kind < 0.019:
            usage = {"input_tokens": rng.choice([MAX_TOKENS + 1, 2**64 - 1]), "output_tokens": 5}
        elif kind < 0.02:
            usage["input_token"] = 5  # a typo must not price as zero
        elif kind < 0.03 and out:
            usage["reasoning_tokens"] = out + 1
        elif kind < 0.035:
            usage["cached_input_tokens"] = inp + 5
        return usage

    def attribution(self) -> Any:
        rng = self.rng
        kind = rng.random()
        if kind < 0.01:
            return None if rng.random() < 0.5 else rng.choice(["team-a", 5, []])
        if kind < 0.1:
            return {}
        attribution: dict[str, Any] = {}
        for dim, values in (("org", ["acme", "globex", "", None]), ("team", [f"team-{i}" for i in range(8)] + ["", None]),
                            ("project", ["p1", "p2", None]), ("user", [f"u{i}" for i in range(30)] + [None]),
                            ("api_key", ["key-1", None]), ("feature", ["chat", None]), ("route", ["/v1/chat", None])):
            if rng.random() < 0.6:
                attribution[dim] = rng.choice(values)
        if rng.random() < 0.2:
            attribution["tags"] = {"env": rng.choice(["prod", "dev"]), "region": "eu"}
        if rng.random() < 0.01:
            attribution["tags"] = {"env": 5}
        if rng.random() < 0.01:
            attribution["department"] = "finance"
        if rng.random() < 0.3:
            attribution = dict(reversed(list(attribution.items())))
        return attribution

    def model(self) -> tuple[str, str]:
        rng = self.rng
        kind = rng.random()
        if kind < 0.75:
            return rng.choice(self.names)
        provider, model = rng.choice(self.names)
        if kind < 0.85:
            return rng.choice(ROUTERS), f"{provider}/{model}"
        if kind < 0.9:
            return provider, model + rng.choice(["-2025-01-01", "@default", "-20250929"])
        return rng.choice([provider, "unknown"]), rng.choice(UNKNOWN_MODELS)

    def event(self) -> Any:
        rng = self.rng
        self.serial += 1
        if self.previous and rng.random() < 0.03:
            duplicate = rng.choice(self.previous)  # a duplicate (redelivery, replayed file)
            if not _near_latest(duplicate):
                return duplicate
        provider, model = self.model()
        event: dict[str, Any] = {"event_id": f"ev-{self.serial}", "ts": self.ts(), "source": rng.choice(
            ["litellm", "kong", "otel", "openai-sdk", "bedrock-logs", "file"]), "provider": provider, "model": model}
        if rng.random() < 0.3:
            event["operation"] = rng.choice(["chat", "embeddings", "responses"])
        if rng.random() < 0.15:
            event["status"] = rng.choice(["ok", "error", "error", "failed"])
        attribution = self.attribution()
        if attribution != {} or rng.random() < 0.5:
            event["attribution"] = attribution
        kind = rng.random()
        if kind < 0.85:
            event["usage"] = self.usage()
        elif kind < 0.93:
            event["content"] = {"prompt": rng.choice(PROMPTS + [[{"role": "user", "content": rng.choice(PROMPTS)}]]),
                                "completion": rng.choice(PROMPTS + [None])}
            if rng.random() < 0.3:
                event["usage"] = None
        elif kind < 0.97:
            event["usage"] = None
        if rng.random() < 0.5:
            event["latency_ms"] = rng.choice([rng.randint(1, 30_000), rng.random() * 1000, 0, None] * 5 + [-1, "fast"])
        if rng.random() < 0.3:
            event["ttft_ms"] = rng.choice([rng.randint(1, 3000), rng.random() * 100, None])
        if rng.random() < 0.15:
            event["batch"] = rng.choice([True] * 8 + [False] * 3 + ["yes", 1])
        tier = rng.choice(TIERS)
        if tier is not None or rng.random() < 0.05:
            event["service_tier"] = tier
        assumption = rng.choice(ASSUMPTIONS)
        if assumption is not None:
            event["usage_assumption"] = assumption
        damage = rng.random()
        if damage < 0.01:
            event["event_id"] = rng.choice(["", "x" * 513, 42, None])
        elif damage < 0.02:
            del event[rng.choice(["event_id", "ts", "source", "provider", "model"])]
        elif damage < 0.025:
            event["unexpected_field"] = 1
        elif damage < 0.03:
            event["model"] = rng.choice(["", 7])
        elif damage < 0.032:
            return rng.choice([5, "text", None, [], [1, 2], True])
        elif damage < 0.0321:  # valid, but its priced JSON would not fit a message: a dead letter (wide tags:
            # no attribution value or name can be this long since cap33 and trust34)
            event["attribution"] = {"team": "big", "tags": padding_tags(
                rng.choice([MAX_PRICED_EVENT_BYTES - 2000, MAX_PRICED_EVENT_BYTES + 10]))}
            event["ts"] = "2026-11-01T10:00:00Z"
            event["usage"] = {"input_tokens": 10, "output_tokens": 1}
        elif damage < 0.0324:  # attributions at and past the contract's bounds (cap33)
            event["attribution"] = rng.choice(_BOUND_ATTRIBUTIONS)
        elif damage < 0.0326:  # names at and past theirs (trust34)
            event.update(rng.choice(_BOUND_NAMES))
        correlation = self.correlation()
        if correlation is not _ABSENT:
            event["correlation"] = correlation
        reported = self.reported_cost()
        if reported is not _ABSENT:
            event["reported_cost_usd"] = reported
        if rng.random() < 0.2:
            event = dict(reversed(list(event.items())))
        if len(self.previous) < 1000:
            self.previous.append(event)
        elif rng.random() < 0.01:
            self.previous[rng.randrange(1000)] = event
        return event

    def correlation(self) -> Any:
        """Cross-source ids as the OTel (response, trace, span id) and LiteLLM (response id) collectors write them,
        ids at their length bounds (in characters, non-ASCII too), and hostile ones; _ABSENT for no key. Ids that
        make a call key are unique per event (the warehouse stores one event per call key: tests load the corpus)."""
        rng = self.ids
        unique = f"{self.serial}-{rng.getrandbits(32):08x}"
        kind = rng.random()
        if kind < 0.6:
            return _ABSENT
        if kind < 0.75:
            return {"response_id": f"chatcmpl-{rng.getrandbits(96):024x}", "trace_id": f"{rng.getrandbits(128):032x}",
                    "span_id": f"{rng.getrandbits(64):016x}"}
        if kind < 0.85:
            return {"response_id": rng.choice(["chatcmpl-", "msg_", "gen-", "resp_"]) + f"{rng.getrandbits(80):020x}"}
        if kind < 0.88:
            return {"request_id": f"req_{rng.getrandbits(64):016x}", "span_id": f"{rng.getrandbits(64):016x}"}
        if kind < 0.9:  # null, empty, null ids, a span id without its trace (no call key): valid
            return rng.choice([None, {}, {"response_id": None}, {"trace_id": None, "span_id": "s"}, {"trace_id": "é"}])
        if kind < 0.95:  # at the upper bounds, counted in characters (non-ASCII too): valid
            pad = rng.choice(["x", "é", "☃", "𝄞"])
            ids = {name: unique.ljust(limit, pad) for name, limit in CORRELATION_LIMITS.items() if rng.random() < 0.6}
            return dict(reversed(list(ids.items()))) if rng.random() < 0.5 else ids
        name, limit = rng.choice(list(CORRELATION_LIMITS.items()))
        return rng.choice([  # hostile (a dead letter naming the id), or text orjson escapes (valid)
            {name: unique.ljust(limit + 1, "x")}, {name: unique.ljust(limit + 1, "é")}, {name: ""}, {name: 5},
            {name: True}, {name: ["a"]}, {name: {"id": "x"}}, {"correlation_id": "x"}, {"response_id": "r", "extra": None},
            [], "chatcmpl-1", 7, {name: f'q"{unique}'}, {name: f"back\\{unique}"}, {name: f"tab\t{unique}\x01"},
            {name: f"line\u2028{unique}"}])

    def reported_cost(self) -> Any:
        """A provider-reported cost (OpenRouter's usage.cost, as collectors write it: decimal text), at its bounds,
        in forms the columnar path leaves to the per-row path, and hostile; _ABSENT for no key (most events)."""
        rng = self.costs
        kind = rng.random()
        if kind < 0.96:
            return _ABSENT
        if kind < 0.985:
            return f"{rng.random() * rng.choice([0.001, 0.1, 10]):.{rng.randint(1, 12)}f}"
        return rng.choice(["0", "0.000000000001", "999999.999999999999", None, "1000000", "-0.1", "1e-3", "00.5",
                           " 0.1", "0.1234567890123", "NaN", "", 0.0035, 2, True, [], {"usd": 1}])

    def records(self, n_events: int, partitions: int = 4) -> Iterator[RawRecord]:
        """Kafka records carrying about `n_events` events: micro-batches, single events, and bad records."""
        rng = self.rng
        produced = 0
        offset = 0
        while produced < n_events:
            offset += 1
            partition = rng.randrange(partitions)
            kind = rng.random()
            if kind < 0.002:
                yield RawRecord(None, "tokenmeter.usage", partition, offset)
                continue
            if kind < 0.004:
                yield RawRecord(rng.choice([b"{nope", b"\xff\xfe", b"", b"[1,", b"nan"]), "tokenmeter.usage",
                                partition, offset)
                continue
            if kind < 0.0042:  # a micro-batch over the limit: one dead letter for the record
                yield RawRecord(orjson.dumps([{}] * (MAX_EVENTS_PER_RECORD + 1)), "tokenmeter.usage", partition,
                                offset)
                continue
            if kind < 0.3:
                value = orjson.dumps(self.event())
                produced += 1
            elif self.collector.random() < 0.5:  # as collectors write them: the frame path's input (frames.py)
                value, size = self.collector_batch(min(self.collector.randint(1, 500), n_events - produced))
                produced += size
            else:
                size = min(rng.randint(1, 500), n_events - produced)
                value = orjson.dumps([self.event() for _ in range(size)])
                produced += size
            yield RawRecord(value, "tokenmeter.usage", partition, offset)
        # Rows at every input-length threshold of every tiered version, thinking and not (input tiers and thinking
        # prices are rare in the catalog, so random rows seldom sit on an edge).
        edges = self.tier_edge_events()
        for start in range(0, len(edges), 500):
            offset += 1
            yield RawRecord(orjson.dumps(edges[start:start + 500]), "tokenmeter.usage", 0, offset)

    def collector_batch(self, size: int, twists: bool = True) -> tuple[bytes, int]:
        """(a micro-batch of valid events as a collector writes them, `UsageEvent.model_dump_json(exclude_none=True)`
        joined in an array, its event count); one in three carries one twist that the frame path must not read
        as polars does (frames.py): a coerced, duplicated, unknown, null or escaped value, whitespace, ...."""
        rng = self.collector
        events = []
        while len(events) < size:
            item = self.event()
            try:
                event = UsageEvent.model_validate(item)
            except Exception:  # noqa: BLE001 - an invalid row: collectors never write one
                continue
            if event.content is not None or event.reported_cost_usd is not None:
                continue
            if rng.random() < 0.3:  # tags of many string shapes: frames.py reads compact string maps (worker7)
                event.attribution.tags = {rng.choice(["env", "route", "\u00e9quipe", "", "k,{}:"]) + str(i):
                                          rng.choice(["prod", "/v1/{id}", "\u65e5\u672c", "", "a:b,c}"])
                                          for i in range(rng.randint(0, 4))}
            elif rng.random() < 0.002:  # at and past the bounds, in a message frames.py certifies (cap33)
                bound = rng.choice(_BOUND_ATTRIBUTIONS)
                event.attribution.team, event.attribution.tags = bound.get("team"), bound.get("tags", {})
            dumped = event.model_dump_json(exclude_none=True).encode()
            # escaped strings and tool requests take the dict path (the other records have plenty): a few only
            if (b"\\" in dumped or b"tool_requests" in dumped) and rng.random() < 0.995:
                continue
            events.append(dumped)
        if twists and rng.random() < 0.34:
            j = rng.randrange(len(events))
            events[j] = self._twist(events[j])
        return b"[" + b",".join(events) + b"]", len(events)

    def _twist(self, event: bytes) -> bytes:
        rng = self.collector
        kind = rng.randrange(len(TWISTS))
        old, new = TWISTS[kind]
        if old.encode() in event:
            return event.replace(old.encode(), new.encode(), 1)
        return event[:-1] + b"," + new.encode().lstrip(b",") + b"}" if new.startswith(",") else event

    def tier_edge_events(self) -> list[dict[str, Any]]:
        rng = self.rng
        events = []
        for provider, model, start, thresholds in self.tiered:
            day = max(start, EARLIEST_EVENT_TS) + timedelta(days=rng.randint(0, 30), seconds=rng.randint(0, 86399))
            for tokens in [rng.randint(1, 5000)] + [t + d for t in thresholds for d in (-1, 0, 1)]:
                for reasoning in (0, 1, rng.randint(2, 900)):
                    self.serial += 1
                    usage = {"input_tokens": tokens, "cached_input_tokens": rng.randint(0, tokens // 2),
                             "output_tokens": 1000, "reasoning_tokens": reasoning}
                    event = {"event_id": f"ev-{self.serial}", "ts": day.isoformat(), "source": "litellm",
                             "provider": provider, "model": model, "attribution": self.attribution(), "usage": usage}
                    tier = rng.choice([None, None, "flex", "priority", "batch"])
                    if tier == "batch":
                        event["batch"] = True
                    elif tier is not None:
                        event["service_tier"] = tier
                    events.append(event)
        return events


# (text in a collector-written event, its replacement; a replacement starting with "," is appended when the text is
# absent): each a value polars' reader would take differently from orjson + pydantic, or a form it certifies not.
TWISTS = [
    ('"input_tokens":', '"input_tokens":1.0,"zz_":'), ('"output_tokens":', '"output_tokens":true,"zz_":'),
    ('"input_tokens":', '"input_tokens":5e3,"zz_":'), ('"input_tokens":', '"input_tokens":18446744073709551616,"zz_":'),
    ('"input_tokens":', '"input_tokens":-5,"zz_":'), ('"usage":{', '"usage":{"input_tokens":"7",'),
    ('"event_id":', '"event_id":42,"zz_":'), ('"model":', '"model":"gpt-4o","model":'),
    ('"model":', '"model":"gpt-4o-mini","model_":'), ('"source":', '"unexpected":1,"source":'),
    ('"batch":false', '"batch":null'), ('"batch":false', '"batch":0'), ('"batch":false', '"batch":"false"'),
    ('"operation":"chat"', '"operation":null'), ('"status":"ok"', '"status" :"ok"'),
    ('"status":"ok"', '"status": "ok"'), ('"ts":"', '"ts":"\\u0032'), ('"source":"', '"source":"\\u0041'),
    ('"tags":{}', '"tags":{"env":"prod"}'), ('"tags":{}', '"tags":{"env":5}'), ('"tags":{}', '"tags":[]'),
    ('"attribution":{', '"attribution":{"department":"x",'), ('"usage":{', '"usage":{"tool_requests":{"web_search":1},'),
    ('"latency_ms":', '"latency_ms":"5","zz_":'), (',"batch":', ',"content":{"prompt":"hi"},"batch":'),
    (',"batch":', ',"correlation":{"response_id":5},"batch":'), (',"batch":', ',"correlation":{},"batch":'),
    (',"batch":', ',"correlation":{"span_id":"' + "s" * 33 + '"},"batch":'),
    (',"batch":', ',"reported_cost_usd":"0.5","batch":'), (',"batch":', ',"service_tier":true,"batch":'),
    ('"provider":"', '"provider":"\u00e9'), ('"team":"', '"team":"caf\u00e9 '), ('"ts":"', '"ts":"0'),
    ('"output_tokens":', '"output_tokens":0,"output_tokens":'),
    ('"tags":{"', '"tags":{"dup":"1","dup":"2","'), ('"tags":{"', '"tags":{"sp": "1","'), ('"tags":{"', '"tags":{"n":1,"'),
    ('"tags":{}', '"tags":{"a":"b"} '), ('"tags":{}', '"tags":{"a":{}}'), ('"usage":{', '"usage":{"tags":{"a":"b"},'),
]

_ABSENT = object()  # no correlation key at all (None is a correlation of null)
CORRELATION_LIMITS = {"response_id": 256, "request_id": 256, "trace_id": 64, "span_id": 32}


def tiered_versions(book: PriceBook) -> list[tuple[str, str, datetime, tuple[int, ...]]]:
    """(provider, model, effective_from, thresholds) of every version with input tiers or a thinking price."""
    return [(entry.provider, entry.model, version.effective_from, version.thresholds)
            for entry in book.entries.values() for version in entry.versions
            if version.input_tiers or version.prices_thinking]


__all__ = ["Corpus"]
