"""Per-organisation negotiated prices and custom (self-hosted) models, from one YAML file.

```yaml
custom_models:                 # same shape as a catalog file's `providers:` mapping
  self-hosted:
    source: internal GPU cost model
    models:
      llama-3.1-8b-internal:
        versions:
          - {effective_from: 2025-01-01, input: "0.05", output: "0.10"}
negotiated:                    # one rule applies per event: the most specific match, then file order
  - name: acme-enterprise-2025 # recorded in PriceRef.override
    org: acme                  # attribution.org; omit for every org (e.g. our own enterprise agreement)
    providers: [openai]        # optional
    models: ["gpt-4o*", "anthropic/claude-*"]   # optional globs over entry key or model id
    effective_from: 2025-01-01 # optional; effective_until is exclusive
    effective_until: 2026-01-01
    discount_percent: "12.5"   # off every part of the price ...
  - name: acme-sonnet
    org: acme
    models: [anthropic/claude-sonnet-4-5]
    prices: {input: "2.70", cached_input: "0.27", output: "13.50"}   # ... or our own prices (catalog version schema)
```
Specificity: a rule naming an org beats one that does not; then one with providers/models beats one
without; ties go to the earlier rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from .catalog import CatalogEntry, _format_validation, read_yaml
from .schema import (
    CatalogError,
    Price,
    PriceVersion,
    UtcDatetime,
    VersionSpec,
    _Spec,
    version_from_spec,
)


class RuleSpec(_Spec):
    name: str | None = None
    org: str | None = None
    providers: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    effective_from: UtcDatetime | None = None
    effective_until: UtcDatetime | None = None
    discount_percent: Price | None = None
    prices: VersionSpec | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "RuleSpec":
        if (self.discount_percent is None) == (self.prices is None):
            raise ValueError("give exactly one of discount_percent or prices")
        if self.discount_percent is not None and self.discount_percent > 100:
            raise ValueError("discount_percent cannot exceed 100")
        if self.prices is not None and self.prices.effective_from is not None:
            raise ValueError("put effective_from on the rule, not inside prices")
        return self


class OverridesSpec(_Spec):
    custom_models: dict[str, Any] = Field(default_factory=dict)
    negotiated: list[RuleSpec] = Field(default_factory=list)


@dataclass
class Rule:
    name: str
    org: str | None
    providers: frozenset[str]
    models: tuple[str, ...]
    effective_from: datetime | None
    effective_until: datetime | None
    factor: Decimal | None  # 1 - discount
    prices: PriceVersion | None
    specificity: tuple[int, int]

    def applies(self, entry: CatalogEntry, ts: datetime) -> bool:
        if self.effective_from and ts < self.effective_from:
            return False
        if self.effective_until and ts >= self.effective_until:
            return False
        if self.providers and entry.provider not in self.providers:
            return False
        if self.models and not any(fnmatchcase(entry.key, p) or fnmatchcase(entry.model, p) for p in self.models):
            return False
        return True


class Overrides:
    def __init__(self, rules: list[Rule], custom_models: dict[str, Any], origin: str, raw: bytes):
        self.origin = origin
        self.raw = raw
        self.custom_models = custom_models
        self._by_org: dict[str | None, list[Rule]] = {}
        for rule in rules:
            self._by_org.setdefault(rule.org, []).append(rule)

    def rule_for(self, org: str | None, entry: CatalogEntry, ts: datetime) -> Rule | None:
        candidates = self._by_org.get(org, []) + self._by_org.get(None, []) if org else self._by_org.get(None, [])
        best: Rule | None = None
        for rule in candidates:  # lists are in file order, so `>` keeps the earlier rule on ties
            if rule.applies(entry, ts) and (best is None or rule.specificity > best.specificity):
                best = rule
        return best


def load_overrides(path: Path) -> Overrides:
    data, raw = read_yaml(Path(path))
    try:
        spec = OverridesSpec.model_validate(data)
    except ValidationError as exc:
        raise CatalogError(f"{path}: {_format_validation(exc)}") from None
    rules = []
    for i, rule in enumerate(spec.negotiated):
        models = tuple(m.strip().lower() for m in rule.models)
        providers = frozenset(p.strip().lower() for p in rule.providers)
        rules.append(Rule(
            name=rule.name or f"{Path(path).name}#negotiated.{i}",
            org=rule.org,
            providers=providers,
            models=models,
            effective_from=rule.effective_from,
            effective_until=rule.effective_until,
            factor=(1 - rule.discount_percent / 100) if rule.discount_percent is not None else None,
            prices=_rule_prices(rule, path),
            specificity=(1 if rule.org else 0, 1 if (models or providers) else 0),
        ))
    return Overrides(rules, spec.custom_models, str(path), raw)


def _rule_prices(rule: RuleSpec, path: Path) -> PriceVersion | None:
    if rule.prices is None:
        return None
    version = version_from_spec(rule.prices, rule.prices.source or f"negotiated ({Path(path).name})")
    version.effective_from = rule.effective_from  # None: the rule's prices hold whenever the rule does
    return version
