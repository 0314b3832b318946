"""How much of the price catalog rests on the providers' own published prices: per provider, how many models,
from when to when, and which share of them (and of their price versions) has a first-party source.

A version counts as first-party unless its notes or its entry's notes mark it "unverified" or "third-party"
(the catalog's convention for numbers found only in LiteLLM's map, pricing trackers or blog posts), or it
comes from an imported file (`tokenmeter prices import` writes LiteLLM's numbers, never first-party).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Iterable

from .catalog import BUNDLED_CATALOG_DIR, CatalogEntry
from .schema import PriceVersion

THIRD_PARTY_MARKERS = ("unverified", "third-party", "third party")


def _marked(text: str | None) -> bool:
    lowered = (text or "").lower()
    return any(marker in lowered for marker in THIRD_PARTY_MARKERS)


def _bundled(entry: CatalogEntry) -> bool:
    bundled = BUNDLED_CATALOG_DIR.resolve()
    return all(Path(origin).resolve().parent == bundled for origin in entry.origins)


def version_is_first_party(entry: CatalogEntry, version: PriceVersion) -> bool:
    return _bundled(entry) and not _marked(version.notes) and not _marked(entry.notes)


@dataclass(frozen=True)
class ProviderCoverage:
    provider: str
    models: int
    versions: int
    first_from: str | None  # the earliest effective_from of any version
    last_change: str | None  # the latest effective_from of any version
    first_party_models: int  # entries whose every version is first-party
    first_party_versions: int

    @property
    def first_party_share(self) -> Decimal:
        return (Decimal(self.first_party_models) / self.models).quantize(Decimal("0.001")) if self.models else Decimal(0)

    def as_dict(self) -> dict[str, object]:
        return {
            "provider": self.provider, "models": self.models, "versions": self.versions,
            "first_from": self.first_from, "last_change": self.last_change,
            "first_party_models": self.first_party_models, "first_party_versions": self.first_party_versions,
            "first_party_share": str(self.first_party_share),
        }


def coverage(entries: Iterable[CatalogEntry]) -> list[ProviderCoverage]:
    by_provider: dict[str, list[CatalogEntry]] = {}
    for entry in entries:
        by_provider.setdefault(entry.provider, []).append(entry)
    rows = []
    for provider in sorted(by_provider):
        group = by_provider[provider]
        starts = [v.effective_from for e in group for v in e.versions]
        fp_models = fp_versions = 0
        for entry in group:
            flags = [version_is_first_party(entry, v) for v in entry.versions]
            fp_versions += sum(flags)
            fp_models += bool(flags) and all(flags)
        rows.append(ProviderCoverage(
            provider=provider, models=len(group), versions=len(starts),
            first_from=min(starts).date().isoformat() if starts else None,
            last_change=max(starts).date().isoformat() if starts else None,
            first_party_models=fp_models, first_party_versions=fp_versions,
        ))
    return rows


def totals(rows: list[ProviderCoverage]) -> ProviderCoverage:
    firsts = [r.first_from for r in rows if r.first_from]
    lasts = [r.last_change for r in rows if r.last_change]
    return ProviderCoverage(
        provider="all", models=sum(r.models for r in rows), versions=sum(r.versions for r in rows),
        first_from=min(firsts) if firsts else None, last_change=max(lasts) if lasts else None,
        first_party_models=sum(r.first_party_models for r in rows),
        first_party_versions=sum(r.first_party_versions for r in rows),
    )
