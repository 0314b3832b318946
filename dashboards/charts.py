"""Figures of the showback, budget, anomaly and reconciliation pages. As in figures.py, Decimal becomes float
only for positions on a chart; every number shown as text is formatted from the Decimal."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import plotly.graph_objects as go
import polars as pl

from dashboards.anomalies_data import RATE_COLUMNS
from dashboards.budgets_data import BudgetStatus
from dashboards.figures import PALETTE, _base_layout, empty_figure, team_colors
from dashboards.formatting import format_count, format_usd, to_decimal
from tokenmeter.measures import format_band, format_measure, unit_title
from tokenmeter.period_names import period_name

MAX_SERIES = 12  # more groups than this become "other": a legend of 40 teams helps nobody
SEVERITY_COLORS = {"info": "#60a5fa", "warning": "#f59e0b", "error": "#ef4444", "critical": "#7f1d1d"}


def showback_chart(series: pl.DataFrame, by: str, metric: str, mode: str, bucket: str) -> go.Figure:
    column = "cost_usd" if metric == "cost" else "tokens"
    title = f"{'Cost' if metric == 'cost' else 'Tokens'} per {bucket} by {by}"
    if not series.height:
        return empty_figure(title, "No usage for this selection")
    totals = series.group_by("value").agg(pl.col(column).sum()).sort([column, "value"], descending=[True, False])
    keep = totals["value"].to_list()[:MAX_SERIES]
    frame = series.with_columns(pl.when(pl.col("value").is_in(keep)).then(pl.col("value"))
                                .otherwise(pl.lit("other")).alias("value"))
    frame = frame.group_by(["bucket", "value"]).agg(pl.col(column).sum()).sort("bucket")
    colors = team_colors(keep) if by == "team" else {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(keep)}
    fig = go.Figure()
    for value in keep + (["other"] if "other" in frame["value"].to_list() else []):
        rows = frame.filter(pl.col("value") == value)
        amounts = rows[column].to_list()
        text = [format_usd(to_decimal(a)) if metric == "cost" else format_count(int(a)) for a in amounts]
        fig.add_trace(go.Bar(
            name=value, x=rows["bucket"].to_list(), y=[float(a) for a in amounts],
            marker_color=colors.get(value, "#9ca3af"), customdata=[value] * len(amounts), hovertext=text,
            hovertemplate=f"{value}<br>%{{x}}<br>%{{hovertext}}<extra></extra>",
        ))
    tick = "%b %d" if bucket == "day" else None
    return _base_layout(fig, title, barmode="stack" if mode == "stack" else "group", height=380,
                        yaxis_tickprefix="$" if metric == "cost" else "", xaxis_tickformat=tick)


def burn_down(history: list[BudgetStatus], now: datetime | None = None) -> go.Figure:
    """Remaining budget over the period, a dotted forecast to the period end, and the zero line; the title names the
    period as of `now` ("today (2026-12-05, UTC)"), default the moment it is drawn."""
    if not history:
        return empty_figure("Burn-down", "Pick a budget with reported status")
    last = history[-1]
    unit = "USD" if last.metric == "cost_usd" else "tokens"
    fmt = format_usd if last.metric == "cost_usd" else (lambda v: format_count(int(v)))
    remaining = [s.limit - s.spend for s in history]
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        name="remaining", x=[last.period_start] + [s.updated_at for s in history],
        y=[float(last.limit)] + [float(r) for r in remaining], mode="lines+markers", line={"color": "#2563eb"},
        hovertext=[fmt(last.limit)] + [fmt(r) for r in remaining], hovertemplate="%{x}<br>%{hovertext} left<extra></extra>",
    ))
    if last.projected is not None:
        end_left = last.limit - last.projected
        fig.add_trace(go.Scatter(
            name="forecast", x=[last.updated_at, last.period_end], y=[float(remaining[-1]), float(end_left)],
            mode="lines", line={"color": "#ef4444" if end_left < 0 else "#6b7280", "dash": "dot"},
            hovertext=[fmt(remaining[-1]), fmt(end_left)], hovertemplate="%{x}<br>forecast %{hovertext}<extra></extra>",
        ))
    fig.add_trace(go.Scatter(name="limit reached", x=[last.period_start, last.period_end], y=[0, 0], mode="lines",
                             line={"color": "#991b1b", "width": 1}, hoverinfo="skip"))
    if last.expected_breach_at is not None:
        fig.add_vline(x=last.expected_breach_at, line_dash="dash", line_color="#ef4444")
    title = f"{last.budget}: {fmt(last.spend)} of {fmt(last.limit)} used ({last.percent}%), {period_name(last.period_key, now or datetime.now(timezone.utc))}"
    return _base_layout(fig, title, yaxis_title=f"{unit} left", height=360,
                        yaxis_tickformat="$,.4~f" if last.metric == "cost_usd" else "")  # -$0.20, not $-0.20


def anomaly_timeline(anomalies: list[dict[str, Any]], since: datetime | None = None,
                     until: datetime | None = None) -> go.Figure:
    """One marker per anomaly over the days picked (`since`, `until`): without a range Plotly spread one anomaly, or
    several starting in one minute, over a millisecond (ticks 15:19:59.999 ... 15:20:00.0005; walk36)."""
    title = "Anomalies over time"
    if not anomalies:
        return empty_figure(title, "No anomalies in this range")
    fig = go.Figure()
    for severity, color in SEVERITY_COLORS.items():
        rows = [a for a in anomalies if a["severity"] == severity]
        if not rows:
            continue
        fig.add_trace(go.Scatter(
            name=severity, mode="markers", marker={"size": 14, "color": color, "symbol": "diamond"},
            x=[a["start_at"] for a in rows], y=[f"{a['scope_dim']}={a['scope_value']}" for a in rows],
            customdata=[a["id"] for a in rows], hovertext=[a["explanation"] for a in rows],
            hovertemplate="%{y}<br>%{x}<br>%{hovertext}<extra></extra>",
        ))
    if since is not None and until is not None:
        fig.update_xaxes(range=[since, until])
    return _base_layout(fig, title, height=300)


def anomaly_band(anomaly: dict[str, Any] | None, measures: dict[str, list] | None) -> go.Figure:
    """The scope's series around the anomaly in the anomaly's own unit and at the detector's resolution (5-minute
    buckets, rates per hour: `anomalies_data.scope_measure`), so the line, the expected band and the observed peak
    are the same quantity. An hourly total (the showback page) is a different number: 702 requests in an hour can
    hold a 5-minute burst at 852 requests/hour."""
    if anomaly is None:
        return empty_figure("Expected band", "Pick an anomaly")
    unit = anomaly["unit"]
    money = unit.startswith("usd")
    percent = unit == "error_ratio"
    scale = 100.0 if percent else 1.0  # shares drawn as percentages

    def y(value: Any) -> float | None:
        return None if value is None else float(value) * scale

    fig = go.Figure()
    for index, (name, points) in enumerate((measures or {}).items()):
        label = f"{unit_title(unit)} (5-minute buckets)" if name == "observed" else name
        fig.add_trace(go.Scatter(
            name=label, x=[p[0] for p in points], y=[y(p[1]) for p in points],
            # a rate is 0 without calls (a continuous line); a share or a mean exists only in buckets with calls
            mode="lines" if unit in RATE_COLUMNS else "lines+markers", marker={"size": 4},
            line={"color": PALETTE[index % len(PALETTE)] if index else "#2563eb", "width": 1.5},
            connectgaps=False, hovertext=[format_measure(p[1], unit) if p[1] is not None else "no calls"
                                          for p in points],
            hovertemplate="%{x}<br>%{hovertext}<extra></extra>"))
    start, end = anomaly["start_at"], anomaly["end_at"]
    low, high, expected = (y(anomaly[k]) for k in ("expected_low", "expected_high", "expected"))
    band = format_band(anomaly["expected_low"], anomaly["expected_high"], unit)
    fig.add_trace(go.Scatter(name="normal range", x=[start, end, end, start, start], y=[low, low, high, high, low],
                             fill="toself", fillcolor="rgba(34,197,94,.18)", line={"color": "rgba(34,197,94,.6)"},
                             hovertext=band, hoverinfo="text"))
    fig.add_trace(go.Scatter(name="expected", x=[start, end], y=[expected, expected], mode="lines",
                             line={"color": "#16a34a", "dash": "dot"},
                             hovertext=format_measure(anomaly["expected"], unit), hoverinfo="text"))
    fig.add_trace(go.Scatter(name="observed peak (detector)", x=[_peak_at(anomaly, measures)],
                             y=[y(anomaly["observed"])], mode="markers",
                             marker={"size": 13, "color": SEVERITY_COLORS.get(anomaly["severity"], "#ef4444")},
                             hovertext=format_measure(anomaly["observed"], unit), hoverinfo="text"))
    title = (f"{anomaly['scope_dim']}={anomaly['scope_value']}: {anomaly['kind'].replace('_', ' ')}, "
             f"peak {format_measure(anomaly['observed'], unit)}")
    return _base_layout(fig, title, height=320, yaxis_title=unit_title(unit) + (" (%)" if percent else ""),
                        yaxis_tickprefix="$" if money else "", yaxis_ticksuffix="%" if percent else "")


def _peak_at(anomaly: dict[str, Any], measures: dict[str, list] | None):
    """Where the detector's peak sits: the bucket of the anomaly whose value is closest to it (the record keeps the
    peak's value, not its time); the anomaly's end when no series is drawn."""
    inside = [p for p in (measures or {}).get("observed", []) if anomaly["start_at"] <= p[0] < anomaly["end_at"]
              and p[1] is not None]
    if not inside:
        return anomaly["end_at"]
    observed = anomaly["observed"]
    return min(inside, key=lambda p: abs(p[1] - observed))[0]


def reconciliation_chart(rows: list[Any], empty_message: str = "No provider usage reports in this range") -> go.Figure:
    """Per day, the metered cost of the days and models a provider billed against that bill: what the page's headline
    compares (`totals`). Metered cost without a cost report (a provider that sends none, a cost report not in yet) is
    left out and said under the chart; until left31 it was in the metered bar (gemini against openai's bill)."""
    title = "Metered vs provider-reported cost per day"
    compared = [r for r in rows if r.provider_cost is not None]
    left_out: dict[str, Decimal] = {}
    for r in rows:
        if r.provider_cost is None and r.ours_cost:
            left_out[r.provider] = left_out.get(r.provider, Decimal(0)) + r.ours_cost
    note = not_compared_note(left_out)
    if not compared:
        fig = empty_figure(title, empty_message)
    else:
        days = sorted({r.day for r in compared})
        ours = {d: sum((r.ours_cost for r in compared if r.day == d), Decimal(0)) for d in days}
        theirs = {d: sum((r.provider_cost for r in compared if r.day == d), Decimal(0)) for d in days}
        fig = _base_layout(go.Figure([
            go.Bar(name="metered by tokenmeter", x=days, y=[float(ours[d]) for d in days], marker_color="#2563eb",
                   hovertext=[format_usd(ours[d]) for d in days], hovertemplate="%{x}<br>%{hovertext}<extra></extra>"),
            go.Bar(name="reported by provider", x=days, y=[float(theirs[d]) for d in days], marker_color="#9ca3af",
                   hovertext=[format_usd(theirs[d]) for d in days], hovertemplate="%{x}<br>%{hovertext}<extra></extra>"),
        ]), title, barmode="group", yaxis_tickprefix="$", xaxis_tickformat="%b %d")
    if note:
        fig.add_annotation(text=note, showarrow=False, font={"size": 11, "color": "#6b7280"}, xref="paper",
                           yref="paper", x=0, xanchor="left", y=-0.34, yanchor="top", align="left")
        fig.update_layout(margin={**fig.layout.margin.to_plotly_json(), "b": 80})
    return fig


def not_compared_note(left_out: dict[str, Decimal]) -> str:
    """'Not compared: $X metered without a provider cost report (azure $a, gemini $b)', '' when nothing is left out."""
    if not left_out:
        return ""
    total = sum(left_out.values(), Decimal(0))
    parts = ", ".join(f"{provider} {format_usd(amount)}" for provider, amount in sorted(left_out.items()))
    return f"Not compared: {format_usd(total)} metered without a provider cost report ({parts})"
