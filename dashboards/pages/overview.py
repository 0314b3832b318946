"""Overview ("/"): KPI cards, cost and token charts, date and team filters kept in the URL, and (finance) the
health of every source: last event, events in the last hour against its usual level, dead letters, and whether
it is stale, dropping or rejecting (warehouse/completeness.py)."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta

import dash
from dash import ALL, Input, Output, State, callback, clientside_callback, ctx, dcc, html

from dashboards import figures
from dashboards.filters import Filters
from dashboards.formatting import format_count, format_usd, format_usd_change, format_usd_exact
from dashboards.access import AccessDenied, scoped_warehouse
from dashboards.handle import WarehouseUnavailable
from dashboards.overview_data import OverviewData, build_overview
from dashboards.summary_data import Headline, Mover, headline, movers_and_previous_total
from dashboards.panels import (
    GRAPH_TYPE,
    KPI_TYPE,
    banner_content,
    date_range_filter,
    graph_card,
    kpi_card,
    status_banner,
    team_filter,
)

dash.register_page(__name__, path="/", name="Overview", title="tokenmeter - spend overview", order=0)

log = logging.getLogger(__name__)

KPIS = {
    "today": "Spend today (UTC)",
    "month": "Month to date",
    "budgets": "Budgets",
    "cost": "Cost in range",
    "events": "Events",
    "input_tokens": "Input tokens",
    "output_tokens": "Output tokens",
    "unpriced": "Unpriced events",
}
PANELS = ("cost_by_team", "cost_by_model", "cost_over_time", "tokens_by_team")
PANEL_TITLES = {"cost_by_team": "Cost by team", "cost_by_model": "Cost by model",
                "cost_over_time": "Cost over time by team", "tokens_by_team": "Tokens by team"}


def layout(start: str | None = None, end: str | None = None, team: str | list[str] | None = None, **_):
    """Initial filter values come from the query string, so a shared link opens the same view."""
    filters = Filters.from_inputs(start, end, team)
    return html.Div(className="page", children=[
        html.Div(className="filter-bar", children=[
            date_range_filter("overview-dates", filters.start, filters.end),
            team_filter("overview-teams", filters.teams),
        ]),
        status_banner("overview-status"),
        html.Div(className="kpi-row", children=[kpi_card(name, title) for name, title in KPIS.items()]),
        html.Div(className="graph-grid", children=[graph_card(panel) for panel in PANELS]),
        html.H3("Top movers (vs the previous period of the same length)", className="section-title"),
        dcc.Loading(html.Div(className="table-card", children=html.Table(id="overview-movers", className="data-table"))),
        html.Div(id="overview-sources-card", children=[
            html.H3("Sources (last hour against the same hour on the previous 7 days)", className="section-title"),
            html.Div(className="table-card", children=html.Table(id="overview-sources", className="data-table")),
        ]),
        dcc.Store(id="overview-url-sync"),
    ])


def headline_texts(head: Headline | None) -> dict[str, tuple[str, str, str]]:
    if head is None:
        return {name: ("-", "", "") for name in ("today", "month", "budgets")}
    if not head.budgets:
        budgets = ("none", "no budget reported yet", "")
    else:
        worst = head.budgets[0]
        states = Counter(b.state for b in head.budgets)  # pending / unknown: not counted as ok (trust35)
        budgets = (f"{len(head.at_risk)} of {len(head.budgets)} at risk" if head.at_risk else
                   ", ".join(f"{states[s]} {s}" for s in ("ok", "pending", "unknown") if states[s]),
                   f"worst: {worst.budget} {worst.percent}% ({worst.state})", "")
    return {"today": (format_usd(head.today_usd), "", format_usd_exact(head.today_usd)),
            "month": (format_usd(head.month_usd), "", format_usd_exact(head.month_usd)),
            "budgets": budgets}


def movers_rows(movers: list[Mover], note: str | None = None) -> list:
    """The movers table; `note`: why it is empty or what its rows mean (a failed query, no previous usage)."""
    header = html.Thead(html.Tr([html.Th(h) for h in ("Team", "Model", "Previous", "Now", "Change")]))
    if not movers:
        return [header, html.Tbody(html.Tr(html.Td(note or "No change against the previous period.", colSpan=5)))]
    body = []
    for m in movers:
        pct = f" ({m.change_percent:+}%)" if m.change_percent is not None else " (new)"
        body.append(html.Tr(className="row-up" if m.change > 0 else "row-down", children=[
            html.Td(m.team), html.Td(m.model), html.Td(format_usd(m.before), className="num"),
            html.Td(format_usd(m.now), className="num"),
            html.Td(format_usd_change(m.change) + pct, className="num"),
        ]))
    if note:
        body.append(html.Tr(className="note", children=html.Td(note, colSpan=5)))
    return [header, html.Tbody(body)]


def kpi_texts(data: OverviewData, head: Headline | None = None) -> dict[str, tuple[str, str, str]]:
    """name -> (value text, detail text, tooltip). Totals are formatted from Decimal, never from floats."""
    k = data.kpis
    if not k.events:
        unpriced_detail = cost_detail = ""
    elif k.unpriced_events:
        unpriced_detail = f"{format_count(k.unpriced_tokens)} tokens with no price, not counted as $0"
        cost_detail = "priced events only"
    else:
        unpriced_detail, cost_detail = "every event priced", "all events priced"
    return {
        **headline_texts(head),
        "cost": (format_usd(k.cost_usd), cost_detail,
                 format_usd_exact(k.cost_usd)),
        "events": (format_count(k.events), "", f"{k.events:,}"),
        "input_tokens": (format_count(k.input_tokens), "", f"{k.input_tokens:,}"),
        "output_tokens": (format_count(k.output_tokens), "", f"{k.output_tokens:,}"),
        "unpriced": (format_count(k.unpriced_events), unpriced_detail, f"{k.unpriced_events:,}"),
    }


def panel_figures(data: OverviewData | None) -> dict[str, object]:
    if data is None or not data.has_data:
        return {panel: figures.empty_figure(PANEL_TITLES[panel]) for panel in PANELS}
    return {
        "cost_by_team": figures.cost_by_team(data.by_team),
        "cost_by_model": figures.cost_by_model(data.by_model),
        "cost_over_time": figures.cost_over_time(data.over_time, data.bucket),
        "tokens_by_team": figures.tokens_by_team(data.by_team),
    }


@callback(
    Output({"type": KPI_TYPE, "name": ALL}, "children"),
    Output({"type": KPI_TYPE, "name": ALL}, "title"),
    Output({"type": "kpi-detail", "name": ALL}, "children"),
    Output({"type": "kpi-card", "name": ALL}, "className"),
    Output({"type": GRAPH_TYPE, "panel": ALL}, "figure"),
    Output("overview-status", "children"),
    Output("overview-status", "style"),
    Output("overview-status", "className"),
    Input("overview-dates", "start_date"),
    Input("overview-dates", "end_date"),
    Input("overview-teams", "value"),
    Input("refresh", "n_intervals"),
)
def refresh_overview(start, end, teams, _n_intervals):
    filters = Filters.from_inputs(start, end, teams)
    data, head, message, level = None, None, None, "info"
    try:
        with scoped_warehouse() as warehouse:
            data = build_overview(warehouse, filters)
            head = headline(warehouse, filters)
        if not data.has_data:
            message = ("No events for these teams in this date range." if filters.teams
                       else "No data yet, waiting for events. Charts fill in as soon as the loader writes usage.")
    except (WarehouseUnavailable, AccessDenied) as exc:
        message, level = str(exc), "error"
    except Exception as exc:  # noqa: BLE001 - keep the page alive, log the detail for operators
        log.exception("overview query failed")
        message, level = f"Query failed: {exc}", "error"

    texts = kpi_texts(data, head) if data is not None else {name: ("-", "", "") for name in KPIS}
    kpi_ids = [item["id"]["name"] for item in ctx.outputs_list[0]]
    card_classes = []
    for name in (item["id"]["name"] for item in ctx.outputs_list[3]):
        warn = name == "unpriced" and data is not None and data.kpis.unpriced_events > 0
        card_classes.append("kpi-card kpi-warn" if warn else "kpi-card")
    figs = panel_figures(data)
    return (
        [texts[name][0] for name in kpi_ids],
        [texts[name][2] for name in kpi_ids],
        [texts[item["id"]["name"]][1] for item in ctx.outputs_list[2]],
        card_classes,
        [figs[item["id"]["panel"]] for item in ctx.outputs_list[4]],
        *banner_content(message, level),
    )


@callback(
    Output("overview-teams", "options"),
    Input("overview-dates", "start_date"),
    Input("overview-dates", "end_date"),
    Input("refresh", "n_intervals"),
    State("overview-teams", "value"),
)
def refresh_team_options(start, end, _n_intervals, selected):
    filters = Filters.from_inputs(start, end, None)
    try:
        with scoped_warehouse() as warehouse:
            teams = [t for t in warehouse.distinct_values("team", since=filters.since, until=filters.until) if t]
    except Exception:  # noqa: BLE001 - the overview callback reports the error; keep the selection usable
        teams = []
    # A team chosen via a shared link stays selectable even if it has no events in the new range.
    return [{"label": t, "value": t} for t in sorted(set(teams) | set(selected or []))]


@callback(
    Output("overview-movers", "children"),
    Input("overview-dates", "start_date"),
    Input("overview-dates", "end_date"),
    Input("overview-teams", "value"),
    Input("refresh", "n_intervals"),
)
def refresh_movers(start, end, teams, _n_intervals):
    filters = Filters.from_inputs(start, end, teams)
    try:
        with scoped_warehouse() as warehouse:
            movers, previous_total = movers_and_previous_total(warehouse, filters)
    except Exception as exc:  # noqa: BLE001 - the KPI callback shows the banner; keep this table readable
        log.debug("top movers unavailable: %s", exc)
        return movers_rows([], "Top movers are unavailable right now (see the message above).")
    note = None
    if movers and previous_total == 0:
        # Without it every row reads "(new)", as if each team had just started on each model.
        first, last = filters.since - (filters.until - filters.since), filters.since - timedelta(days=1)
        note = (f"Nothing was spent in the previous period ({first:%Y-%m-%d} to {last:%Y-%m-%d}, before the data "
                "starts?), so every team and model reads as new.")
    return movers_rows(movers, note)


SOURCE_HEADERS = ("Source", "Status", "Last event (UTC)", "Events, last hour", "Usual", "Dead letters, last hour")


def sources_rows(rows: list) -> list:
    from warehouse.completeness import PROBLEMS

    header = html.Thead(html.Tr([html.Th(h) for h in SOURCE_HEADERS]))
    if not rows:
        return [header, html.Tbody(html.Tr(html.Td("No source has sent anything in the last 8 days.", colSpan=6)))]
    body = []
    for h in rows:
        body.append(html.Tr(className="row-bad" if h.problem else "", **{"data-status": h.status}, children=[
            html.Td(h.source), html.Td(h.status, title=PROBLEMS.get(h.status, "")),
            html.Td(h.last_event.strftime("%Y-%m-%d %H:%M") if h.last_event else "never"),
            html.Td(format_count(h.last_hour), className="num"),
            html.Td("-" if h.usual is None else f"{h.usual.normalize():f}", className="num"),
            html.Td(format_count(h.deadletters_last_hour), className="num"),
        ]))
    return [header, html.Tbody(body)]


@callback(
    Output("overview-sources", "children"),
    Output("overview-sources-card", "style"),
    Input("refresh", "n_intervals"),
)
def refresh_sources(_n_intervals):
    """Sources are not any one team's: finance sees them, team users do not see the section."""
    from dashboards.handle import current_settings
    from warehouse.completeness import Limits, source_health

    try:
        with scoped_warehouse() as warehouse:
            if warehouse.team is not None:
                return [], {"display": "none"}
            rows = source_health(warehouse, limits=Limits.from_settings(current_settings()))
    except Exception as exc:  # noqa: BLE001 - the KPI callback shows the banner; keep the page readable
        log.debug("source health unavailable: %s", exc)
        return sources_rows([]), {}
    return sources_rows(rows), {}


# The URL follows the filters without a navigation: replaceState does not re-run the page router.
clientside_callback(
    """
    function(start, end, teams) {
        const params = new URLSearchParams();
        if (start) { params.set('start', String(start).slice(0, 10)); }
        if (end) { params.set('end', String(end).slice(0, 10)); }
        if (teams && teams.length) { params.set('team', teams.join(',')); }
        const target = window.location.pathname + '?' + params.toString();
        if (target !== window.location.pathname + window.location.search) {
            window.history.replaceState(window.history.state, '', target);
        }
        return window.dash_clientside.no_update;
    }
    """,
    Output("overview-url-sync", "data"),
    Input("overview-dates", "start_date"),
    Input("overview-dates", "end_date"),
    Input("overview-teams", "value"),
)
