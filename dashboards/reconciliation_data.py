"""Reconciliation: our metered cost vs what the provider reports, per UTC day, provider and model.

Ours comes from the hourly rollup, theirs from `provider_usage` (latest `fetched_at` per record id, via
FINAL). Provider cost reports cover a whole organization and are not per team, so this is finance only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from dashboards.access import AccessDenied
from dashboards.tables import dec, run

# A difference above this share of the larger side is flagged (prices, discounts or lost events).
FLAG_RATIO = Decimal("0.02")

OURS_SQL = (
    "SELECT toDate(hour) AS day, provider, model, toDecimal128(sum(cost_usd), 12) AS ours_cost, "
    "accurateCast(sum(input_tokens), 'UInt64') AS ours_input_tokens, "  # Int128 rollup sums: never wrap
    "accurateCast(sum(output_tokens), 'UInt64') AS ours_output_tokens "
    "FROM spend_hourly WHERE hour >= {since:DateTime64(3, 'UTC')} AND hour < {until:DateTime64(3, 'UTC')} "
    "GROUP BY day, provider, model"
)
THEIRS_SQL = (
    "SELECT toDate(bucket_start) AS day, provider, ifNull(model, '') AS model, "
    "toDecimal128(sumIf(ifNull(cost_usd, toDecimal128(0, 12)), kind = 'cost'), 12) AS provider_cost, "
    "accurateCast(sumIf(toInt128(ifNull(input_tokens, 0)), kind = 'usage'), 'UInt64') AS provider_input_tokens, "
    "accurateCast(sumIf(toInt128(ifNull(output_tokens, 0)), kind = 'usage'), 'UInt64') AS provider_output_tokens, "
    "countIf(kind = 'usage') AS usage_rows, countIf(kind = 'cost') AS cost_rows "
    "FROM provider_usage FINAL "
    "WHERE bucket_start >= {since:DateTime64(3, 'UTC')} AND bucket_start < {until:DateTime64(3, 'UTC')} "
    "GROUP BY day, provider, model"
)


@dataclass(frozen=True)
class ReconRow:
    day: date
    provider: str
    model: str
    ours_cost: Decimal
    provider_cost: Decimal | None  # None: the provider reported no cost for this day and model (maybe usage)
    ours_tokens: int
    provider_tokens: int | None

    @property
    def difference(self) -> Decimal | None:
        return None if self.provider_cost is None else self.ours_cost - self.provider_cost

    @property
    def flagged(self) -> bool:
        if self.provider_cost is None:
            return False
        larger = max(abs(self.ours_cost), abs(self.provider_cost))
        return larger > 0 and abs(self.difference) > larger * FLAG_RATIO


def reconcile(wh: Any, since: datetime, until: datetime) -> list[ReconRow]:
    if wh.team is not None:
        raise AccessDenied("reconciliation compares whole-organization provider bills: finance only")
    params = {"since": since, "until": until}
    ours = {(r["day"], r["provider"], r["model"]): r for r in run(wh.query, OURS_SQL, params).iter_rows(named=True)}
    theirs = {(r["day"], r["provider"], r["model"]): r
              for r in run(wh.query, THEIRS_SQL, params).iter_rows(named=True)}
    rows = []
    for key in sorted(set(ours) | set(theirs), key=lambda k: (k[0], k[1], k[2]), reverse=False):
        o, t = ours.get(key), theirs.get(key)
        rows.append(ReconRow(
            day=key[0], provider=key[1], model=key[2],
            ours_cost=dec(o["ours_cost"]) if o else Decimal(0),
            # Usage buckets alone (the cost report lags the usage report): not reported, never a $0 bill (left24).
            provider_cost=dec(t["provider_cost"]) if t and t["cost_rows"] else None,
            ours_tokens=int(o["ours_input_tokens"] + o["ours_output_tokens"]) if o else 0,
            # Cost-only reports carry no token counts: "-" rather than a misleading 0.
            provider_tokens=(int(t["provider_input_tokens"] + t["provider_output_tokens"])
                             if t and t["usage_rows"] else None),
        ))
    rows.sort(key=lambda r: (r.day, r.provider, r.model), reverse=True)
    return rows


def totals(rows: list[ReconRow]) -> tuple[Decimal, Decimal]:
    """(ours, provider) over the rows the provider reported, so missing days do not look like differences."""
    reported = [r for r in rows if r.provider_cost is not None]
    return (sum((r.ours_cost for r in reported), Decimal(0)), sum((r.provider_cost for r in reported), Decimal(0)))
