"""Finance view of spend: cost centers / GL accounts and shared-cost allocation applied to the charges of a
window, for showback (direct, allocated and total side by side), the dashboard and every export."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl

from warehouse.allocation import Allocated, AllocationRule, allocate, parse_allocation
from warehouse.backends import WarehouseError
from warehouse.charges import charges
from warehouse.month_close import booked_later, closed_months, month_charges, own_usage, whole_month
from warehouse.showback import showback
from warehouse.cost_centers import CostCenterMap, parse_cost_centers, read_yaml

GROUPS = ("team", "cost_center")
MONEY = pl.Decimal(38, 12)


@dataclass(frozen=True)
class FinanceConfig:
    cost_centers: CostCenterMap = field(default_factory=CostCenterMap)
    allocation: tuple[AllocationRule, ...] = ()

    @property
    def dimensions(self) -> list[str]:
        """Dimensions the charges need: team, then whatever cost-center and allocation rules look at."""
        dims = ["team"]
        for name in self.cost_centers.dimensions + [d for r in self.allocation for d in r.dimensions]:
            if name not in dims:
                dims.append(name)
        return dims

    def cost_center_of(self, charge: dict[str, Any]) -> tuple[str, str, str]:
        """An allocated share is mapped by its receiving team only (it has no project or tags of its own)."""
        if "origin_team" in charge:
            return self.cost_centers.lookup({"team": charge["team"]})
        return self.cost_centers.lookup(charge)


def load_finance(cost_centers_file: Path | str | None, allocation_file: Path | str | None = None) -> FinanceConfig:
    """Cost centers from `cost_centers_file`; allocation rules from `allocation_file`, else from the
    cost-centers file's `allocation` list. Each file's errors are all reported at once."""
    centers = read_yaml(cost_centers_file) if cost_centers_file else {}
    rules_source = read_yaml(allocation_file) if allocation_file else centers
    errors: list[str] = []
    mapping, rules = CostCenterMap(), []
    try:
        mapping = parse_cost_centers(centers.get("cost_centers"), str(cost_centers_file))
    except WarehouseError as exc:
        errors.append(str(exc))
    try:
        rules = parse_allocation(rules_source.get("allocation"), str(allocation_file or cost_centers_file))
    except WarehouseError as exc:
        errors.append(str(exc))
    if errors:  # both files' (or sections') problems at once
        raise WarehouseError("\n".join(errors))
    return FinanceConfig(mapping, tuple(rules))


def finance_as_closed(config: FinanceConfig, closes: Path | None, since: datetime, until: datetime) -> FinanceConfig:
    """The finance configuration a window is read with: for a closed month, the files it was closed with
    (warehouse/closed_finance.py); otherwise, and for closes that kept none (written before), `config`."""
    month = whole_month(since, until) if closes is not None else None
    record = closed_months(closes).get(month, {}).get("finance") if month else None
    if record is None:
        return config
    if not isinstance(record, dict):
        raise WarehouseError(f"{closes / month / 'close.json'}: its finance entry is not an object ({record!r:.40}); "
                             "restore the file from a backup")
    from warehouse.closed_finance import frozen_finance_files

    return load_finance(*frozen_finance_files(closes / month, record))


def finance_from_settings(settings) -> FinanceConfig:
    centers, allocation = getattr(settings, "cost_centers_file", None), getattr(settings, "allocation_file", None)
    try:
        return load_finance(centers, allocation)
    except WarehouseError as exc:  # the user set a variable, not a path: name it, so they know what to fix
        named = ", ".join(f"{name}={value}" for name, value in (("TOKENMETER_COST_CENTERS_FILE", centers),
                                                               ("TOKENMETER_ALLOCATION_FILE", allocation)) if value)
        raise WarehouseError(f"{exc}\n(the file(s) named by {named})") from None


def allocated_charges(wh, config: FinanceConfig, since: datetime, until: datetime, extra_dims: list[str] = (),
                      by_day: bool = True, closes: Path | None = None) -> Allocated:
    """The window's charges (all teams: shares depend on everybody's usage) after allocation. With `closes`
    (the month-close directory) a whole month is read as warehouse.month_close.month_charges: frozen when
    closed, plus corrections of closed months when it is their first open month."""
    dims = config.dimensions + [d for d in extra_dims if d not in config.dimensions]
    month = whole_month(since, until) if closes is not None else None
    rules = list(config.allocation)
    if month is None:
        rows = charges(wh, dims, since, until, by_day=by_day)
        check_complete(wh, rows, since, until)
        return allocate(rows, rules)
    rows = month_charges(wh, closes, month, since, until, dims, by_day)
    if month not in closed_months(closes):  # (a re-opened month's own rows are net of what later closes booked)
        check_complete(wh, [r for r in rows if not r["corrects"]] + booked_later(closes, month), since, until)
    corrected = sorted({r["corrects"] for r in rows if r["corrects"]})
    if not corrected or not rules:
        return allocate(rows, rules)
    # A month's shared cost is split by its own usage; its corrections of closed month M carry their own direct
    # cost, and a late shared charge of M is split by M's usage as M was closed, the weights of M's own shared cost
    # (fin26). Until fin26 one split over all rows: a late event of M moved the month's own split.
    result = allocate([r for r in rows if not r["corrects"]], rules)
    for earlier in corrected:
        part = [r for r in rows if r["corrects"] == earlier]
        # M's usage (its snapshot) is read only when a correction is shared cost split by usage (cost / tokens)
        owners = {next((r.name for r in rules if r.matches(c)), None) for c in part}
        weighted = any(r.name in owners for r in rules if r.basis != "fixed")
        booked = allocate(part, rules, basis=own_usage(wh, closes, earlier, config.dimensions) if weighted else [])
        result.charges += booked.charges
        result.unallocated += [name for name in booked.unallocated if name not in result.unallocated]
    return result


def check_complete(wh, rows: list[dict[str, Any]], since: datetime, until: datetime) -> None:
    """Charges come from the raw events (they hold the per-part lines); the rollups keep every event forever.
    If the two disagree, raw events are gone (retention) and a per-SKU file would silently miss spend."""
    raw = sum((r["cost"] for r in rows), Decimal(0))
    rolled = showback(wh, [], since=since, until=until)
    total = rolled["cost_usd"][0] if rolled.height else Decimal(0)
    if raw != total:
        raise WarehouseError(
            f"{since:%Y-%m-%d}..{until:%Y-%m-%d}: the raw events add up to {raw} USD but the rollups (and "
            f"`tokenmeter report`) to {total} USD: raw events of this window were removed by retention "
            "(TOKENMETER_RAW_RETENTION_DAYS) or are still being loaded; per-SKU and allocated views need them")


def finance_showback(wh, config: FinanceConfig, since: datetime, until: datetime, *, by: str = "team",
                     team: str | None = None, closes: Path | None = None) -> pl.DataFrame:
    """showback_and_corrected's table."""
    return showback_and_corrected(wh, config, since, until, by=by, team=team, closes=closes)[0]


def showback_and_corrected(wh, config: FinanceConfig, since: datetime, until: datetime, *, by: str = "team",
                           team: str | None = None, closes: Path | None = None,
                           unpriced: dict[str, int] | None = None) -> tuple[pl.DataFrame, list[str]]:
    """(the table, the closed months whose corrections it shows). One row per `by` ("team" or "cost_center") with cost_center, gl_account, owner, direct_usd,
    allocated_usd, corrections_usd, total_usd (exact Decimals; total = the other three); `team` limits it to one
    team's rows (team-scoped users). Direct and allocated are the window's own spend; corrections_usd is what the
    window (an open month after a closed one) books for closed months (late events, re-prices: direct and
    allocated together), so the month's own spend can be reconciled apart from them (close25).
    Untagged usage is team "" and unmapped spend the cost center "unmapped", both visible rows.
    The same charges (day x provider x model x part) as the FOCUS export, so both agree to the last digit.
    `unpriced` (a dict, optional) receives each team's unpriced events of the window: cost in no amount."""
    if by not in GROUPS:
        raise ValueError(f"by: {by!r} is not one of {', '.join(GROUPS)}")
    config = finance_as_closed(config, closes, since, until)
    totals: dict[tuple, list[Decimal]] = {}
    corrected = set()
    for charge in allocated_charges(wh, config, since, until, closes=closes).charges:
        if team is not None and charge["team"] != team:
            continue
        if unpriced is not None and charge.get("unpriced_events") and not charge.get("corrects"):
            # the window's own events: a correction's count is a change of a closed month's (a re-priced one: -1)
            unpriced[charge["team"]] = unpriced.get(charge["team"], 0) + charge["unpriced_events"]
        center, account, owner = config.cost_center_of(charge)
        key = (charge["team"], center, account, owner) if by == "team" else (center, account, owner)
        sums = totals.setdefault(key, [Decimal(0), Decimal(0), Decimal(0)])
        if charge.get("corrects"):
            corrected.add(charge["corrects"])
            sums[2] += charge["direct"] + charge["allocated"]
        else:
            sums[0] += charge["direct"]
            sums[1] += charge["allocated"]
    names = (["team"] if by == "team" else []) + ["cost_center", "gl_account", "owner"]
    rows = [list(key) + [d, a, c, d + a + c] for key, (d, a, c) in totals.items()]
    rows.sort(key=lambda r: (-r[-1], r[0]))
    schema = {n: pl.String for n in names} | {"direct_usd": MONEY, "allocated_usd": MONEY,
                                              "corrections_usd": MONEY, "total_usd": MONEY}
    return pl.DataFrame(rows, schema=schema, orient="row"), sorted(corrected)



def corrections_note(month: str, corrected: list[str], column: str = "corrections_usd",
                     own: str = "direct_usd and allocated_usd") -> str:
    """What the corrections column holds, in words (a reader reconciles the month's own spend against a bill)."""
    months = "closed month" + ("s " if len(corrected) > 1 else " ") + ", ".join(corrected)
    return (f"{column}: late changes (events, re-prices) to {months}, booked in "
            f"{month}; {own} are {month}'s own spend.")


def unpriced_note(unpriced: dict[str, int], since: datetime, until: datetime) -> str:
    """What showback's amounts leave out: events with no price are in no amount (unknown, never $0), per team, and the
    command that names their models (walk31: the demo's 72 calls of an unknown model stood behind platform's row
    without a word)."""
    total = sum(unpriced.values())
    teams = ", ".join(f"team {name or '(none)'} {count}" for name, count in sorted(unpriced.items()))
    return (f"unpriced: {total} event{'' if total == 1 else 's'} {'has' if total == 1 else 'have'} no price, so "
            f"{'its' if total == 1 else 'their'} cost is in no amount above (unknown, not $0): {teams}; "
            f"`tokenmeter report --group-by team,model --since {since.date().isoformat()} --until "
            f"{until.date().isoformat()}` names the models.")


PART_TOKENS = {"input": "input_tokens", "cached_input": "cached_input_tokens", "cache_write_5m": "cache_write_tokens",
               "cache_write_1h": "cache_write_tokens", "output": "output_tokens", "reasoning": "reasoning_tokens"}
COUNT_COLUMNS = ("events", "unpriced_events", "input_tokens", "output_tokens", "cached_input_tokens",
                 "cache_write_tokens", "reasoning_tokens")


def finance_month_frame(wh, config: FinanceConfig, since: datetime, until: datetime, group_by: list[str],
                        team: str | None = None, closes: Path | None = None) -> pl.DataFrame:
    """The CSV/Parquet export with finance applied: one row per corrects_month, group_by values, cost center,
    GL account and owner, with the report's counts (input_tokens includes cached and cache-write tokens,
    output_tokens the reasoning ones, as everywhere else) and direct_usd, allocated_usd, cost_usd (= total).
    corrects_month is "" for the window's own usage and the closed month a row corrects otherwise (late events
    and re-prices booked in its first open month), so corrections have their own rows, counts and money (close25)."""
    config = finance_as_closed(config, closes, since, until)
    totals: dict[tuple, list] = {}
    # per UTC day, the charge grain showback, the dashboard and FOCUS split shared cost at: split once per month,
    # the 1e-12 truncations landed elsewhere and the same team's allocated_usd differed by ~1e-9 (walk21)
    for charge in allocated_charges(wh, config, since, until, extra_dims=group_by, by_day=True,
                                    closes=closes).charges:
        if team is not None and charge["team"] != team:
            continue
        center = config.cost_center_of(charge)
        key = (charge.get("corrects") or "",) + tuple(str(charge.get(d) or "") for d in group_by) + center
        sums = totals.setdefault(key, [0] * len(COUNT_COLUMNS) + [Decimal(0), Decimal(0)])
        if "origin_team" not in charge:
            # Usage counts stay with the team that consumed it; only money moves.
            sums[0] += charge["events"]
            sums[1] += charge["unpriced_events"]
            column = PART_TOKENS.get(charge["part"])
            if column:
                sums[COUNT_COLUMNS.index(column)] += charge["quantity"]
                if column in ("cached_input_tokens", "cache_write_tokens"):
                    sums[COUNT_COLUMNS.index("input_tokens")] += charge["quantity"]
                if column == "reasoning_tokens":
                    sums[COUNT_COLUMNS.index("output_tokens")] += charge["quantity"]
        sums[-2] += charge["direct"]
        sums[-1] += charge["allocated"]
    names = ["corrects_month", *group_by, "cost_center", "gl_account", "owner"]
    rows = [list(k) + v[:-2] + [v[-2], v[-1], v[-2] + v[-1]] for k, v in sorted(totals.items())]
    # A correction row's counts are changes and can be negative (a closed month's unpriced event priced later: -1
    # unpriced events); UInt64 columns made that month's export a polars traceback (walk31). Int64 only then, so
    # every other file keeps its bytes (a closed month's Parquet is byte-for-byte what it was).
    signed = any(value < 0 for v in totals.values() for value in v[:len(COUNT_COLUMNS)])
    schema = ({n: pl.String for n in names} | {c: pl.Int64 if signed else pl.UInt64 for c in COUNT_COLUMNS}
              | {"direct_usd": MONEY, "allocated_usd": MONEY, "cost_usd": MONEY})
    return pl.DataFrame(rows, schema=schema, orient="row")
