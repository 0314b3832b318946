"""Import LiteLLM's community cost map (`model_prices_and_context_window.json`) as a catalog layer.

Floats never touch prices: the JSON is parsed with `parse_float=Decimal`, so `2.5e-06` per token becomes
exactly `2.5` per 1M. Every entry is compared with the current price book:

- added: the catalog has no such model; it is priced at the imported price from `new_models_from` (default:
  `effective_from`). LiteLLM's map is undated: today's price says nothing of the past, so events before that
  stay unpriced unless a date is stated (walk33: 1970-01-01 was the default, and `reprice` then priced a model's
  whole past, closed months as corrections, at the price of the import's day);
- changed: the catalog prices it differently; the imported prices become a new version of the catalog's
  entry from `effective_from` (default: today, UTC), so events before that keep their old price;
- unchanged, skipped (not token-priced: images, audio, rerank ...) and conflicts are only reported.

With a `data_dir`, added and changed entries are merged into `<data_dir>/pricing/litellm.yaml`, which
`load_price_book(data_dir=...)` loads on top of the bundled catalog.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

import yaml

from .book import PriceBook, imported_catalog_dir, load_price_book
from .catalog import CatalogEntry
from .litellm_convert import (
    _describe,
    _model_id,
    _provider_of,
    check_version,
    convert_entry,
    merge_version,
    read_cost_map,
    stated_prices,
)
from .resolve import candidate_names, canonical_provider

DEFAULT_SOURCE = "https://github.com/BerriAI/litellm/blob/main/model_prices_and_context_window.json"
IMPORT_FILE_NAME = "litellm.yaml"
_REGION = re.compile(r"^(us|eu|apac|jp|au|ca|us-gov|global)\.")


@dataclass
class ImportedEntry:
    provider: str
    model: str
    spec: dict[str, Any]  # catalog YAML entry (versions, mode, notes)
    status: str  # added | changed
    changes: list[str] = field(default_factory=list)
    stated: dict[str, Decimal] = field(default_factory=dict, repr=False)  # the map's prices

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass
class ImportReport:
    source: str
    added: list[str] = field(default_factory=list)
    changed: dict[str, list[str]] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    written_to: Path | None = None

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def summary(self) -> str:
        lines = [f"LiteLLM cost map {self.source}: {len(self.added)} added, {len(self.changed)} changed, "
                 f"{len(self.unchanged)} unchanged, {sum(self.skipped.values())} skipped, "
                 f"{len(self.conflicts)} conflicts"]
        for key, changes in sorted(self.changed.items()):
            lines.append(f"  changed {key}: " + "; ".join(changes))
        lines.extend(f"  conflict {c}" for c in self.conflicts)
        lines.extend(f"  skipped {n}: {reason}" for reason, n in sorted(self.skipped.items()))
        if self.written_to:
            lines.append(f"  written to {self.written_to}")
        return "\n".join(lines)

@dataclass
class _Candidate:
    map_key: str
    model: str
    spec: dict[str, Any]
    stated: dict[str, Decimal]
    rank: tuple[int, int]  # (how much of the name had to be stripped to match, position in the map)


def _region_dropped(model: str, matched_name: str | None) -> bool:
    """True when `model` only matched after losing its Bedrock region: a regional id with its own price."""
    region = _REGION.match(model)
    return bool(region) and region.group(1) != "global" and not (matched_name or "").startswith(region.group(0))


def import_litellm_cost_map(source: str | Path, data_dir: str | Path | None = None, *, book: PriceBook | None = None,
                            effective_from: date | None = None, new_models_from: date | None = None,
                            providers: Iterable[str] | None = None) -> tuple[list[ImportedEntry], ImportReport]:
    """Convert the map at `source` (path or URL), diff it against `book` (default: the bundled catalog plus
    earlier imports under `data_dir`), and write added/changed entries under `data_dir` when given."""
    data = read_cost_map(source)
    book = book or load_price_book(data_dir=data_dir)
    since = (effective_from or datetime.now(timezone.utc).date()).isoformat()
    added_since = new_models_from.isoformat() if new_models_from else since
    wanted = {canonical_provider(p) for p in providers} if providers else None
    report = ImportReport(source=str(source))
    added: dict[str, ImportedEntry] = {}
    matched: dict[str, list[_Candidate]] = {}
    for position, (key, raw) in enumerate(data.items()):
        if key == "sample_spec" or not isinstance(raw, dict):
            continue
        provider = _provider_of(str(raw.get("litellm_provider") or ""))
        if not provider or (wanted and provider not in wanted):
            report.skip("provider not selected" if provider else "no litellm_provider")
            continue
        model = _model_id(key, str(raw.get("litellm_provider") or ""))
        spec, why = convert_entry(raw, added_since, DEFAULT_SOURCE)
        if spec is None:
            report.skip(why or "not convertible")
            continue
        check_version(spec["versions"][0], key)
        stated = stated_prices(spec["versions"][0])
        resolution = book.resolve(provider, model) if provider in book.resolver.providers else None
        current = resolution.entry if resolution else None
        if current is None or _region_dropped(model, resolution.matched_name):
            entry = ImportedEntry(provider, model, spec, "added", stated=stated)
            if entry.key not in added:
                added[entry.key] = entry
            elif added[entry.key].stated != stated:
                report.conflicts.append(f"{entry.key}: {key} disagrees with an earlier map entry; kept the first")
            continue
        names = candidate_names(model)[1]
        depth = names.index(resolution.matched_name) if resolution.matched_name in names else len(names)
        matched.setdefault(current.key, []).append(_Candidate(key, model, spec, stated, (depth, position)))
    changed = [entry for key, candidates in matched.items()
               if (entry := _compare(book.entries[key], candidates, since, report)) is not None]
    report.added = list(added)
    report.changed = {entry.key: entry.changes for entry in changed}
    entries = list(added.values()) + changed
    if data_dir is not None and entries:
        report.written_to = write_import(entries, Path(data_dir))
    return entries, report


def _compare(entry: CatalogEntry, candidates: list[_Candidate], since: str,
             report: ImportReport) -> ImportedEntry | None:
    """One catalog entry against the map entries that resolve to it. If any of them agrees with the catalog
    the entry is unchanged (aliases and odd spellings in the map that disagree are reported as conflicts);
    otherwise the most specific map entry becomes a new version, merged over the catalog's."""
    since_ts = datetime.fromisoformat(since).replace(tzinfo=timezone.utc)
    version = entry.version_at(since_ts)
    ours = version.flatten() if version else {}
    thinking = version is not None and version.prices_thinking
    differing = [(c, _describe(ours, _as_thinking(c.stated) if thinking else c.stated))
                 for c in sorted(candidates, key=lambda c: c.rank)]
    differing = [(c, changes) for c, changes in differing if changes]
    if len(differing) < len(candidates):
        report.unchanged.append(entry.key)
        report.conflicts.extend(f"{entry.key}: map entry {c.map_key} disagrees ({'; '.join(ch)}); catalog kept"
                                for c, ch in differing)
        return None
    if version is not None and (thinking or len(version.input_tiers) > 1):
        # The map's flat keys state one threshold and a per-reasoning-token price: merging would drop the
        # catalog's other input tiers or its thinking-mode price (all output of a thinking call), so keep it.
        what = "thinking-mode output price" if thinking else "input tiers"
        report.unchanged.append(entry.key)
        report.conflicts.extend(f"{entry.key}: map entry {c.map_key} disagrees ({'; '.join(ch)}); catalog kept "
                                f"(the map cannot state its {what})" for c, ch in differing)
        return None
    if version is not None and "input_tiers" in differing[0][0].spec["versions"][0]:
        # merge_version lays flat prices and one long_context over the catalog's: several input tiers from the
        # map's tiered_pricing are not merged (the catalog's own tiers would be kept under the map's base prices)
        report.unchanged.append(entry.key)
        report.conflicts.extend(f"{entry.key}: map entry {c.map_key} disagrees ({'; '.join(ch)}); catalog kept "
                                "(the map's input tiers are not merged over a catalog version)" for c, ch in differing)
        return None
    best, changes = differing[0]
    report.conflicts.extend(f"{entry.key}: map entry {c.map_key} disagrees with {best.map_key}; used {best.map_key}"
                            for c, _ in differing[1:] if c.stated != best.stated)
    # The new version keeps every catalog price the map does not restate (tiers, long context ...).
    base_note = f"catalog version of {version.effective_from.date().isoformat()}" if version else "no catalog price"
    imported = best.spec["versions"][0]
    if version is None:
        merged = dict(imported, effective_from=since)
    else:
        merged = merge_version(version, imported, since,
                               f"LiteLLM map import ({best.map_key}) merged over the {base_note}")
    check_version(merged, best.map_key)
    return ImportedEntry(entry.provider, entry.model, {"mode": best.spec["mode"], "versions": [merged]}, "changed",
                         changes, best.stated)


def _as_thinking(stated: dict[str, Decimal]) -> dict[str, Decimal]:
    """LiteLLM's per-reasoning-token price read as a thinking-mode output price (its only spelling of one)."""
    return {k.replace("reasoning", "thinking_output") if k.rsplit(".", 1)[-1] == "reasoning" else k: v
            for k, v in stated.items()}


def write_import(entries: list[ImportedEntry], data_dir: Path) -> Path:
    """Merge entries into `<data_dir>/pricing/litellm.yaml` (same-day versions are replaced)."""
    path = imported_catalog_dir(data_dir) / IMPORT_FILE_NAME
    document: dict[str, Any] = {"providers": {}}
    if path.exists():
        document = yaml.safe_load(path.read_text()) or {"providers": {}}
    providers = document.setdefault("providers", {})
    for entry in entries:
        block = providers.setdefault(entry.provider, {"source": DEFAULT_SOURCE, "models": {}})
        existing = block["models"].get(entry.model)
        if existing is None:
            block["models"][entry.model] = entry.spec
            continue
        versions = {str(v["effective_from"]): v for v in existing.get("versions", [])}
        for version in entry.spec["versions"]:
            versions[str(version["effective_from"])] = version
        existing["versions"] = [versions[k] for k in sorted(versions)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("# Written by tokenmeter's LiteLLM cost map import; edit with care.\n"
                   + yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    tmp.replace(path)
    return path
