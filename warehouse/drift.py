"""Drift: what a provider bills (its cost report, from the usage/cost pollers in collectors/provider_usage) against
what we metered, per UTC day, provider and model, with the likely cause of a gap and the bill's coverage.

- gap = provider-reported - metered (positive: the bill has cost we did not meter).
- coverage of a bill = the share of it explained by metered traffic: per model min(metered, reported), summed
  over the provider's models, over the reported total. Metered cost on a model the provider did not bill explains
  nothing (it is a naming or pricing problem of its own), so coverage never exceeds 100 %.
- a row drifts when |gap| is above both `drift_threshold_pct` percent of the reported cost and `drift_min_usd`.
- likely cause, first that holds: `unpriced_model` (metered events of that model and day have no price, so their
  cost is missing), `missing_source` (no metered traffic at all, or metered tokens short of the provider's by
  more than the threshold: calls that no collector saw), `price_change` (tokens agree but cost does not: our
  price for the model differs from what the provider charged), else `unknown` (no provider token counts and we
  meter more than billed: a discount or credit, or a price change).

Money is exact (Decimal from Decimal(38, 12) columns); only complete days should be checked (reports lag).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

CAUSES = {
    "unpriced_model": "metered events of this model have no price, so their cost is missing from the metered side",
    "missing_source": "the provider billed traffic that no collector metered (a source not collected, or a model "
                      "name that differs between the gateway and the provider)",
    "price_change": "tokens agree but cost does not: the price we apply differs from what the provider charged "
                    "(a price change, a discount or a tier)",
    "unknown": "no provider token counts to compare; we meter more than billed (a credit or discount, or a price "
               "change)",
}

METERED_SQL = (
    "SELECT toDate(hour) AS day, toString(provider) AS provider, toString(model) AS model,"
    " toDecimal128(sum(cost_usd), 12) AS cost, toUInt64(sum(unpriced_events)) AS unpriced,"
    " accurateCast(sum(toInt128(input_tokens)) + sum(toInt128(output_tokens)), 'UInt64') AS tokens"
    " FROM spend_hourly WHERE hour >= {since:DateTime64(3, 'UTC')} AND hour < {until:DateTime64(3, 'UTC')}"
    " GROUP BY day, provider, model"
)
REPORTED_SQL = (
    "SELECT toDate(bucket_start) AS day, toString(provider) AS provider, model,"
    " toDecimal128(sumIf(cost_usd, kind = 'cost'), 12) AS cost, countIf(kind = 'cost') AS cost_rows,"
    " accurateCast(sumIf(toInt128(input_tokens) + toInt128(output_tokens), kind = 'usage'), 'UInt64') AS tokens,"
    " countIf(kind = 'usage') AS usage_rows"
    " FROM provider_usage FINAL"
    " WHERE bucket_start >= {since:DateTime64(3, 'UTC')} AND bucket_start < {until:DateTime64(3, 'UTC')}"
    " GROUP BY day, provider, model"
)


@dataclass(frozen=True)
class Thresholds:
    pct: Decimal = Decimal(5)  # percent of the reported cost
    min_usd: Decimal = Decimal(1)

    @classmethod
    def from_settings(cls, settings: Any) -> "Thresholds":
        return cls(Decimal(str(settings.drift_threshold_pct)), Decimal(str(settings.drift_min_usd)))


@dataclass(frozen=True)
class DriftRow:
    day: date
    provider: str
    model: str  # "" in a provider total
    metered_cost: Decimal
    reported_cost: Decimal
    metered_tokens: int
    reported_tokens: int | None  # None: the provider reported no usage (token) buckets for it
    unpriced_events: int
    explained: Decimal  # the part of the reported cost metered traffic explains
    cause: str = ""  # set when drifting

    @property
    def gap(self) -> Decimal:
        return self.reported_cost - self.metered_cost

    @property
    def gap_pct(self) -> Decimal | None:
        if not self.reported_cost:
            return None
        return (self.gap * 100 / self.reported_cost).quantize(Decimal("0.01"), ROUND_HALF_EVEN)

    @property
    def coverage_pct(self) -> Decimal | None:
        if self.reported_cost <= 0:
            return None
        return (self.explained * 100 / self.reported_cost).quantize(Decimal("0.01"), ROUND_HALF_EVEN)

    def drifting(self, limits: Thresholds) -> bool:
        gap = abs(self.gap)
        return gap > limits.min_usd and gap * 100 > limits.pct * abs(self.reported_cost)


def likely_cause(row: DriftRow, limits: Thresholds) -> str:
    if row.unpriced_events:
        return "unpriced_model"
    if row.metered_cost == 0 and row.metered_tokens == 0:
        return "missing_source"
    if row.reported_tokens:
        short = (Decimal(row.reported_tokens) - row.metered_tokens) * 100 > limits.pct * row.reported_tokens
        return "missing_source" if short else "price_change"
    return "missing_source" if row.gap > 0 else "unknown"


def _dec(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value or 0))


def _day_bounds(since: date, until: date) -> dict[str, datetime]:
    return {"since": datetime.combine(since, time(), timezone.utc), "until": datetime.combine(until, time(), timezone.utc)}


def drift(wh: Any, since: date, until: date, limits: Thresholds | None = None, provider: str | None = None
          ) -> tuple[list[DriftRow], list[DriftRow]]:
    """(per day, provider and model rows; per day and provider totals) over the days [since, until) on which the
    provider reported cost. Metered rows without a provider report are left out: nothing to compare them with."""
    limits = limits or Thresholds()
    params = _day_bounds(since, until)
    metered = {(r["day"], r["provider"], r["model"]): r for r in wh.query(METERED_SQL, params).iter_rows(named=True)}
    reported = {(r["day"], r["provider"], r["model"]): r for r in wh.query(REPORTED_SQL, params).iter_rows(named=True)
                if r["cost_rows"]}
    billed_days = {(day, prov) for day, prov, _ in reported}
    rows: list[DriftRow] = []
    for key in sorted(set(reported) | {k for k in metered if (k[0], k[1]) in billed_days}):
        if provider is not None and key[1] != provider:
            continue
        m, r = metered.get(key), reported.get(key)
        m_cost, r_cost = _dec(m["cost"]) if m else Decimal(0), _dec(r["cost"]) if r else Decimal(0)
        row = DriftRow(day=key[0], provider=key[1], model=key[2], metered_cost=m_cost, reported_cost=r_cost,
                       metered_tokens=int(m["tokens"]) if m else 0,
                       reported_tokens=int(r["tokens"]) if r and r["usage_rows"] else None,
                       unpriced_events=int(m["unpriced"]) if m else 0,
                       explained=max(Decimal(0), min(m_cost, r_cost)))
        rows.append(_with_cause(row, limits))
    totals: list[DriftRow] = []
    for day, prov in sorted({(r.day, r.provider) for r in rows}):
        part = [r for r in rows if (r.day, r.provider) == (day, prov)]
        reported_tokens = [r.reported_tokens for r in part if r.reported_tokens is not None]
        total = DriftRow(day=day, provider=prov, model="",
                         metered_cost=sum((r.metered_cost for r in part), Decimal(0)),
                         reported_cost=sum((r.reported_cost for r in part), Decimal(0)),
                         metered_tokens=sum(r.metered_tokens for r in part),
                         reported_tokens=sum(reported_tokens) if reported_tokens else None,
                         unpriced_events=sum(r.unpriced_events for r in part),
                         explained=sum((r.explained for r in part), Decimal(0)))
        causes = [r.cause for r in part if r.cause]
        totals.append(_with_cause(total, limits, max(set(causes), key=causes.count) if causes else None))
    return rows, totals


def _with_cause(row: DriftRow, limits: Thresholds, cause: str | None = None) -> DriftRow:
    if not row.drifting(limits):
        return row
    return DriftRow(**{**row.__dict__, "cause": cause or likely_cause(row, limits)})


def complete_days(days: int, today: date | None = None) -> tuple[date, date]:
    """[since, until): the last `days` whole UTC days before today (provider reports of today are not final)."""
    until = today or datetime.now(timezone.utc).date()
    return until - timedelta(days=days), until


def drift_alert(row: DriftRow, limits: Thresholds, *, dashboard_url: str = "") -> dict:
    """The alert record (tokenmeter.records contract) of a drifting row; its id is stable per (provider, model,
    day), so a re-run or a redelivery is delivered once. No routes in it: the dispatcher delivers it to its own
    TOKENMETER_FINANCE_NOTIFY (routes are secrets; every client of tokenmeter.alerts reads the records)."""
    from tokenmeter.measures import format_money
    from tokenmeter.records import alert_record

    what = f"{row.provider} {row.model}" if row.model else f"{row.provider} (all models)"
    key = f"tokenmeter:drift:{row.provider}:{row.model or '*'}:{row.day.isoformat()}"
    gap_pct = row.gap_pct
    severe = gap_pct is None or abs(gap_pct) >= limits.pct * 4
    coverage = row.coverage_pct
    # Rounded for people as the dashboard rounds them, percentages written as the Reconciliation page writes them
    # ("33.33%", it read "33.33 %"); the exact amounts are in `details`.
    summary = (f"On {row.day.isoformat()} {what} billed {format_money(row.reported_cost)}; tokenmeter metered "
               f"{format_money(row.metered_cost)} (gap {format_money(row.gap)}"
               + (f", {gap_pct}%" if gap_pct is not None else "") + "; coverage "
               + (f"{coverage}%" if coverage is not None else "n/a") + f"). Likely cause: {CAUSES[row.cause]}.")
    scope = {"provider": row.provider, **({"model": row.model} if row.model else {})}
    return alert_record(
        id="drift-" + hashlib.sha256(key.encode()).hexdigest()[:24], source="drift", kind="cost_drift",
        action="trigger", severity="error" if severe else "warning", dedup_key=key,
        title=f"Cost drift {what} on {row.day.isoformat()}: {row.cause.replace('_', ' ')}", summary=summary,
        at=datetime.combine(row.day, time(), timezone.utc), scope=scope, notify=[],
        details={"day": row.day.isoformat(), "provider": row.provider, "model": row.model,
                 "metered_cost": str(row.metered_cost), "reported_cost": str(row.reported_cost),
                 "gap": str(row.gap), "gap_pct": None if gap_pct is None else str(gap_pct),
                 "coverage_pct": None if coverage is None else str(coverage), "cause": row.cause,
                 "cause_detail": CAUSES[row.cause], "metered_tokens": row.metered_tokens,
                 "reported_tokens": row.reported_tokens, "unpriced_events": row.unpriced_events,
                 "threshold_pct": str(limits.pct), "threshold_usd": str(limits.min_usd)},
        dashboard_url=dashboard_url)


def drift_alerts(rows: list[DriftRow], totals: list[DriftRow], limits: Thresholds,
                 *, dashboard_url: str = "") -> list[dict]:
    """Alerts for drifting model rows, and for drifting provider totals whose models do not drift one by one
    (small gaps on many models that add up); never both for the same gap."""
    alerts = [drift_alert(r, limits, dashboard_url=dashboard_url) for r in rows if r.cause]
    flagged_days = {(r.day, r.provider) for r in rows if r.cause}
    alerts += [drift_alert(t, limits, dashboard_url=dashboard_url) for t in totals
               if t.cause and (t.day, t.provider) not in flagged_days]
    return alerts


def as_dicts(rows: list[DriftRow]) -> list[dict[str, Any]]:
    """Rows for JSON/CSV/table output (money as exact decimal strings)."""
    return [{"day": r.day.isoformat(), "provider": r.provider, "model": r.model or "(all)",
             "metered_usd": f"{r.metered_cost:f}", "reported_usd": f"{r.reported_cost:f}", "gap_usd": f"{r.gap:f}",
             "gap_pct": "" if r.gap_pct is None else f"{r.gap_pct:f}",
             "coverage_pct": "" if r.coverage_pct is None else f"{r.coverage_pct:f}",
             "metered_tokens": r.metered_tokens, "reported_tokens": "" if r.reported_tokens is None else r.reported_tokens,
             "unpriced_events": r.unpriced_events, "cause": r.cause} for r in rows]
