"""Load price catalog files (bundled, imported, custom) into entries, layer on layer.

A later layer adds to an entry of the same key (`provider/model`): its versions join the history (a version
with the same `effective_from` replaces the earlier one), its aliases and patterns are added, and names it
claims win over earlier layers. Inside one layer two entries may not claim the same name.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import ValidationError

from .schema import (
    CatalogError,
    EntrySpec,
    FeeVersion,
    PriceVersion,
    ProviderBlockSpec,
    derive_version,
    version_from_spec,
)

BUNDLED_CATALOG_DIR = Path(__file__).with_name("catalog")


@dataclass
class CatalogEntry:
    provider: str
    model: str
    aliases: list[str] = field(default_factory=list)
    mode: str = "chat"
    first_party: bool = False
    versions: list[PriceVersion] = field(default_factory=list)  # sorted by effective_from
    notes: str | None = None
    origins: list[str] = field(default_factory=list)  # files that contributed, for explanations
    fees: dict[str, list[FeeVersion]] = field(default_factory=dict)  # per tool kind, sorted by effective_from
    max_output_tokens: int | None = None  # the documented output limit of one call, when the catalog gives it

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"

    def fee_at(self, kind: str, ts: datetime) -> FeeVersion | None:
        """The fee for one request of `kind` at `ts`: the latest model-specific fee in force, else the latest
        provider-wide one; None when the catalog has no fee for it (the caller must not price it as $0)."""
        in_force = [v for v in self.fees.get(kind, ()) if v.effective_from <= ts]
        specific = [v for v in in_force if v.patterns]
        chosen = specific or in_force
        return chosen[-1] if chosen else None

    def version_at(self, ts: datetime) -> PriceVersion | None:
        starts = [v.effective_from for v in self.versions]
        index = bisect.bisect_right(starts, ts) - 1
        return self.versions[index] if index >= 0 else None


@dataclass(frozen=True)
class Claim:
    """Layer `layer` says: in `provider`, model name `name` (or names matching `pattern`) means entry `key`."""

    layer: int
    provider: str
    key: str
    name: str | None = None
    pattern: re.Pattern[str] | None = None


@dataclass
class _Contribution:
    layer: int
    origin: str
    spec: EntrySpec
    first_party: bool
    default_source: str | None


def _format_validation(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in item['loc']) or 'file'}: {item['msg']}" for item in error.errors(include_url=False)
    )


def parse_blocks(data: Any, origin: str) -> list[tuple[str, ProviderBlockSpec]]:
    """A catalog document is one provider block (`provider:` + `models:`) or `providers: {name: block}`."""
    if not isinstance(data, dict):
        raise CatalogError(f"{origin}: expected a mapping at the top level")
    raw_blocks: list[tuple[str, Any]]
    if "providers" in data:
        providers = data["providers"]
        if not isinstance(providers, dict):
            raise CatalogError(f"{origin}: providers must map provider names to blocks")
        raw_blocks = [(str(name), block) for name, block in providers.items()]
    elif "provider" in data:
        raw_blocks = [(str(data["provider"]), data)]
    else:
        raise CatalogError(f"{origin}: expected `provider:` and `models:`, or `providers:`")
    blocks = []
    for name, raw in raw_blocks:
        try:
            block = ProviderBlockSpec.model_validate(raw)
        except ValidationError as exc:
            raise CatalogError(f"{origin}: provider {name}: {_format_validation(exc)}") from None
        for model, spec in block.models.items():
            for i, version in enumerate(spec.versions or []):
                if version.effective_from is None:
                    raise CatalogError(f"{origin}: {name}/{model}: versions.{i}.effective_from is required")
                if not (version.source or spec.source or block.source):
                    raise CatalogError(f"{origin}: {name}/{model}: versions.{i}: give a source (URL) for the price")
        for kind, fee_versions in block.fees.items():
            for i, fee in enumerate(fee_versions):
                if not (fee.source or block.source):
                    raise CatalogError(f"{origin}: {name}: fees.{kind}.{i}: give a source (URL) for the fee")
        blocks.append((name.strip().lower(), block))
    return blocks


# libyaml's safe loader when PyYAML was built with it: the bundled catalog (29 files) parses in 0.03 CPU-s instead of
# 0.27 with the pure-Python one, identical documents (tests/streams/pricing/test_catalog_yaml.py).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path) -> tuple[Any, bytes]:
    try:
        raw = path.read_bytes()
        return yaml.load(raw, Loader=_SAFE_LOADER) or {}, raw
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"{path}: cannot read YAML: {exc}") from exc


def catalog_files(paths: Iterable[Path]) -> list[Path]:
    """Files of the given paths: a directory contributes its *.yaml/*.yml files in name order."""
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")))
        elif path.is_file():
            files.append(path)
        else:
            raise CatalogError(f"{path}: no such catalog file or directory")
    return files


class CatalogBuilder:
    """Collects provider blocks layer by layer, then resolves `based_on` and merges versions."""

    def __init__(self) -> None:
        self._contributions: dict[str, list[_Contribution]] = {}
        self._order: list[str] = []
        # provider -> kind -> (effective_from, patterns) -> fee; a later layer replaces the same key.
        self._fees: dict[str, dict[str, dict[tuple[datetime, tuple[str, ...]], FeeVersion]]] = {}
        self._layer = -1
        self.digest = hashlib.sha256()

    def new_layer(self) -> None:
        self._layer += 1

    def add_document(self, data: Any, origin: str, raw: bytes | None = None) -> None:
        # The version hashes file names and contents, not absolute paths: the same catalog gives the same
        # version on every machine.
        name = Path(origin).name
        self.digest.update(name.encode() + b"\0" + (raw if raw is not None else repr(data).encode()) + b"\0")
        for provider, block in parse_blocks(data, origin):
            for kind, fee_versions in block.fees.items():
                by_key = self._fees.setdefault(provider, {}).setdefault(kind, {})
                for fee in fee_versions:
                    patterns = tuple(fee.models or ())
                    by_key[(fee.effective_from, patterns)] = FeeVersion(
                        fee.effective_from, fee.per_1000, tuple(re.compile(p, re.IGNORECASE) for p in patterns),
                        fee.source or block.source, fee.notes)
            for model, spec in block.models.items():
                key = f"{provider}/{model.strip().lower()}"
                if key not in self._contributions:
                    self._contributions[key] = []
                    self._order.append(key)
                self._contributions[key].append(
                    _Contribution(self._layer, origin, spec, block.first_party, block.source)
                )

    def add_file(self, path: Path) -> None:
        data, raw = read_yaml(path)
        self.add_document(data, str(path), raw)

    def build(self) -> tuple[dict[str, CatalogEntry], list[Claim]]:
        """Entries by key, and the names and patterns each layer claims for them (for the resolver)."""
        entries: dict[str, CatalogEntry] = {}
        resolving: set[str] = set()

        def build_entry(key: str) -> CatalogEntry:
            if key in entries:
                return entries[key]
            if key in resolving:
                raise CatalogError(f"{key}: based_on forms a cycle")
            if key not in self._contributions:
                raise CatalogError(f"based_on refers to {key!r}, which no catalog file defines")
            resolving.add(key)
            provider, model = key.split("/", 1)
            entry = CatalogEntry(provider=provider, model=model)
            by_start: dict[datetime, PriceVersion] = {}
            for c in self._contributions[key]:
                spec = c.spec
                entry.origins.append(c.origin)
                entry.first_party = entry.first_party or c.first_party
                entry.mode = spec.mode
                entry.notes = spec.notes or entry.notes
                entry.aliases.extend(a.strip().lower() for a in spec.aliases if a.strip().lower() not in entry.aliases)
                entry.max_output_tokens = spec.max_output_tokens or entry.max_output_tokens
                if spec.based_on:
                    base = build_entry(spec.based_on.strip().lower())
                    entry.max_output_tokens = entry.max_output_tokens or base.max_output_tokens
                    for version in base.versions:
                        derived = derive_version(version, spec.multiplier, spec.tiers,
                                                 spec.source or c.default_source, spec.notes)
                        by_start[derived.effective_from] = derived
                for version in spec.versions or []:
                    by_start[version.effective_from] = version_from_spec(version, spec.source or c.default_source)
            entry.versions = [by_start[t] for t in sorted(by_start)]
            resolving.discard(key)
            entries[key] = entry
            return entry

        for key in self._order:
            build_entry(key)
        for entry in entries.values():
            for kind, by_key in self._fees.get(entry.provider, {}).items():
                applying = [v for v in by_key.values() if v.applies_to(entry.model)]
                if applying:
                    entry.fees[kind] = sorted(applying, key=lambda v: (v.effective_from, bool(v.patterns)))
        claims = []
        for key in self._order:
            provider, model = key.split("/", 1)
            for c in self._contributions[key]:
                names = {model} | {a.strip().lower() for a in c.spec.aliases}
                claims.extend(Claim(c.layer, provider, key, name=name) for name in sorted(names))
                claims.extend(Claim(c.layer, provider, key, pattern=re.compile(p, re.IGNORECASE)) for p in c.spec.match)
        return {k: entries[k] for k in self._order}, claims

    @property
    def version(self) -> str:
        return self.digest.hexdigest()[:16]
