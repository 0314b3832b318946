"""The price book: resolve an event's model, pick the price version in force at the event's time, the
service tier and context tier of the call, apply a negotiated rule, and cost every usage part exactly.

Input-length tiers: a version may give several strictly rising thresholds (`input_tiers`; `long_context` is the
one-threshold form). The WHOLE call, every part of it, is priced at the tier of the highest threshold its
`input_tokens` exceed (strictly: a call of exactly the threshold stays below it), as Alibaba Model Studio and
Google bill. Thresholds are written in tokens as the provider's billing page defines them ("32K" on Alibaba's
pages is 32,768 tokens: 32K = 32 x 1,024, see docs/pricing.md).

Thinking-mode output: a price block may give `thinking_output` instead of `reasoning`. When a call has
`reasoning_tokens > 0`, ALL its output tokens, visible and reasoning, are priced at `thinking_output` (the
`output` and `reasoning` lines both at that rate), as Alibaba bills Qwen3 hybrid models (qwen-plus, qwen-turbo,
qwen-flash, open-weight Qwen3) and Google billed the Gemini 2.5 Flash preview. Its limit: usage logs do not
carry the request's `enable_thinking` / thinking budget, so "reasoning tokens > 0" is the rule; a thinking call
that emitted no reasoning tokens (or whose gateway dropped the count) is priced at the non-thinking `output`
rate. Both rules combine: the thinking rate of the call's input tier applies.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Iterable, Literal, Mapping

import orjson

from tokenmeter.events import TOOL_REQUEST_KINDS, PriceRef, Usage, UsageEvent
from tokenmeter.timefmt import iso_effective

from .book_cache import cached_build
from .catalog import BUNDLED_CATALOG_DIR, CatalogBuilder, CatalogEntry, catalog_files
from .overrides import Overrides, load_overrides
from .resolve import Resolution, Resolver
from .schema import PriceSet, PriceVersion

# Costs keep 12 decimal places (a cache read of one token at $0.00875/1M with a 12.5% discount is
# 7.65625e-9 USD); each line is rounded once, and the total is the sum of the rounded lines, so a
# breakdown always adds up to its total.
COST_QUANTUM = Decimal("1e-12")
ZERO = Decimal(0)
# Token parts, the flat per-request price, then one line per server-side tool request kind (its fee).
BREAKDOWN_PARTS = ("input", "cached_input", "cache_write_5m", "cache_write_1h", "output", "reasoning", "request",
                   *TOOL_REQUEST_KINDS)
# Names providers use for the ordinary tier.
STANDARD_TIERS = frozenset({"", "default", "auto", "standard", "on_demand", "on-demand", "standard_only"})
_MAX_RESOLUTION_CACHE = 100_000


@dataclass(frozen=True)
class PriceResult:
    cost_usd: Decimal
    breakdown: dict[str, Decimal] = field(default_factory=dict)
    status: Literal["priced", "unpriced"] = "priced"
    reason: str | None = None
    ref: PriceRef | None = None


def unpriced(reason: str, ref: PriceRef | None = None) -> PriceResult:
    return PriceResult(ZERO, {}, "unpriced", reason, ref)


def service_tier_of(event: UsageEvent) -> str:
    """'standard', 'batch', 'flex', 'priority', or another name the catalog will not know."""
    if event.batch:
        return "batch"  # the Batch API has one price whatever service_tier says
    tier = (event.service_tier or "").strip().lower()
    return "standard" if tier in STANDARD_TIERS else tier


def cost_lines(usage: Usage, prices: PriceSet, factor: Decimal | None, bill_request: bool) -> dict[str, Decimal]:
    """Cost per usage part. Cache reads and writes are parts of input_tokens and reasoning is part of
    output_tokens, so each token is priced exactly once: uncached input = input - cached - cache writes."""
    write_1h = usage.cache_write_1h_tokens
    counts = (
        ("input", usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens),
        ("cached_input", usage.cached_input_tokens),
        ("cache_write_5m", usage.cache_write_tokens - write_1h),
        ("cache_write_1h", write_1h),
        ("output", usage.output_tokens - usage.reasoning_tokens),
        ("reasoning", usage.reasoning_tokens),
    )
    per_token = prices.per_token
    lines: dict[str, Decimal] = {}
    for part, tokens in counts:
        if tokens:
            amount = tokens * per_token[part]
            if factor is not None:
                amount *= factor
            lines[part] = amount.quantize(COST_QUANTUM, ROUND_HALF_EVEN)
    if bill_request and prices.request:
        amount = prices.request * factor if factor is not None else prices.request
        lines["request"] = amount.quantize(COST_QUANTUM, ROUND_HALF_EVEN)
    return lines


def fee_lines(usage: Usage, entry: CatalogEntry, ts: datetime, factor: Decimal | None) -> dict[str, Decimal] | str:
    """One cost line per tool request kind: requests x (USD per 1,000 / 1,000), times a negotiated factor,
    rounded once like every other line. A kind the catalog has no fee for is a reason string: the caller
    prices the event as unpriced rather than leave a billed fee at $0."""
    lines: dict[str, Decimal] = {}
    for kind, count in (usage.tool_requests or {}).items():
        fee = entry.fee_at(kind, ts)
        if fee is None:
            return f"no {kind} fee in force at {ts.isoformat()} ({count} request(s))"
        amount = count * fee.per_request
        if factor is not None:
            amount *= factor
        if amount:
            lines[kind] = amount.quantize(COST_QUANTUM, ROUND_HALF_EVEN)
    return lines


class PriceBook:
    def __init__(self, entries: Mapping[str, CatalogEntry], resolver: Resolver, catalog_version: str,
                 overrides: Overrides | None = None):
        self.entries = entries
        self.resolver = resolver
        self.catalog_version = catalog_version
        self.overrides = overrides
        self._resolutions: dict[tuple[str, str], Resolution] = {}
        self._refs: dict[tuple[str, int, str | None], PriceRef] = {}

    def resolve(self, provider: str, model: str) -> Resolution:
        key = (provider, model)
        found = self._resolutions.get(key)
        if found is None:
            if len(self._resolutions) >= _MAX_RESOLUTION_CACHE:  # bound memory against unbounded model names
                self._resolutions.clear()
            found = self._resolutions[key] = self.resolver.resolve(provider, model)
        return found

    def _price_ref(self, entry_key: str, version: PriceVersion, override: str | None) -> PriceRef:
        """One PriceRef per entry, version and override (not per event: building it was ~10% of the hot path).
        Shared instances are never mutated."""
        key = (entry_key, id(version), override)
        ref = self._refs.get(key)
        if ref is None:
            ref = self._refs[key] = PriceRef.model_construct(
                entry=entry_key,
                effective_from=iso_effective(version.effective_from),
                catalog_version=self.catalog_version,
                override=override,
            )
        return ref

    def price(self, event: UsageEvent, usage: Usage) -> PriceResult:
        resolution = self.resolve(event.provider, event.model)
        entry = resolution.entry
        if entry is None:
            return unpriced(resolution.reason or "unknown model")
        rule = self.overrides.rule_for(event.attribution.org, entry, event.ts) if self.overrides else None
        version: PriceVersion | None
        if rule is not None and rule.prices is not None:
            version = rule.prices
        else:
            version = entry.version_at(event.ts)
            if version is None:
                first = iso_effective(entry.versions[0].effective_from) if entry.versions else "never"
                return unpriced(
                    f"no price for {entry.key} in force at {event.ts.isoformat()} (first price from {first})")
        ref = self._price_ref(entry.key, version, rule.name if rule else None)
        tier = service_tier_of(event)
        prices = version.price_set(tier, version.input_tier_for(usage.input_tokens), usage.reasoning_tokens > 0)
        if isinstance(prices, str):
            asked = f"service_tier {event.service_tier!r}" if tier != "batch" else "batch"
            return unpriced(f"{entry.key}: {prices} ({asked})", ref)
        factor = rule.factor if rule is not None else None
        lines = cost_lines(usage, prices, factor, bill_request=event.status == "ok")
        if usage.tool_requests:
            fees = fee_lines(usage, entry, event.ts, factor)
            if isinstance(fees, str):
                return unpriced(f"{entry.key}: {fees}", ref)
            lines.update(fees)
        return PriceResult(sum(lines.values(), ZERO), lines, "priced", None, ref)


# Loading ------------------------------------------------------------------------------------------------

def imported_catalog_dir(data_dir: Path) -> Path:
    """Where imports (LiteLLM cost map) are written and where load_price_book looks for them."""
    return Path(data_dir) / "pricing"


def _fingerprint(paths: Iterable[Path]) -> tuple:
    stats = []
    for path in paths:
        try:
            st = path.stat()
            stats.append((str(path), st.st_mtime_ns, st.st_size))
        except OSError:
            stats.append((str(path), None, None))
    return tuple(stats)


_book_cache: dict[tuple, PriceBook] = {}
_book_lock = threading.Lock()


def load_price_book(extra_paths: Iterable[str | Path] = (), overrides_path: str | Path | None = None,
                    azure_deployments: Mapping[str, str] | None = None, data_dir: str | Path | None = None,
                    catalog_dir: str | Path = BUNDLED_CATALOG_DIR) -> PriceBook:
    """The bundled catalog, then imports under `data_dir/pricing/`, then `extra_paths` (files or
    directories), then the overrides' custom models, each layer on top of the previous.

    Cached: the same arguments and unchanged files give the same PriceBook object; editing a file gives a
    fresh one on the next call. Across processes the built book is kept on disk, keyed by the files' contents
    (streams/pricing/book_cache.py).
    """
    layers: list[list[Path]] = [catalog_files([Path(catalog_dir)])]
    if data_dir is not None and imported_catalog_dir(Path(data_dir)).is_dir():
        layers.append(catalog_files([imported_catalog_dir(Path(data_dir))]))
    layers.append(catalog_files(Path(p) for p in extra_paths))
    overrides_file = Path(overrides_path) if overrides_path else None
    deployments = tuple(sorted((azure_deployments or {}).items()))
    all_files = [f for layer in layers for f in layer] + ([overrides_file] if overrides_file else [])
    key = (_fingerprint(all_files), deployments)
    with _book_lock:
        book = _book_cache.get(key)
        if book is None:
            book = _book_cache[key] = cached_build(  # another process may have built it: streams/pricing/book_cache.py
                layers, overrides_file, dict(deployments),
                lambda: _build_book(layers, overrides_file, dict(deployments)), PriceBook)
        return book


def _build_book(layers: list[list[Path]], overrides_file: Path | None, deployments: dict[str, str]) -> PriceBook:
    builder = CatalogBuilder()
    for files in layers:
        builder.new_layer()
        for path in files:
            builder.add_file(path)
    overrides = load_overrides(overrides_file) if overrides_file else None
    if overrides is not None:
        builder.new_layer()
        builder.digest.update(overrides.raw)
        if overrides.custom_models:
            builder.add_document({"providers": overrides.custom_models}, f"{overrides.origin}#custom_models")
    builder.digest.update(orjson.dumps(deployments, option=orjson.OPT_SORT_KEYS))
    entries, claims = builder.build()
    resolver = Resolver(entries, claims, deployments)
    return PriceBook(entries, resolver, builder.version, overrides)
