"""Cost centers and GL accounts: a YAML mapping from team / project / tag to (cost center, GL account, owner).

File (setting `cost_centers_file`, env TOKENMETER_COST_CENTERS_FILE):

    cost_centers:
      - match: {project: checkout}          # exactly one key: team, project or tag:<key>
        cost_center: CC-2100
        gl_account: "6410"
        owner: payments-finance@example.com
      - match: {team: search}
        cost_center: CC-1100
        gl_account: "6400"
        owner: search-lead@example.com

Precedence (first match wins): every `project` rule, then every `tag:<key>` rule, then every `team` rule, each
kind in file order; so the most specific attribution decides. Spend no rule matches is the cost center
"unmapped" (GL account and owner "unmapped" too) and stays a visible row: it is never dropped or guessed.
Validation reports every error of the file at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from warehouse.backends import WarehouseError

UNMAPPED = "unmapped"
KINDS = ("project", "tag", "team")  # precedence order
FIELDS = ("cost_center", "gl_account", "owner")


@dataclass(frozen=True)
class CostCenterRule:
    kind: str  # "project", "team" or "tag"
    key: str  # the dimension (team, project) or "tag:<key>"
    value: str
    cost_center: str
    gl_account: str
    owner: str

    def matches(self, row: Mapping[str, Any]) -> bool:
        return str(row.get(self.key) or "") == self.value


@dataclass(frozen=True)
class CostCenterMap:
    rules: tuple[CostCenterRule, ...] = ()

    def __post_init__(self) -> None:
        ordered = sorted(self.rules, key=lambda r: KINDS.index(r.kind))  # stable: file order within a kind
        object.__setattr__(self, "rules", tuple(ordered))

    @property
    def dimensions(self) -> list[str]:
        """The columns a row needs for this map to decide (team, project, tag:<key>...), in precedence order."""
        seen: list[str] = []
        for rule in self.rules:
            if rule.key not in seen:
                seen.append(rule.key)
        return seen

    def lookup(self, row: Mapping[str, Any]) -> tuple[str, str, str]:
        """(cost_center, gl_account, owner) of a row (a mapping with the needed dimensions)."""
        for rule in self.rules:
            if rule.matches(row):
                return rule.cost_center, rule.gl_account, rule.owner
        return UNMAPPED, UNMAPPED, UNMAPPED


def parse_cost_centers(data: Any, source: str = "cost centers") -> CostCenterMap:
    """Validate the `cost_centers` list; every problem is reported at once in one WarehouseError."""
    errors: list[str] = []
    rules: list[CostCenterRule] = []
    if data is None:
        return CostCenterMap()
    if not isinstance(data, list):
        raise WarehouseError(f"{source}: `cost_centers` must be a list of rules, got {type(data).__name__}")
    seen: dict[tuple[str, str], int] = {}
    for index, item in enumerate(data):
        where = f"cost_centers[{index}]"
        if not isinstance(item, dict):
            errors.append(f"{where}: must be a mapping with match, cost_center, gl_account, owner")
            continue
        unknown = set(item) - {"match", *FIELDS}
        if unknown:
            errors.append(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        values = {}
        for name in FIELDS:
            value = item.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)  # GL accounts are often written unquoted
            if not isinstance(value, str) or not value.strip():
                errors.append(f"{where}: `{name}` must be a non-empty string")
            elif value.strip() == UNMAPPED:
                errors.append(f"{where}: `{name}` may not be {UNMAPPED!r} (reserved for unmapped spend)")
            else:
                values[name] = value.strip()
        match = item.get("match")
        if not isinstance(match, dict) or len(match) != 1:
            errors.append(f"{where}: `match` must have exactly one of team, project or tag:<key>")
            continue
        (key, value), = match.items()
        key = str(key)
        kind = "tag" if key.startswith("tag:") and len(key) > 4 else key
        if kind not in KINDS:
            errors.append(f"{where}: match key {key!r} is not team, project or tag:<key>")
            continue
        if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value) == "":
            errors.append(f"{where}: match value for {key} must be a non-empty string")
            continue
        if (key, str(value)) in seen:
            errors.append(f"{where}: {key}={value} is already mapped by cost_centers[{seen[(key, str(value))]}]")
            continue
        seen[(key, str(value))] = index
        if len(values) == len(FIELDS):
            rules.append(CostCenterRule(kind, key, str(value), **values))
    if errors:
        raise WarehouseError(f"{len(errors)} error(s) in {source}:\n" + "\n".join(f"- {e}" for e in errors))
    return CostCenterMap(tuple(rules))


def read_yaml(path: Path | str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise WarehouseError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise WarehouseError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise WarehouseError(f"{path}: nested too deeply to be a finance file") from None
    except yaml.YAMLError as exc:
        raise WarehouseError(f"{path}: not valid YAML ({exc})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise WarehouseError(f"{path}: must be a YAML mapping with `cost_centers` and/or `allocation`")
    return loaded


def load_cost_centers(path: Path | str | None) -> CostCenterMap:
    """The map from the file at `path` (None: an empty map, so every row is "unmapped")."""
    if path is None:
        return CostCenterMap()
    return parse_cost_centers(read_yaml(path).get("cost_centers"), str(path))
