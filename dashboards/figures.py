"""Plotly figures, one builder per chart. Decimal becomes float here and only here: for bar heights,
never for a number printed as text (labels are formatted from the Decimal)."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
from plotly.colors import qualitative

from dashboards.formatting import format_count, format_usd, to_decimal
from dashboards.overview_data import ModelSpend, TeamSpend

UNPRICED_COLOR = "#f59e0b"  # amber: usage without a price is a warning, not zero cost
PALETTE = qualitative.Safe + qualitative.Vivid


def team_colors(teams: list[str]) -> dict[str, str]:
    """Same team, same colour on every chart; sorted so the mapping does not depend on query order."""
    return {team: PALETTE[i % len(PALETTE)] for i, team in enumerate(sorted(set(teams)))}


# Plotly's mode bar (zoom, pan, download: ~25 px high at the top right) shared the title's row and covered the end of
# a long title on a narrow window. The title gets its own row below the mode bar: its top at TITLE_TOP px from the
# figure's top, the plot below it from TOP_MARGIN.
TITLE_TOP = 30
TOP_MARGIN = 60


def _base_layout(fig: go.Figure, title: str, **extra) -> go.Figure:
    layout = {
        "title": {"text": title, "x": 0.01, "font": {"size": 15}, "yref": "container", "y": 1, "yanchor": "top",
                  "pad": {"t": TITLE_TOP}},
        "template": "plotly_white",
        "margin": {"l": 50, "r": 20, "t": TOP_MARGIN, "b": 40},
        "height": 320,
        "legend": {"orientation": "h", "y": -0.18},
    }
    fig.update_layout(**{**layout, **extra})
    return fig


def empty_figure(title: str, message: str = "No data yet, waiting for events") -> go.Figure:
    fig = _base_layout(go.Figure(), title)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.add_annotation(text=message, showarrow=False, font={"size": 14, "color": "#6b7280"},
                       xref="paper", yref="paper", x=0.5, y=0.5)
    return fig


def cost_by_team(by_team: list[TeamSpend]) -> go.Figure:
    title = "Cost by team"
    if not by_team:
        return empty_figure(title)
    teams = [row.team for row in by_team]
    costs = [row.cost_usd for row in by_team]
    unpriced = [row.unpriced_events for row in by_team]
    colors = team_colors(teams)
    labels = [format_usd(c) + (f" + {n:,} unpriced" if n else "") for c, n in zip(costs, unpriced)]
    fig = go.Figure(go.Bar(
        x=teams, y=[float(c) for c in costs], text=labels, textposition="auto", textangle=0,
        marker_color=[colors[t] for t in teams], customdata=unpriced,
        hovertemplate="%{x}<br>%{text}<br>unpriced events: %{customdata}<extra></extra>",
    ))
    return _base_layout(fig, title, yaxis_title="USD", yaxis_tickprefix="$")


def _model_label(cost, unpriced_events: int) -> str:
    if unpriced_events and cost == 0:
        return f"unpriced ({unpriced_events:,} event{'s' if unpriced_events != 1 else ''})"
    if unpriced_events:
        return f"{format_usd(cost)} + {unpriced_events:,} unpriced"
    return format_usd(cost)


def model_labels(rows: list[ModelSpend]) -> list[str]:
    """The model's name, or "provider/model" where two providers serve that name: one axis label per bar, so
    openai's and azure's gpt-4o are two bars, not one drawn over the other."""
    providers: dict[str, set[str]] = {}
    for row in rows:
        providers.setdefault(row.model, set()).add(row.provider)
    return [f"{row.provider}/{row.model}" if len(providers[row.model]) > 1 else row.model for row in rows]


def cost_by_model(by_model: list[ModelSpend], top: int = 12) -> go.Figure:
    title = "Cost by model"
    if not by_model:
        return empty_figure(title)
    rows = list(reversed(by_model[:top]))  # largest at the top of a horizontal bar chart
    models = model_labels(rows)
    costs = [row.cost_usd for row in rows]
    unpriced = [row.unpriced_events for row in rows]
    labels = [_model_label(cost, n) for cost, n in zip(costs, unpriced)]
    fig = go.Figure(go.Bar(
        # Outside labels stay horizontal and readable on tiny bars, and a $0 unpriced model still shows its label.
        y=models, x=[float(c) for c in costs], orientation="h", text=labels, textposition="outside",
        cliponaxis=False,
        marker_color=[UNPRICED_COLOR if n and c == 0 else "#2563eb" for c, n in zip(costs, unpriced)],
        hovertemplate="%{y}<br>%{text}<extra></extra>",
    ))
    return _base_layout(fig, title, xaxis_title="USD", xaxis_tickprefix="$", margin={"l": 50, "r": 90, "t": TOP_MARGIN, "b": 40})


def cost_over_time(over_time: pl.DataFrame, bucket: str) -> go.Figure:
    title = f"Cost per {bucket} by team"
    if not over_time.height:
        return empty_figure(title)
    frame = over_time.sort("bucket")
    teams = sorted(set(frame["team"].to_list()))
    colors = team_colors(teams)
    fig = go.Figure()
    for team in teams:
        rows = frame.filter(pl.col("team") == team)
        costs = [to_decimal(c) for c in rows["cost_usd"].to_list()]
        fig.add_trace(go.Bar(
            name=team, x=rows["bucket"].to_list(), y=[float(c) for c in costs],
            marker_color=colors[team], customdata=[format_usd(c) for c in costs],
            hovertemplate=f"{team}<br>%{{x}}<br>%{{customdata}}<extra></extra>",
        ))
    tickformat = "%b %d" if bucket == "day" else None  # a day bucket has no meaningful time of day
    return _base_layout(fig, title, barmode="stack", yaxis_title="USD", yaxis_tickprefix="$",
                        xaxis_tickformat=tickformat)


def tokens_by_team(by_team: list[TeamSpend]) -> go.Figure:
    title = "Tokens by team"
    if not by_team:
        return empty_figure(title)
    teams = [row.team for row in by_team]
    fig = go.Figure()
    for column, name, color in (
        ("input_tokens", "input (priced)", "#2563eb"),
        ("output_tokens", "output (priced)", "#93c5fd"),
        ("unpriced_tokens", "unpriced (no price found)", UNPRICED_COLOR),
    ):
        values = [getattr(row, column) for row in by_team]
        if column == "unpriced_tokens" and not any(values):
            continue  # no empty legend entry when everything is priced
        fig.add_trace(go.Bar(
            name=name, x=teams, y=values, marker_color=color,
            customdata=[format_count(v) for v in values],
            hovertemplate=f"%{{x}}<br>{name}: %{{customdata}}<extra></extra>",
        ))
    return _base_layout(fig, title, barmode="stack", yaxis_title="tokens")
