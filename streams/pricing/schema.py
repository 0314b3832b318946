"""Catalog data model: YAML specs (validated with pydantic, errors name the field) and the runtime objects
the price book computes with (plain classes, resolved once at load)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from typing_extensions import Annotated

from tokenmeter.events import ToolRequestKind

# Per-1M-token price fields, in the order a breakdown lists them.
TOKEN_FIELDS = ("input", "cached_input", "cache_write_5m", "cache_write_1h", "output", "reasoning")
SERVICE_TIERS = ("batch", "flex", "priority")
MILLION = Decimal(1_000_000)
THOUSAND = Decimal(1_000)


class CatalogError(ValueError):
    """A catalog, import or overrides file that cannot be used; the message names the file and field."""


def _to_decimal(value: Any) -> Decimal:
    # Prices are written as strings ("2.50") so no YAML or JSON parser turns them into binary floats.
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError(f"write prices as quoted decimal strings, e.g. \"2.50\" (got {value!r})")
    if isinstance(value, (int, Decimal)):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"not a decimal number: {value!r}") from None
    else:
        raise ValueError(f"expected a decimal string, got {type(value).__name__}")
    if not result.is_finite() or result < 0:
        raise ValueError(f"price must be a finite non-negative number, got {value!r}")
    return result


Price = Annotated[Decimal, BeforeValidator(_to_decimal)]


def _to_utc(value: Any) -> datetime:
    """`2025-09-05` means midnight UTC; a datetime without zone is UTC too."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=timezone.utc)
    if isinstance(value, str):
        text = value.strip()
        parsed = datetime.fromisoformat(text)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    raise ValueError(f"expected a date like 2025-01-31, got {value!r}")


UtcDatetime = Annotated[datetime, BeforeValidator(_to_utc)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenPricesSpec(_Spec):
    input: Price | None = None
    cached_input: Price | None = None
    cache_write_5m: Price | None = None
    cache_write_1h: Price | None = None
    output: Price | None = None
    reasoning: Price | None = None

    def given(self) -> dict[str, Decimal]:
        return {name: getattr(self, name) for name in TOKEN_FIELDS if getattr(self, name) is not None}


class LongContextSpec(TokenPricesSpec):
    above_input_tokens: int = Field(gt=0)


class TierSpec(TokenPricesSpec):
    """A service tier: `multiplier` of the standard prices, or explicit prices (with their own long_context)."""

    multiplier: Price | None = None
    long_context: TokenPricesSpec | None = None

    @model_validator(mode="after")
    def _one_form(self) -> "TierSpec":
        if self.multiplier is not None and (self.given() or self.long_context):
            raise ValueError("give either multiplier or explicit prices, not both")
        if self.multiplier is None and not self.given():
            raise ValueError("give a multiplier or explicit prices")
        return self


class VersionSpec(TokenPricesSpec):
    effective_from: UtcDatetime | None = None
    request: Price | None = None  # USD per request
    long_context: LongContextSpec | None = None
    batch: TierSpec | None = None
    flex: TierSpec | None = None
    priority: TierSpec | None = None
    source: str | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> "VersionSpec":
        if self.input is None or self.output is None:
            raise ValueError("input and output prices are required (write \"0\" for a free part)")
        base = set(self.given())
        problems = []
        if self.long_context and (missing := base - set(self.long_context.given())):
            problems.append(f"long_context lacks {sorted(missing)} (give every price the base gives)")
        for tier in SERVICE_TIERS:
            spec: TierSpec | None = getattr(self, tier)
            if spec is None or spec.multiplier is not None:
                continue
            if missing := base - set(spec.given()):
                problems.append(f"{tier} lacks {sorted(missing)}")
            if self.long_context and spec.long_context is None:
                problems.append(f"{tier} needs its own long_context prices (or use a multiplier)")
            elif self.long_context and (missing := base - set(spec.long_context.given())):
                problems.append(f"{tier}.long_context lacks {sorted(missing)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class EntrySpec(_Spec):
    aliases: list[str] = Field(default_factory=list)
    match: list[str] = Field(default_factory=list)  # full-match regexes over lower-cased model names
    mode: str = "chat"
    versions: list[VersionSpec] | None = None
    based_on: str | None = None  # "provider/model": same prices (times `multiplier`), e.g. Azure = OpenAI
    multiplier: Price | None = None
    tiers: list[str] | None = None  # with based_on: which service tiers carry over (default: all)
    source: str | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _has_prices(self) -> "EntrySpec":
        if not self.versions and not self.based_on:
            raise ValueError("give versions or based_on")
        if self.multiplier is not None and not self.based_on:
            raise ValueError("multiplier only applies with based_on")
        for pattern in self.match:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"bad match regex {pattern!r}: {exc}") from None
        for tier in self.tiers or []:
            if tier not in SERVICE_TIERS:
                raise ValueError(f"unknown tier {tier!r}; use {list(SERVICE_TIERS)}")
        return self


class FeeVersionSpec(_Spec):
    """A per-request fee (server-side tool use) in force from `effective_from`: USD per 1,000 requests.
    `models` (full-match regexes over lower-cased catalog model names) limits it to some models; a matching
    model-specific fee wins over the provider-wide one in force at the same time."""

    effective_from: UtcDatetime
    per_1000: Price
    models: list[str] | None = None
    source: str | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _patterns(self) -> "FeeVersionSpec":
        for pattern in self.models or []:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"bad models regex {pattern!r}: {exc}") from None
        return self


class ProviderBlockSpec(_Spec):
    provider: str | None = None
    first_party: bool = False  # the model maker's own API: used when an event's provider is not in the catalog
    source: str | None = None
    models: dict[str, EntrySpec] = Field(default_factory=dict)
    # Per-request fees by tool request kind (tokenmeter.events.TOOL_REQUEST_KINDS).
    fees: dict[ToolRequestKind, list[FeeVersionSpec]] = Field(default_factory=dict)


# Runtime objects ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeeVersion:
    """USD per single request of one tool kind, from `effective_from` on (per_1000 / 1000, kept exact)."""

    effective_from: datetime
    per_1000: Decimal
    patterns: tuple[re.Pattern[str], ...] = ()  # empty: every model of the provider
    source: str | None = None
    notes: str | None = None

    @property
    def per_request(self) -> Decimal:
        return self.per_1000 / THOUSAND

    def applies_to(self, model: str) -> bool:
        return not self.patterns or any(p.fullmatch(model) for p in self.patterns)


@dataclass(frozen=True)
class PriceSet:
    """Fully resolved USD prices per token for one (version, tier, context size)."""

    per_token: dict[str, Decimal]  # every TOKEN_FIELDS key
    request: Decimal


def fill_defaults(given: dict[str, Decimal]) -> dict[str, Decimal]:
    """Missing parts cost what they would without the feature: no cache discount means cache reads and
    writes cost the input price; no separate reasoning price means reasoning costs the output price."""
    filled = dict(given)
    filled.setdefault("cached_input", filled["input"])
    filled.setdefault("cache_write_5m", filled["input"])
    filled.setdefault("cache_write_1h", filled["cache_write_5m"])
    filled.setdefault("reasoning", filled["output"])
    return filled


@dataclass
class Tier:
    multiplier: Decimal | None
    prices: dict[str, Decimal]
    long_context: dict[str, Decimal] | None


@dataclass
class PriceVersion:
    effective_from: datetime
    prices: dict[str, Decimal]  # as given (input and output at least)
    request: Decimal | None = None
    long_context_above: int | None = None
    long_context: dict[str, Decimal] | None = None
    tiers: dict[str, Tier] = field(default_factory=dict)
    source: str | None = None
    notes: str | None = None
    _cache: dict[tuple[str, bool], PriceSet | str] = field(default_factory=dict, repr=False, compare=False)

    def price_set(self, tier: str, long_context: bool) -> PriceSet | str:
        """Prices for `tier` ('standard', 'batch', 'flex', 'priority'); a reason string if there are none."""
        key = (tier, long_context)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = self._compute(tier, long_context)
        return cached

    def _compute(self, tier: str, long_context: bool) -> PriceSet | str:
        base = self.long_context if long_context else self.prices
        if base is None:  # callers only ask for long context when a threshold exists
            return "no long-context prices"
        request = self.request or Decimal(0)
        if tier == "standard":
            return _per_token(fill_defaults(base), request)
        spec = self.tiers.get(tier)
        if spec is None:
            return f"no {tier} price"
        if spec.multiplier is not None:
            return _per_token({k: v * spec.multiplier for k, v in fill_defaults(base).items()}, request)
        prices = spec.long_context if long_context else spec.prices
        if prices is None:
            return f"no {tier} price above {self.long_context_above} input tokens"
        return _per_token(fill_defaults(prices), request)

    def flatten(self) -> dict[str, Decimal]:
        """Every effective per-1M price, keyed like `batch.long_context.input`, for diffs."""
        flat: dict[str, Decimal] = {}
        for tier in ("standard", *SERVICE_TIERS):
            for long_context in (False, True) if self.long_context else (False,):
                priced = self.price_set(tier, long_context)
                if isinstance(priced, str):
                    continue
                prefix = ("" if tier == "standard" else f"{tier}.") + ("long_context." if long_context else "")
                for name, value in priced.per_token.items():
                    flat[prefix + name] = (value * MILLION).normalize()
        if self.long_context_above:
            flat["long_context.above_input_tokens"] = Decimal(self.long_context_above)
        if self.request:
            flat["request"] = self.request
        return flat


def _per_token(per_million: dict[str, Decimal], request: Decimal) -> PriceSet:
    return PriceSet({k: v / MILLION for k, v in per_million.items()}, request)


def _scaled(prices: dict[str, Decimal] | None, multiplier: Decimal | None) -> dict[str, Decimal] | None:
    if prices is None:
        return None
    return dict(prices) if multiplier is None else {k: v * multiplier for k, v in prices.items()}


def version_from_spec(spec: VersionSpec, default_source: str | None) -> PriceVersion:
    tiers = {}
    for name in SERVICE_TIERS:
        tier: TierSpec | None = getattr(spec, name)
        if tier is not None:
            tiers[name] = Tier(
                multiplier=tier.multiplier,
                prices=tier.given(),
                long_context=tier.long_context.given() if tier.long_context else None,
            )
    return PriceVersion(
        effective_from=spec.effective_from,
        prices=spec.given(),
        request=spec.request,
        long_context_above=spec.long_context.above_input_tokens if spec.long_context else None,
        long_context=spec.long_context.given() if spec.long_context else None,
        tiers=tiers,
        source=spec.source or default_source,
        notes=spec.notes,
    )


def derive_version(base: PriceVersion, multiplier: Decimal | None, tiers: list[str] | None, source: str | None,
                   notes: str | None) -> PriceVersion:
    """A copy of `base` for a reseller entry (`based_on`): prices times `multiplier`, chosen tiers only.
    Tier multipliers stay as they are (they are relative to the already scaled standard prices)."""
    kept = {k: v for k, v in base.tiers.items() if tiers is None or k in tiers}
    return PriceVersion(
        effective_from=base.effective_from,
        prices=_scaled(base.prices, multiplier),
        request=base.request,
        long_context_above=base.long_context_above,
        long_context=_scaled(base.long_context, multiplier),
        tiers={k: Tier(t.multiplier, _scaled(t.prices, multiplier), _scaled(t.long_context, multiplier))
               for k, t in kept.items()},
        source=source or base.source,
        notes=notes or base.notes,
    )
