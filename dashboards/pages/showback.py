"""Showback ("/showback"): cost or tokens over time by any dimension or tag, stacked or grouped, with filters.
Clicking a bar drills down (team -> users -> models); the chips above the chart remove a filter again.
The whole view lives in the URL, so it can be shared."""

from __future__ import annotations

import logging
from dataclasses import replace
from urllib.parse import parse_qs

import dash
from dash import ALL, Input, Output, State, callback, clientside_callback, ctx, dcc, html, no_update

from dashboards.access import AccessDenied, scoped_warehouse
from dashboards.charts import showback_chart
from dashboards.formatting import format_count, format_usd, format_usd_exact, to_decimal
from dashboards.finance_panel import HINT, closed_note, finance_config, finance_rows, finance_table
from dashboards.handle import WarehouseUnavailable, current_settings
from dashboards.panels import banner_content, date_range_filter, status_banner
from dashboards.showback_data import DRILL, GROUP_DIMS, ShowbackView, showback_series, showback_totals
from warehouse.backends import WarehouseError
from warehouse.month_close import whole_month

dash.register_page(__name__, path="/showback", name="Showback", title="tokenmeter - showback", order=1)

log = logging.getLogger(__name__)
FILTER_DROPDOWNS = ("team", "model", "provider")
TAG_KEYS_SQL = ("SELECT DISTINCT arrayJoin(mapKeys(tags)) AS key FROM priced_events "
                "WHERE ts >= now64(3) - INTERVAL 31 DAY AND {cond} ORDER BY key LIMIT 50")


def _tag_options() -> list[dict]:
    try:
        with scoped_warehouse() as wh:
            keys = wh.query(TAG_KEYS_SQL.replace("{cond}", wh.team_condition()))["key"].to_list()
    except Exception:  # noqa: BLE001 - tags are optional; the page works without them
        keys = []
    return [{"label": f"tag: {k}", "value": f"tag:{k}"} for k in keys]


def _choices(dim: str, view: ShowbackView) -> list[str]:
    try:
        with scoped_warehouse() as wh:
            values = wh.distinct_values(dim, since=view.filters.since, until=view.filters.until)
    except Exception:  # noqa: BLE001 - the chart callback reports errors; an empty list still works
        values = []
    return sorted({v for v in values if v} | set(view.where.get(dim, [])))


def filter_dropdown(dim: str, view: ShowbackView) -> html.Div:
    return html.Div(className="filter", children=[
        html.Label(dim.replace("_", " ").title() + "s", className="filter-label"),
        dcc.Dropdown(id={"type": "showback-filter", "dim": dim}, options=_choices(dim, view),
                     value=view.where.get(dim, []), multi=True, placeholder="all", style={"minWidth": "220px"}),
    ])


def layout(**query):
    view = ShowbackView.from_query(query)
    by_options = [{"label": d.replace("_", " "), "value": d} for d in GROUP_DIMS] + _tag_options()
    if view.by not in {o["value"] for o in by_options}:
        by_options.append({"label": view.by, "value": view.by})
    return html.Div(className="page", children=[
        html.Div(className="filter-bar", children=[
            date_range_filter("showback-dates", view.filters.start, view.filters.end),
            html.Div(className="filter", children=[
                html.Label("Split by", className="filter-label"),
                dcc.Dropdown(id="showback-by", options=by_options, value=view.by, clearable=False,
                             style={"width": "200px"}),
            ]),
            html.Div(className="filter", children=[
                html.Label("Measure", className="filter-label"),
                dcc.RadioItems(id="showback-metric", options=[{"label": " cost", "value": "cost"},
                                                              {"label": " tokens", "value": "tokens"}],
                               value=view.metric, inline=True, inputStyle={"marginLeft": "10px"}),
            ]),
            html.Div(className="filter", children=[
                html.Label("Bars", className="filter-label"),
                dcc.RadioItems(id="showback-mode", options=[{"label": " stacked", "value": "stack"},
                                                            {"label": " grouped", "value": "group"}],
                               value=view.mode, inline=True, inputStyle={"marginLeft": "10px"}),
            ]),
        ]),
        html.Div(className="filter-bar", children=[filter_dropdown(dim, view) for dim in FILTER_DROPDOWNS]),
        html.Div(id="showback-chips", className="chips"),
        status_banner("showback-status"),
        dcc.Store(id="showback-state", data=view.query_string()),
        dcc.Store(id="showback-url-sync"),
        dcc.Loading(html.Div(className="graph-card", children=dcc.Graph(
            id="showback-graph", config={"displaylogo": False}, style={"height": "380px"}))),
        html.P("Click a bar to drill down: team, then its users, then their models.", className="hint"),
        html.Div(className="table-card", children=html.Table(id="showback-table", className="data-table")),
        html.Div(id="showback-finance", className="table-card"),
    ])


def _view(state: str | None) -> ShowbackView:
    return ShowbackView.from_query({k: v[0] for k, v in parse_qs((state or "?")[1:]).items()})


@callback(
    Output("showback-state", "data"),
    Output("showback-by", "value"),
    Output({"type": "showback-filter", "dim": ALL}, "value"),
    Input("showback-dates", "start_date"),
    Input("showback-dates", "end_date"),
    Input("showback-by", "value"),
    Input("showback-metric", "value"),
    Input("showback-mode", "value"),
    Input("showback-graph", "clickData"),
    Input({"type": "showback-chip", "dim": ALL}, "n_clicks"),
    Input({"type": "showback-filter", "dim": ALL}, "value"),
    State("showback-state", "data"),
)
def update_view(start, end, by, metric, mode, click, _chips, picked, state):
    """One callback owns the view, and the controls a drill-down changes (Split by, the filter dropdowns)."""
    view = _view(state)
    trigger = ctx.triggered_id
    if isinstance(trigger, dict) and trigger.get("type") == "showback-filter":
        where = {k: v for k, v in view.where.items() if k not in FILTER_DROPDOWNS}
        for item, values in zip(ctx.inputs_list[-1], picked):
            if values:
                where[item["id"]["dim"]] = list(values)
        view = replace(view, where=where)
    elif trigger == "showback-graph" and click and click.get("points"):
        value = click["points"][0].get("customdata")
        if value and value != "other" and view.by in DRILL:
            view = view.drill(str(value))
    elif isinstance(trigger, dict) and trigger.get("type") == "showback-chip":
        if not any(_chips):
            return no_update, no_update, [no_update] * len(picked)  # chips were (re)created, not clicked
        view = view.without(trigger["dim"])
    else:
        fresh = ShowbackView.from_query({"start": start, "end": end, "by": by, "metric": metric, "mode": mode})
        view = ShowbackView(filters=fresh.filters, by=fresh.by, metric=fresh.metric, mode=fresh.mode,
                            where=view.where)
    dropdowns = [view.where.get(item["id"]["dim"], []) for item in ctx.outputs_list[2]]
    return view.query_string(), view.by, dropdowns


def chips(view: ShowbackView) -> list:
    if not view.where:
        return [html.Span("All usage you may see", className="chip-none")]
    return [html.Button(f"{dim} = {', '.join(values)}  ×", id={"type": "showback-chip", "dim": dim},
                        className="chip", n_clicks=0, title="remove this filter")
            for dim, values in view.where.items()]


def table(frame, view: ShowbackView) -> list:
    by = "API key" if view.by == "api_key" else view.by[:1].upper() + view.by[1:]  # a heading like the others
    header = html.Thead(html.Tr([html.Th(by), html.Th("Cost"), html.Th("Tokens"), html.Th("Requests")]))
    body = []
    for row in frame.iter_rows(named=True):
        cost = to_decimal(row["cost_usd"])
        # Usage with no price is not in the cost (never $0): said beside it, as on the Overview's cost by team.
        unpriced = int(row.get("unpriced_events") or 0)
        text = format_usd(cost) + (f" + {unpriced:,} unpriced" if unpriced else "")
        body.append(html.Tr([html.Td(row["value"]), html.Td(text, title=format_usd_exact(cost), className="num"),
                             html.Td(format_count(int(row["tokens"])), className="num"),
                             html.Td(f"{int(row['events']):,}", className="num")]))
    return [header, html.Tbody(body)]


@callback(
    Output("showback-graph", "figure"),
    Output("showback-table", "children"),
    Output("showback-chips", "children"),
    Output("showback-status", "children"),
    Output("showback-status", "style"),
    Output("showback-status", "className"),
    Output("showback-finance", "children"),
    Input("showback-state", "data"),
    Input("refresh", "n_intervals"),
)
def render(state, _n_intervals):
    view = _view(state)
    try:
        with scoped_warehouse() as wh:
            series = showback_series(wh, view)
            totals = showback_totals(wh, view)
            finance = _finance(wh, view)
    except (WarehouseUnavailable, AccessDenied) as exc:
        return showback_chart(series_empty(), view.by, view.metric, view.mode, view.filters.bucket), [], \
            chips(view), *banner_content(str(exc), "error"), []
    except Exception as exc:  # noqa: BLE001
        log.exception("showback query failed")
        return no_update, no_update, chips(view), *banner_content(f"Query failed: {exc}", "error"), no_update
    figure = showback_chart(series, view.by, view.metric, view.mode, view.filters.bucket)
    message = None if series.height else "No usage for this selection."
    return figure, table(totals, view), chips(view), *banner_content(message), finance


def _finance(wh, view: ShowbackView) -> list:
    """Cost centers with direct / allocated / total for the range (a bad mapping file is shown, not raised)."""
    try:
        config = finance_config(current_settings())
    except WarehouseError as exc:
        return [html.Pre(str(exc), className="banner error", id="showback-finance-error")]
    note = closed_note(view.filters.since, view.filters.until)
    if config is None:
        return note + [html.P(HINT, className="hint")]
    try:
        rows, corrected = finance_rows(wh, config, view.filters.since, view.filters.until)
    except WarehouseError as exc:  # e.g. raw events of the range gone: say so, keep the rest of the page
        return note + [html.Pre(str(exc), className="banner error", id="showback-finance-error")]
    return note + finance_table(rows, corrected, whole_month(view.filters.since, view.filters.until) or "")


def series_empty():
    import polars as pl

    return pl.DataFrame({"bucket": [], "value": [], "tokens": [], "cost_usd": []})


clientside_callback(
    """
    function(state) {
        if (!state) { return window.dash_clientside.no_update; }
        const target = window.location.pathname + state;
        if (target !== window.location.pathname + window.location.search) {
            window.history.replaceState(window.history.state, '', target);
        }
        return window.dash_clientside.no_update;
    }
    """,
    Output("showback-url-sync", "data"),
    Input("showback-state", "data"),
)
