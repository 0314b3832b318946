"""Shared-cost allocation: rules that move a scope's spend onto the teams that consume the shared thing.

File: the `allocation` list of the allocation file (setting `allocation_file`, env TOKENMETER_ALLOCATION_FILE)
or, when unset, of the cost-centers file:

    allocation:
      - name: platform-shared            # becomes FOCUS AllocatedMethodId
        scope: {team: platform}          # any dimension or tag:<key>; {team: ""} = untagged usage
        basis: cost                      # cost | tokens (proportional to the receivers' usage) | fixed
        to: [search, ads]                # receivers; default: every team with usage outside all scopes
        remainder_to: search             # default: the receiver with the largest weight (ties: first by name)
      - name: cache-write-premium
        scope: {}                        # everybody's ...
        parts: [cache_write_5m, cache_write_1h]   # ... cache-write lines only
        basis: fixed
        shares: {search: 3, ads: 1}      # weights, normalised

Semantics: each charge (one day, provider, model, dimensions, priced part) in a rule's scope is an origin
charge; the first rule (file order) whose scope matches it takes it, so no spend is allocated twice. The
weights come from the receivers' usage in the same window outside every scope (cost in USD, or tokens), or
from `shares`. Rounding rule: each receiver's share = amount x weight / total weight, truncated toward zero to
1e-12 USD (the warehouse's cost scale), computed with 60 significant digits; what truncation leaves over
(< 1e-12 x receivers) goes to `remainder_to`. So every origin charge is split exactly and totals never move.
A rule whose receivers have no usage leaves its spend where it was (reported in `unallocated`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Context, Decimal, InvalidOperation, localcontext
from typing import Any, Iterable, Mapping

from warehouse.backends import WarehouseError
from warehouse.charges import TOKEN_PARTS, UNITEMIZED
from warehouse.queries import DIMENSIONS

QUANTUM = Decimal("1e-12")
BASES = ("cost", "tokens", "fixed")
KNOWN_PARTS = TOKEN_PARTS + ("request", UNITEMIZED)
_PRECISE = Context(prec=60)


@dataclass(frozen=True)
class AllocationRule:
    name: str
    scope: tuple[tuple[str, str], ...]
    basis: str
    parts: tuple[str, ...] = ()
    shares: tuple[tuple[str, Decimal], ...] = ()
    to: tuple[str, ...] = ()
    remainder_to: str | None = None

    @property
    def dimensions(self) -> list[str]:
        return [key for key, _ in self.scope]

    def matches(self, charge: Mapping[str, Any]) -> bool:
        if self.parts and charge["part"] not in self.parts:
            return False
        return all(str(charge.get(key) or "") == value for key, value in self.scope)

    def details(self) -> dict[str, Any]:
        return {"x_Basis": self.basis, "x_Scope": dict(self.scope), "x_Parts": list(self.parts)}


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    return str(value) if isinstance(value, (str, int)) else None


def parse_allocation(data: Any, source: str = "allocation") -> list[AllocationRule]:
    """Validate the `allocation` list; every problem is reported at once in one WarehouseError."""
    if data is None:
        return []
    if not isinstance(data, list):
        raise WarehouseError(f"{source}: `allocation` must be a list of rules, got {type(data).__name__}")
    errors: list[str] = []
    rules: list[AllocationRule] = []
    names: set[str] = set()
    for index, item in enumerate(data):
        where = f"allocation[{index}]"
        if not isinstance(item, dict):
            errors.append(f"{where}: must be a mapping with name, scope and basis")
            continue
        count = len(errors)
        unknown = set(map(str, item)) - {"name", "scope", "basis", "parts", "shares", "to", "remainder_to"}
        if unknown:
            errors.append(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        name = _text(item.get("name"))
        if not name or not name.strip():
            errors.append(f"{where}: `name` must be a non-empty string")
        elif name in names:
            errors.append(f"{where}: name {name!r} is used twice")
        names.add(name or "")
        scope = item.get("scope")
        pairs: list[tuple[str, str]] = []
        if not isinstance(scope, dict):
            errors.append(f"{where}: `scope` must be a mapping of dimension -> value ({{}} = all usage)")
        else:
            for key, value in scope.items():
                key = str(key)
                if key not in DIMENSIONS and not (key.startswith("tag:") and len(key) > 4):
                    errors.append(f"{where}: scope key {key!r} is not a dimension or tag:<key>")
                elif _text(value) is None:
                    errors.append(f"{where}: scope value of {key} must be a string ('' = untagged)")
                else:
                    pairs.append((key, _text(value)))
        parts = item.get("parts") or []
        if not isinstance(parts, list) or not all(isinstance(p, str) and p for p in parts):
            errors.append(f"{where}: `parts` must be a list of part names, e.g. [cache_write_5m, cache_write_1h]")
            parts = []
        basis = item.get("basis")
        if basis not in BASES:
            errors.append(f"{where}: `basis` must be one of {', '.join(BASES)}, got {basis!r}")
        shares: list[tuple[str, Decimal]] = []
        raw_shares = item.get("shares")
        if basis == "fixed":
            if not isinstance(raw_shares, dict) or not raw_shares:
                errors.append(f"{where}: basis fixed needs `shares`: {{team: weight, ...}}")
            else:
                for team, weight in raw_shares.items():
                    try:
                        value = Decimal(str(weight)) if not isinstance(weight, bool) else Decimal("nan")
                    except InvalidOperation:
                        value = Decimal("nan")
                    if not value.is_finite() or value <= 0:
                        errors.append(f"{where}: share of {team} must be a positive number, got {weight!r}")
                    else:
                        shares.append((str(team), value))
        elif raw_shares is not None:
            errors.append(f"{where}: `shares` only goes with basis fixed")
        to = item.get("to") or []
        if not isinstance(to, list) or not all(_text(t) for t in to):
            errors.append(f"{where}: `to` must be a list of team names")
            to = []
        receivers = ([str(t) for t in raw_shares] if basis == "fixed" and isinstance(raw_shares, dict)
                     else [str(t) for t in to])
        remainder = _text(item.get("remainder_to"))
        if item.get("remainder_to") is not None and (remainder is None or (receivers and remainder not in receivers)):
            errors.append(f"{where}: `remainder_to` {item.get('remainder_to')!r} is not one of the receivers")
        if len(errors) == count and name:
            rules.append(AllocationRule(name.strip(), tuple(pairs), basis, tuple(parts), tuple(shares),
                                        tuple(str(t) for t in to), remainder))
    if errors:
        raise WarehouseError(f"{len(errors)} error(s) in {source}:\n" + "\n".join(f"- {e}" for e in errors))
    return rules


def split(amount: Decimal, weights: Mapping[str, Decimal], remainder_to: str) -> dict[str, Decimal]:
    """amount split by weights: each share truncated toward zero to 1e-12, the remainder to `remainder_to`;
    the shares add up to `amount` exactly."""
    total = sum(weights.values())
    with localcontext(_PRECISE):
        shares = {k: (amount * w / total).quantize(QUANTUM, rounding=ROUND_DOWN) for k, w in weights.items()}
        shares[remainder_to] += amount - sum(shares.values())
    return shares


@dataclass
class Allocated:
    """Charges after allocation: each has `team` (who carries it), `direct` and `allocated` (USD) and, for
    allocated charges, `rule`, `ratio`, `basis_quantity`, `origin_team`."""

    charges: list[dict[str, Any]] = field(default_factory=list)
    unallocated: list[str] = field(default_factory=list)  # rules whose receivers had no usage


def _weights(rule: AllocationRule, basis_cost: dict[str, Decimal], basis_tokens: dict[str, Decimal]) -> dict:
    if rule.basis == "fixed":
        return dict(rule.shares)
    usage = basis_cost if rule.basis == "cost" else basis_tokens
    teams = rule.to or tuple(sorted(usage))
    return {team: usage.get(team, Decimal(0)) for team in teams if usage.get(team, Decimal(0)) > 0}


def _usage(charges: Iterable[dict[str, Any]], rules: list[AllocationRule]) -> tuple[dict, dict]:
    """(cost, tokens) per team of the charges outside every rule's scope: the weights of basis cost / tokens."""
    basis_cost: dict[str, Decimal] = {}
    basis_tokens: dict[str, Decimal] = {}
    for charge in charges:
        if not any(r.matches(charge) for r in rules):
            team = str(charge.get("team") or "")
            basis_cost[team] = basis_cost.get(team, Decimal(0)) + charge["cost"]
            if charge["part"] in TOKEN_PARTS:
                basis_tokens[team] = basis_tokens.get(team, Decimal(0)) + Decimal(charge["quantity"])
    basis_cost.pop("", None)  # untagged usage never receives shared cost
    basis_tokens.pop("", None)
    return basis_cost, basis_tokens


def allocate(charges: Iterable[dict[str, Any]], rules: list[AllocationRule],
             basis: Iterable[dict[str, Any]] | None = None) -> Allocated:
    """Apply the rules to charges (dicts with team, part, cost, quantity and the scope dimensions). The weights of
    basis cost / tokens are the usage of `basis` (default: the charges themselves): a month's corrections of a
    closed month are split by that month's usage, not by the month that books them (fin26)."""
    charges = list(charges)
    owner: list[AllocationRule | None] = [next((r for r in rules if r.matches(c)), None) for c in charges]
    basis_cost, basis_tokens = _usage(charges if basis is None else basis, rules)
    weights = {rule.name: _weights(rule, basis_cost, basis_tokens) for rule in rules}
    result = Allocated()
    for rule in rules:
        if not weights[rule.name] and any(o is rule for o in owner):
            result.unallocated.append(rule.name)
    for charge, rule in zip(charges, owner):
        team = str(charge.get("team") or "")
        rule_weights = weights[rule.name] if rule else None
        if not rule_weights or not charge["cost"]:
            result.charges.append({**charge, "team": team, "direct": charge["cost"], "allocated": Decimal(0)})
            continue
        result.charges.append({**charge, "team": team, "direct": charge["cost"], "allocated": -charge["cost"],
                               "rule": rule.name, "moved_out": True})
        remainder = rule.remainder_to or max(sorted(rule_weights), key=lambda t: rule_weights[t])
        total = sum(rule_weights.values())
        shares = split(charge["cost"], rule_weights, remainder)
        for position, receiver in enumerate(sorted(shares)):
            with localcontext(_PRECISE):
                ratio = rule_weights[receiver] / total
            counts = {} if position == 0 else {"events": 0, "unpriced_events": 0}  # events counted once
            result.charges.append({
                **charge, **counts, "allocated": shares[receiver], "team": receiver, "direct": Decimal(0), "rule": rule.name,
                "ratio": ratio, "basis_quantity": rule_weights[receiver], "origin_team": team,
                "origin_cost": charge["cost"]})
    return result
