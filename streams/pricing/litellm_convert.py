"""Conversion of LiteLLM cost-map entries (`model_prices_and_context_window.json`) to catalog versions.

Prices arrive as Decimals (the JSON is parsed with `parse_float=Decimal`) and are scaled by 10^6 exactly:
`2.5e-06` per token is `2.5` per 1M. Parts a tier or long-context tier omits are derived from the base
prices by the tier's own input (or output) ratio and say so in the version's notes.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .catalog import _format_validation
from .resolve import canonical_provider
from .schema import SERVICE_TIERS, TOKEN_FIELDS, CatalogError, PriceVersion, VersionSpec

PRICED_MODES = {"chat", "completion", "responses", "embedding", None}
LITELLM_PROVIDERS = {"together_ai": "together", "text-completion-openai": "openai", "azure_text": "azure"}
FIELD_KEYS = {
    "input": "input_cost_per_token",
    "cached_input": "cache_read_input_token_cost",
    "cache_write_5m": "cache_creation_input_token_cost",
    "cache_write_1h": "cache_creation_input_token_cost_above_1hr",
    "output": "output_cost_per_token",
    "reasoning": "output_cost_per_reasoning_token",
}
TIER_SUFFIXES = {"batch": "_batches", "flex": "_flex", "priority": "_priority"}
# Providers whose pages write input-length tiers in K = 1,024 tokens (Alibaba: "32K" is 32,768, docs/pricing.md);
# LiteLLM's `tiered_pricing` ranges round them to thousands (32000, 256000), so a whole number of thousands is
# read back as that many K.
KIBI_TIER_PROVIDERS = {"dashscope"}
_THRESHOLD = re.compile(r"_above_(\d+)k_tokens")
_DERIVED_DIGITS = Decimal("1e-10")


def _per_million(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        return None
    return (Decimal(value).scaleb(6)).normalize()


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _prices(raw: dict[str, Any], suffix: str) -> dict[str, Decimal]:
    found = {}
    for name, key in FIELD_KEYS.items():
        value = _per_million(raw.get(key + suffix))
        if value is None and name == "cached_input" and not suffix:
            value = _per_million(raw.get("input_cost_per_token_cache_hit"))  # DeepSeek's spelling
        if value is not None:
            found[name] = value
    return found


def _complete(partial: dict[str, Decimal], base: dict[str, Decimal], notes: list[str],
              label: str) -> dict[str, Decimal]:
    """Fill prices a tier omits from the base prices scaled by the tier's own input (or output) ratio."""
    missing = [k for k in base if k not in partial]
    if not missing:
        return partial
    anchor = "input" if "input" in partial and base.get("input") else "output"
    if anchor not in partial or not base.get(anchor):
        return {}
    ratio = partial[anchor] / base[anchor]
    filled = dict(partial)
    for name in missing:
        filled[name] = (base[name] * ratio).quantize(_DERIVED_DIGITS).normalize()
    notes.append(f"{label} {', '.join(missing)} derived from the {anchor} ratio")
    return filled


def _uniform_ratio(tier: dict[str, Decimal], base: dict[str, Decimal]) -> Decimal | None:
    anchor = next((k for k in ("input", "output") if base.get(k)), None)
    if anchor is None or anchor not in tier:
        return None
    ratio = (tier[anchor] / base[anchor]).normalize()
    return ratio if all(base[k] * ratio == tier.get(k) for k in base) and set(tier) <= set(base) else None


def _threshold(start: Any, provider: str) -> int | None:
    """A `tiered_pricing` range's start as an input-token threshold (None: not a whole number of tokens)."""
    if isinstance(start, bool) or not isinstance(start, (int, Decimal)) or Decimal(start) != int(start):
        return None
    tokens = int(start)
    return tokens // 1000 * 1024 if provider in KIBI_TIER_PROVIDERS and tokens % 1000 == 0 else tokens


def _tiered_prices(raw: dict[str, Any], notes: list[str]) -> tuple[dict[str, Decimal], list[tuple[int, dict]]] | None:
    """An entry priced only by `tiered_pricing` (a list of `{range: [start, end], <token prices>}`, the whole call at
    the tier its input length falls in): the first tier's prices and (threshold, prices) of the others, or None
    when the list is not of that form (e.g. tiers by number of search results)."""
    tiers = raw.get("tiered_pricing")
    if not isinstance(tiers, list) or not tiers or not all(isinstance(t, dict) for t in tiers):
        return None
    provider = _provider_of(str(raw.get("litellm_provider") or ""))
    ranged = []
    for tier in tiers:
        bounds = tier.get("range")
        if not isinstance(bounds, list) or len(bounds) != 2:
            return None
        ranged.append((bounds[0], _prices(tier, "")))
    ranged.sort(key=lambda item: item[0])
    (first_start, base), rest = ranged[0], ranged[1:]
    if first_start != 0 or "input" not in base:
        return None
    above = []
    for start, prices in rest:
        threshold = _threshold(start, provider)
        if threshold is None or threshold <= 0 or (above and threshold <= above[-1][0]) or not prices:
            return None
        above.append((threshold, prices))
    starts = " / ".join(f"{int(start):,}" for start, _ in rest)
    read = " / ".join(f"{threshold:,}" for threshold, _ in above)
    notes.append(f"input-length tiers from the map's tiered_pricing (the whole call at its tier's prices), "
                 f"ranges starting at {starts} tokens" + (f", read as {read} (the provider's K is 1,024 tokens)"
                                                           if read != starts else ""))
    return base, above


def convert_entry(raw: dict[str, Any], effective_from: str, source: str) -> tuple[dict[str, Any] | None, str | None]:
    """One LiteLLM map entry as a catalog entry spec, or (None, why it was skipped)."""
    mode = raw.get("mode")
    if mode not in PRICED_MODES:
        return None, f"mode {mode!r} is not token-priced"
    base = _prices(raw, "")
    notes: list[str] = []
    input_tiers: list[tuple[int, dict]] = []
    if "input" not in base and (tiered := _tiered_prices(raw, notes)) is not None:
        base, input_tiers = tiered  # the flat keys state no price: the first tier is the base
    if "input" not in base:
        return None, "no input_cost_per_token"
    if "output" not in base:
        if mode != "embedding":
            return None, "no output_cost_per_token"
        base["output"] = Decimal(0)
    if base.get("reasoning") == base["output"]:
        del base["reasoning"]
    version: dict[str, Any] = {"effective_from": effective_from, **{k: _text(v) for k, v in base.items()}}
    if input_tiers:
        blocks = []
        for threshold, prices in input_tiers:
            if "output" not in prices and mode == "embedding":
                prices = dict(prices, output=Decimal(0))
            prices = _complete({k: v for k, v in prices.items() if k in base}, base, notes, f"above_{threshold}")
            if not prices:
                return None, f"tiered_pricing tier above {threshold} states neither input nor output"
            blocks.append({"above_input_tokens": threshold, **{k: _text(v) for k, v in prices.items()}})
        # one threshold is the catalog's long_context form; several are input_tiers
        version.update({"long_context": blocks[0]} if len(blocks) == 1 else {"input_tiers": blocks})
    thresholds = [] if input_tiers else sorted({int(m.group(1)) for key in raw for m in [_THRESHOLD.search(key)] if m})
    long_suffix = f"_above_{thresholds[0]}k_tokens" if thresholds else None
    long_prices: dict[str, Decimal] = {}
    if long_suffix:
        long_prices = _complete(_prices(raw, long_suffix), base, notes, "long_context")
        if long_prices:
            version["long_context"] = {"above_input_tokens": thresholds[0] * 1000,
                                       **{k: _text(v) for k, v in long_prices.items() if k in base}}
        if len(thresholds) > 1:
            notes.append(f"only the {thresholds[0]}k tier imported (map also has {thresholds[1:]})")
    for tier, suffix in TIER_SUFFIXES.items():
        given = _prices(raw, suffix)
        if not given:
            continue
        tier_prices = _complete(given, base, notes, tier)
        if not tier_prices:
            continue
        tier_long = {}
        if long_prices:
            tier_long = _prices(raw, long_suffix + suffix)
            ratio = (tier_prices.get("input") or Decimal(0)) / base["input"] if base["input"] else Decimal(1)
            tier_long = _complete(tier_long, long_prices, notes, f"{tier}.long_context") if tier_long else {
                k: (v * ratio).quantize(_DERIVED_DIGITS).normalize() for k, v in long_prices.items()}
        ratio = _uniform_ratio(tier_prices, base)
        if ratio is not None and (not long_prices or _uniform_ratio(tier_long, long_prices) == ratio):
            version[tier] = {"multiplier": _text(ratio)}
        else:
            version[tier] = {k: _text(v) for k, v in tier_prices.items() if k in base}
            if long_prices:
                version[tier]["long_context"] = {k: _text(v) for k, v in tier_long.items() if k in base}
    per_request = _per_million(raw.get("input_cost_per_request"))
    if per_request:
        version["request"] = _text(per_request.scaleb(-6))
    version["source"] = str(raw.get("source") or source)
    if notes:
        version["notes"] = "; ".join(notes)
    return {"mode": mode or "chat", "versions": [version]}, None


def _model_id(key: str, litellm_provider: str) -> str:
    name = key.strip().lower()
    for prefix in (litellm_provider.lower() + "/", canonical_provider(litellm_provider) + "/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _provider_of(litellm_provider: str) -> str:
    name = litellm_provider.strip().lower()
    if name.startswith("vertex_ai"):
        return "vertex_ai"
    return LITELLM_PROVIDERS.get(name, canonical_provider(name))


class _DownloadError(Exception):
    """An httpx.HTTPError of a cost map download (its message)."""


def _download(url: str) -> str:
    import httpx  # here, not at import: every process that prices imports this module, few ever download a map

    try:
        response = httpx.get(url, timeout=60, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise _DownloadError(str(exc)) from exc
    return response.text


def read_cost_map(source: str | Path) -> dict[str, Any]:
    text_source = str(source)
    try:
        text = _download(text_source) if text_source.startswith(("http://", "https://")) else Path(source).read_text()
        data = json.loads(text, parse_float=Decimal)
    except (OSError, _DownloadError, ValueError) as exc:
        raise CatalogError(f"{text_source}: cannot read the LiteLLM cost map: {exc}") from exc
    if not isinstance(data, dict):
        raise CatalogError(f"{text_source}: expected a JSON object of model entries")
    return data


def check_version(spec_version: dict[str, Any], origin: str) -> None:
    try:
        VersionSpec.model_validate(spec_version)
    except ValidationError as exc:
        raise CatalogError(f"{origin}: {_format_validation(exc)}") from None


def stated_prices(version: dict[str, Any]) -> dict[str, Decimal]:
    """The prices an imported version states, flattened like PriceVersion.flatten() (tier multipliers
    expanded), without the defaults the catalog would fill in: a part the map does not mention is not a
    difference."""
    base, long_raw = _decimals(version), version.get("long_context")
    long_prices = _decimals(long_raw)
    flat = dict(base)
    if long_raw:
        flat["long_context.above_input_tokens"] = Decimal(long_raw["above_input_tokens"])
        flat.update({f"long_context.{k}": v for k, v in long_prices.items()})
    for block in version.get("input_tiers") or ():  # keyed as PriceVersion.flatten() keys several thresholds
        flat.update({f"above_{block['above_input_tokens']}.{k}": v for k, v in _decimals(block).items()})
    for tier in SERVICE_TIERS:
        raw = version.get(tier)
        if not raw:
            continue
        if "multiplier" in raw:
            factor = Decimal(str(raw["multiplier"]))
            tier_base = {k: v * factor for k, v in base.items()}
            tier_long = {k: v * factor for k, v in long_prices.items()}
        else:
            tier_base, tier_long = _decimals(raw), _decimals(raw.get("long_context"))
        flat.update({f"{tier}.{k}": v for k, v in tier_base.items()})
        flat.update({f"{tier}.long_context.{k}": v for k, v in tier_long.items()})
    if "request" in version:
        flat["request"] = Decimal(str(version["request"]))
    return {k: v.normalize() for k, v in flat.items()}


def _decimals(raw: dict[str, Any] | None) -> dict[str, Decimal]:
    return {k: Decimal(str(raw[k])) for k in TOKEN_FIELDS if raw and k in raw}


def _texts(prices: dict[str, Decimal]) -> dict[str, str]:
    return {k: _text(prices[k]) for k in TOKEN_FIELDS if k in prices}


def merge_version(ours: PriceVersion, imported: dict[str, Any], effective_from: str, notes: str) -> dict[str, Any]:
    """A new catalog version: the catalog's version with the map's stated prices laid over it.

    Parts the map does not state keep the catalog's value; tiers the map does not list keep the catalog's
    tier (a multiplier then applies to the new base prices). Explicit tier and long-context prices are
    completed from the new base by their own input ratio, so the result is always a complete version.
    """
    derived: list[str] = []
    base = dict(ours.prices) | _decimals(imported)
    long_prices: dict[str, Decimal] | None = None
    threshold = ours.long_context_above
    if imported.get("long_context"):
        long_prices = dict(ours.long_context or {}) | _decimals(imported["long_context"])
        threshold = imported["long_context"]["above_input_tokens"]
    elif ours.long_context:
        long_prices = dict(ours.long_context)
    if long_prices is not None:
        long_prices = _complete(long_prices, base, derived, "long_context")
    version: dict[str, Any] = {"effective_from": effective_from, **_texts(base)}
    request = imported.get("request", ours.request)
    if request is not None:
        version["request"] = _text(Decimal(str(request)))
    if long_prices:
        version["long_context"] = {"above_input_tokens": threshold, **_texts(long_prices)}
    for tier in SERVICE_TIERS:
        if tier in imported:
            raw = imported[tier]
        elif tier in ours.tiers:
            kept = ours.tiers[tier]
            raw = {"multiplier": kept.multiplier} if kept.multiplier is not None else {
                **kept.prices, **({"long_context": kept.long_context} if kept.long_context else {})}
        else:
            continue
        if "multiplier" in raw:
            version[tier] = {"multiplier": _text(Decimal(str(raw["multiplier"])))}
            continue
        tier_prices = _complete(_decimals(raw), base, derived, tier)
        if not tier_prices:
            continue
        version[tier] = _texts(tier_prices)
        if long_prices:
            tier_long = _decimals(raw.get("long_context"))
            ratio = tier_prices["input"] / base["input"] if base["input"] else Decimal(1)
            tier_long = _complete(tier_long, long_prices, derived, f"{tier}.long_context") if tier_long else {
                k: (v * ratio).quantize(_DERIVED_DIGITS).normalize() for k, v in long_prices.items()}
            version[tier]["long_context"] = _texts(tier_long)
    version["source"] = imported.get("source") or ours.source
    version["notes"] = "; ".join([notes, *derived])
    return version


def _describe(old: dict[str, Decimal], new: dict[str, Decimal]) -> list[str]:
    """Differences in the parts the import states; parts it does not mention are not differences."""
    changes = []
    for name in sorted(new):
        before = old.get(name)
        if before is None or before.normalize() != new[name]:
            changes.append(f"{name}: {'-' if before is None else _text(before)} -> {_text(new[name])}")
    return changes
