"""Layout builders, one function per panel. Ids are dicts so one pattern-matching callback fills them all."""

from __future__ import annotations

from datetime import date

from dash import dcc, html

KPI_TYPE = "kpi"
GRAPH_TYPE = "overview-graph"


def kpi_card(name: str, title: str) -> html.Div:
    return html.Div(
        className="kpi-card",
        id={"type": "kpi-card", "name": name},
        children=[
            html.Div(title, className="kpi-title"),
            html.Div("…", id={"type": KPI_TYPE, "name": name}, className="kpi-value"),
            html.Div("", id={"type": "kpi-detail", "name": name}, className="kpi-detail"),
        ],
    )


def graph_card(panel: str) -> html.Div:
    return html.Div(
        className="graph-card",
        children=dcc.Graph(id={"type": GRAPH_TYPE, "panel": panel}, config={"displaylogo": False, "displayModeBar": "hover"},
                           style={"height": "320px"}),
    )


def date_range_filter(component_id: str, start: date, end: date) -> html.Div:
    return html.Div(className="filter", children=[
        html.Label("Date range (UTC)", className="filter-label"),
        dcc.DatePickerRange(id=component_id, start_date=start.isoformat(), end_date=end.isoformat(),
                            display_format="YYYY-MM-DD", first_day_of_week=1),
    ])


def team_filter(component_id: str, teams: list[str]) -> html.Div:
    return html.Div(className="filter filter-wide", children=[
        html.Label("Teams", className="filter-label"),
        dcc.Dropdown(id=component_id, options=[{"label": t, "value": t} for t in teams], value=teams,
                     multi=True, placeholder="All teams"),
    ])


def status_banner(component_id: str) -> html.Div:
    """Empty-state and error messages go here instead of into tracebacks."""
    return html.Div(id=component_id, className="status-banner", style={"display": "none"})


def banner_content(message: str | None, level: str = "info") -> tuple[str, dict, str]:
    """(children, style, className) for a status banner; hidden when there is nothing to say."""
    if not message:
        return "", {"display": "none"}, "status-banner"
    return message, {}, f"status-banner status-{level}"


def preselected(value: str | None) -> list[dict]:
    """Options for a dropdown whose value comes from the URL before its real options are loaded: Dash 4's Dropdown
    clears a value that is not among its options on mount (`setProps({value: null})` in dcc's Dropdown.tsx), and
    that clear can land after the callback that loads the options and keeps the value, leaving 'pick ...' shown."""
    return [{"label": value, "value": value}] if value else []
