"""Figures of the showback, budget, anomaly and reconciliation pages. As in figures.py, Decimal becomes float
only for positions on a chart; every number shown as text is formatted from the Decimal."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import plotly.graph_objects as go
import polars as pl

from dashboards.budgets_data import BudgetStatus
from dashboards.figures import PALETTE, _base_layout, empty_figure, team_colors
from dashboards.formatting import format_count, format_usd, to_decimal

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


def burn_down(history: list[BudgetStatus]) -> go.Figure:
    """Remaining budget over the period, a dotted forecast to the period end, and the zero line."""
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
    title = f"{last.budget}: {fmt(last.spend)} of {fmt(last.limit)} used ({last.percent}%), period {last.period_key}"
    return _base_layout(fig, title, yaxis_title=f"{unit} left", height=360)


def anomaly_timeline(anomalies: list[dict[str, Any]]) -> go.Figure:
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
    return _base_layout(fig, title, height=300)


def anomaly_band(anomaly: dict[str, Any] | None, series: pl.DataFrame) -> go.Figure:
    """The scope's hourly series around the anomaly, with the expected band where the detector set one."""
    if anomaly is None:
        return empty_figure("Expected band", "Pick an anomaly")
    money = anomaly["unit"].startswith("usd")
    column = "cost_usd" if money else "output_tokens"
    fig = go.Figure()
    if series.height and column in series.columns:
        frame = series.sort("bucket")
        fig.add_trace(go.Scatter(name="observed per hour", x=frame["bucket"].to_list(),
                                 y=[float(v) for v in frame[column].to_list()], mode="lines+markers",
                                 line={"color": "#2563eb"}))
    start, end = anomaly["start_at"], anomaly["end_at"]
    low, high, expected = (float(anomaly[k]) for k in ("expected_low", "expected_high", "expected"))
    fig.add_trace(go.Scatter(name="expected band", x=[start, end, end, start, start], y=[low, low, high, high, low],
                             fill="toself", fillcolor="rgba(34,197,94,.18)", line={"color": "rgba(34,197,94,.6)"},
                             hoverinfo="skip"))
    fig.add_trace(go.Scatter(name="expected", x=[start, end], y=[expected, expected], mode="lines",
                             line={"color": "#16a34a", "dash": "dot"}))
    fig.add_trace(go.Scatter(name="observed (detector)", x=[end], y=[float(anomaly["observed"])], mode="markers",
                             marker={"size": 13, "color": SEVERITY_COLORS.get(anomaly["severity"], "#ef4444")}))
    title = f"{anomaly['scope_dim']}={anomaly['scope_value']}: {anomaly['kind']} ({anomaly['unit']})"
    return _base_layout(fig, title, height=340, yaxis_tickprefix="$" if money else "")


def reconciliation_chart(rows: list[Any]) -> go.Figure:
    title = "Metered vs provider-reported cost per day"
    reported = [r for r in rows if r.provider_cost is not None or r.ours_cost]
    if not reported:
        return empty_figure(title, "No provider usage reports in this range")
    days = sorted({r.day for r in reported})
    ours = {d: sum((r.ours_cost for r in reported if r.day == d), Decimal(0)) for d in days}
    theirs = {d: sum((r.provider_cost or Decimal(0) for r in reported if r.day == d), Decimal(0)) for d in days}
    fig = go.Figure([
        go.Bar(name="metered by tokenmeter", x=days, y=[float(ours[d]) for d in days], marker_color="#2563eb",
               hovertext=[format_usd(ours[d]) for d in days], hovertemplate="%{x}<br>%{hovertext}<extra></extra>"),
        go.Bar(name="reported by provider", x=days, y=[float(theirs[d]) for d in days], marker_color="#9ca3af",
               hovertext=[format_usd(theirs[d]) for d in days], hovertemplate="%{x}<br>%{hovertext}<extra></extra>"),
    ])
    return _base_layout(fig, title, barmode="group", yaxis_tickprefix="$", xaxis_tickformat="%b %d")
