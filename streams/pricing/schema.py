"""Catalog data model: YAML specs (validated with pydantic, errors name the field) and the runtime objects
the price book computes with (plain classes, resolved once at load)."""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from typing_extensions import Annotated

from tokenmeter.events import ToolRequestKind

# Per-1M-token price fields, in the order a breakdown lists them.
TOKEN_FIELDS = ("input", "cached_input", "cache_write_5m", "cache_write_1h", "output", "reasoning")
# Every price a block may give: the token parts, and the thinking-mode output price (see PriceVersion).
PRICE_FIELDS = (*TOKEN_FIELDS, "thinking_output")
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
    # Thinking mode: every output token (visible and reasoning) of a call with reasoning tokens costs this.
    thinking_output: Price | None = None

    def given(self) -> dict[str, Decimal]:
        return {name: getattr(self, name) for name in PRICE_FIELDS if getattr(self, name) is not None}

    @model_validator(mode="after")
    def _one_thinking_rule(self) -> "TokenPricesSpec":
        if self.reasoning is not None and self.thinking_output is not None:
            raise ValueError("give reasoning (a price per reasoning token) or thinking_output (all output of a "
                             "thinking call), not both")
        return self


class LongContextSpec(TokenPricesSpec):
    above_input_tokens: int = Field(gt=0)


class InputTierSpec(LongContextSpec):
    """One input-length tier: the whole call costs these prices when its input tokens exceed the threshold."""


def _check_thresholds(tiers: list[InputTierSpec], where: str) -> list[str]:
    thresholds = [t.above_input_tokens for t in tiers]
    if not thresholds:
        return [f"{where} is empty (leave it out for one price at every input length)"]
    if any(b <= a for a, b in zip(thresholds, thresholds[1:])):
        return [f"{where} thresholds must rise strictly, got {thresholds}"]
    return []


def _check_block(base: set[str], block: dict[str, Decimal], where: str) -> list[str]:
    problems = []
    if missing := base - set(block):
        problems.append(f"{where} lacks {sorted(missing)} (give every price the base gives)")
    if "thinking_output" in block and "thinking_output" not in base:
        problems.append(f"{where} gives thinking_output but the base version does not")
    return problems


class TierSpec(TokenPricesSpec):
    """A service tier: `multiplier` of the standard prices, or explicit prices (with their own long_context or
    input_tiers, one per threshold of the version, same thresholds)."""

    multiplier: Price | None = None
    long_context: TokenPricesSpec | None = None
    input_tiers: list[InputTierSpec] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> "TierSpec":
        if self.multiplier is not None and (self.given() or self.long_context or self.input_tiers):
            raise ValueError("give either multiplier or explicit prices, not both")
        if self.multiplier is None and not self.given():
            raise ValueError("give a multiplier or explicit prices")
        if self.long_context is not None and self.input_tiers is not None:
            raise ValueError("give long_context or input_tiers, not both")
        return self

    def input_blocks(self) -> list[TokenPricesSpec] | None:
        if self.input_tiers is not None:
            return list(self.input_tiers)
        return [self.long_context] if self.long_context is not None else None


class VersionSpec(TokenPricesSpec):
    effective_from: UtcDatetime | None = None
    request: Price | None = None  # USD per request
    long_context: LongContextSpec | None = None  # one threshold (the same as a one-element input_tiers)
    input_tiers: list[InputTierSpec] | None = None  # several thresholds, strictly rising
    batch: TierSpec | None = None
    flex: TierSpec | None = None
    priority: TierSpec | None = None
    source: str | None = None
    notes: str | None = None

    def thresholds(self) -> list[InputTierSpec]:
        if self.input_tiers is not None:
            return list(self.input_tiers)
        return [self.long_context] if self.long_context is not None else []

    @model_validator(mode="after")
    def _complete(self) -> "VersionSpec":
        if self.input is None or self.output is None:
            raise ValueError("input and output prices are required (write \"0\" for a free part)")
        if self.long_context is not None and self.input_tiers is not None:
            raise ValueError("give long_context (one threshold) or input_tiers, not both")
        base = set(self.given())
        problems = []
        if self.input_tiers is not None:
            problems += _check_thresholds(self.input_tiers, "input_tiers")
        name = "long_context" if self.long_context is not None else "input_tiers"
        tiers = self.thresholds()
        for i, spec in enumerate(tiers):
            where = name if name == "long_context" else f"input_tiers[{i}] (above {spec.above_input_tokens})"
            problems += _check_block(base, spec.given(), where)
        for tier in SERVICE_TIERS:
            spec: TierSpec | None = getattr(self, tier)
            if spec is None or spec.multiplier is not None:
                continue
            problems += _check_block(base, spec.given(), tier)
            blocks = spec.input_blocks()
            if tiers and blocks is None:
                problems.append(f"{tier} needs its own {name} prices (or use a multiplier)")
                continue
            if not tiers and blocks is not None:
                problems.append(f"{tier} gives input-length prices but the version has no threshold")
                continue
            if not tiers:
                continue
            if len(blocks) != len(tiers):
                problems.append(f"{tier}.input_tiers needs {len(tiers)} tiers, one per threshold of the version")
                continue
            for i, (block, version_tier) in enumerate(zip(blocks, tiers)):
                where = f"{tier}.long_context" if spec.long_context is not None else f"{tier}.input_tiers[{i}]"
                if isinstance(block, InputTierSpec) and block.above_input_tokens != version_tier.above_input_tokens:
                    problems.append(f"{where} threshold {block.above_input_tokens} differs from the version's "
                                    f"{version_tier.above_input_tokens}")
                problems += _check_block(base, block.given(), where)
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
    # The most output tokens one call can produce (the provider's documented limit): held for reservations that
    # name no max_output_tokens, and the most any reservation holds (streams/budgets/worst_case.py). Optional;
    # with based_on the base's limit carries over.
    max_output_tokens: int | None = Field(default=None, gt=0, strict=True)

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


def fill_defaults(given: dict[str, Decimal], thinking: bool = False) -> dict[str, Decimal]:
    """Missing parts cost what they would without the feature: no cache discount means cache reads and
    writes cost the input price; no separate reasoning price means reasoning costs the output price.
    A block with a `thinking_output` price prices a thinking call's output and reasoning at that rate."""
    filled = dict(given)
    thinking_output = filled.pop("thinking_output", None)
    if thinking and thinking_output is not None:
        filled["output"] = filled["reasoning"] = thinking_output
    filled.setdefault("cached_input", filled["input"])
    filled.setdefault("cache_write_5m", filled["input"])
    filled.setdefault("cache_write_1h", filled["cache_write_5m"])
    filled.setdefault("reasoning", filled["output"])
    return filled


@dataclass
class Tier:
    multiplier: Decimal | None
    prices: dict[str, Decimal]
    input_tiers: tuple[dict[str, Decimal], ...] = ()  # explicit prices: one per threshold of the version

    @property
    def long_context(self) -> dict[str, Decimal] | None:
        """The explicit prices above the first threshold (the one-threshold `long_context` form), or None."""
        return self.input_tiers[0] if self.input_tiers else None


@dataclass
class PriceVersion:
    """One effective-dated price version.

    `input_tiers` holds (threshold, prices) with strictly rising thresholds: a call whose input tokens exceed a
    threshold is priced whole at that tier's prices (the highest threshold exceeded wins); index 0 of
    `price_set` is the base prices, index i the i-th threshold. A price block may give `thinking_output`: a
    call with reasoning tokens is then priced with output and reasoning both at that rate.
    """

    effective_from: datetime
    prices: dict[str, Decimal]  # as given (input and output at least)
    request: Decimal | None = None
    input_tiers: tuple[tuple[int, dict[str, Decimal]], ...] = ()
    tiers: dict[str, Tier] = field(default_factory=dict)
    source: str | None = None
    notes: str | None = None
    _cache: dict[tuple[str, int, bool], PriceSet | str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def thresholds(self) -> tuple[int, ...]:
        return tuple(above for above, _ in self.input_tiers)

    @property
    def long_context_above(self) -> int | None:
        """The first input-length threshold (the one-threshold `long_context` form), or None."""
        return self.input_tiers[0][0] if self.input_tiers else None

    @property
    def long_context(self) -> dict[str, Decimal] | None:
        return self.input_tiers[0][1] if self.input_tiers else None

    @property
    def prices_thinking(self) -> bool:
        """Whether the version has a thinking-mode output price (validation puts it in every block if any)."""
        return "thinking_output" in self.prices

    def input_tier_for(self, input_tokens: int) -> int:
        """0 for the base prices, i when the input exceeds the i-th threshold but not the next one."""
        return bisect_left(self.thresholds, input_tokens) if self.input_tiers else 0

    def price_set(self, tier: str, input_tier: int = 0, thinking: bool = False) -> PriceSet | str:
        """Prices for `tier` ('standard', 'batch', 'flex', 'priority') at input tier `input_tier` (0: base; a bool
        works for one threshold), for a thinking call or not; a reason string if there are none."""
        key = (tier, int(input_tier), thinking and self.prices_thinking)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = self._compute(*key)
        return cached

    def _compute(self, tier: str, input_tier: int, thinking: bool) -> PriceSet | str:
        if input_tier > len(self.input_tiers):  # callers only ask for tiers that exist
            return f"no input tier {input_tier}"
        base = self.input_tiers[input_tier - 1][1] if input_tier else self.prices
        request = self.request or Decimal(0)
        if tier == "standard":
            return _per_token(fill_defaults(base, thinking), request)
        spec = self.tiers.get(tier)
        if spec is None:
            return f"no {tier} price"
        if spec.multiplier is not None:
            return _per_token({k: v * spec.multiplier for k, v in fill_defaults(base, thinking).items()}, request)
        if not input_tier:
            return _per_token(fill_defaults(spec.prices, thinking), request)
        if input_tier > len(spec.input_tiers):
            return f"no {tier} price above {self.input_tiers[input_tier - 1][0]} input tokens"
        return _per_token(fill_defaults(spec.input_tiers[input_tier - 1], thinking), request)

    def _prefix(self, input_tier: int) -> str:
        if not input_tier:
            return ""
        return "long_context." if len(self.input_tiers) == 1 else f"above_{self.input_tiers[input_tier - 1][0]}."

    def flatten(self) -> dict[str, Decimal]:
        """Every effective per-1M price, keyed like `batch.long_context.input` (several thresholds:
        `batch.above_32000.input`; thinking price: `thinking_output`), for diffs."""
        flat: dict[str, Decimal] = {}
        for tier in ("standard", *SERVICE_TIERS):
            for input_tier in range(len(self.input_tiers) + 1):
                priced = self.price_set(tier, input_tier)
                if isinstance(priced, str):
                    continue
                prefix = ("" if tier == "standard" else f"{tier}.") + self._prefix(input_tier)
                for name, value in priced.per_token.items():
                    flat[prefix + name] = (value * MILLION).normalize()
                thinking = self.price_set(tier, input_tier, thinking=True)
                if self.prices_thinking and not isinstance(thinking, str):
                    flat[prefix + "thinking_output"] = (thinking.per_token["output"] * MILLION).normalize()
        if len(self.input_tiers) == 1:
            flat["long_context.above_input_tokens"] = Decimal(self.input_tiers[0][0])
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
                input_tiers=tuple(block.given() for block in tier.input_blocks() or ()),
            )
    return PriceVersion(
        effective_from=spec.effective_from,
        prices=spec.given(),
        request=spec.request,
        input_tiers=tuple((t.above_input_tokens, t.given()) for t in spec.thresholds()),
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
        input_tiers=tuple((above, _scaled(prices, multiplier)) for above, prices in base.input_tiers),
        tiers={k: Tier(t.multiplier, _scaled(t.prices, multiplier),
                       tuple(_scaled(p, multiplier) for p in t.input_tiers))
               for k, t in kept.items()},
        source=source or base.source,
        notes=notes or base.notes,
    )
