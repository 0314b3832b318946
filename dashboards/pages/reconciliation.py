"""Reconciliation ("/reconciliation", finance only): our metered cost against the provider-reported cost per day
and model, with differences above 2 % highlighted. Provider reports come from `tokenmeter collect
openai-usage` / `anthropic-usage`."""

from __future__ import annotations

import logging

import dash
from dash import Input, Output, callback, dcc, html

from dashboards.access import AccessDenied, scoped_warehouse
from dashboards.charts import reconciliation_chart
from dashboards.filters import Filters
from dashboards.formatting import format_count, format_usd, format_usd_exact
from dashboards.handle import WarehouseUnavailable
from dashboards.panels import banner_content, date_range_filter, status_banner
from dashboards.reconciliation_data import FLAG_RATIO, ReconRow, reconcile, totals
from dashboards.tables import TableMissing

dash.register_page(__name__, path="/reconciliation", name="Reconciliation", title="tokenmeter - reconciliation",
                   order=5, finance_only=True)

log = logging.getLogger(__name__)
HEADERS = ("Day", "Provider", "Model", "Metered", "Provider-reported", "Difference", "Metered tokens",
           "Provider tokens")


def layout(start: str | None = None, end: str | None = None, **_):
    filters = Filters.from_inputs(start, end, None)
    return html.Div(className="page", children=[
        html.Div(className="filter-bar", children=[date_range_filter("recon-dates", filters.start, filters.end)]),
        status_banner("recon-status"),
        html.Div(id="recon-summary", className="recon-summary"),
        html.Div(className="graph-card", children=dcc.Graph(id="recon-chart", style={"height": "320px"},
                                                             config={"displaylogo": False})),
        dcc.Loading(html.Div(className="table-card", style={"marginTop": "12px"},
                             children=html.Table(id="recon-table", className="data-table"))),
    ])


def table_rows(rows: list[ReconRow]) -> list:
    header = html.Thead(html.Tr([html.Th(h) for h in HEADERS]))
    body = []
    for r in rows:
        diff = r.difference
        body.append(html.Tr(className="row-bad" if r.flagged else "", children=[
            html.Td(r.day.isoformat()), html.Td(r.provider), html.Td(r.model or "-"),
            html.Td(format_usd(r.ours_cost), title=format_usd_exact(r.ours_cost), className="num"),
            html.Td("not reported" if r.provider_cost is None else format_usd(r.provider_cost),
                    title="" if r.provider_cost is None else format_usd_exact(r.provider_cost), className="num"),
            html.Td("-" if diff is None else ("+" if diff > 0 else "") + format_usd(diff),
                    title="" if diff is None else format_usd_exact(diff), className="num diff"),
            html.Td(format_count(r.ours_tokens), className="num"),
            html.Td("-" if r.provider_tokens is None else format_count(r.provider_tokens), className="num"),
        ]))
    return [header, html.Tbody(body)]


@callback(
    Output("recon-table", "children"),
    Output("recon-chart", "figure"),
    Output("recon-summary", "children"),
    Output("recon-status", "children"),
    Output("recon-status", "style"),
    Output("recon-status", "className"),
    Input("recon-dates", "start_date"),
    Input("recon-dates", "end_date"),
    Input("refresh", "n_intervals"),
)
def refresh_reconciliation(start, end, _n_intervals):
    filters = Filters.from_inputs(start, end, None)
    try:
        with scoped_warehouse() as wh:
            rows = reconcile(wh, filters.since, filters.until)
    except TableMissing:
        return table_rows([]), reconciliation_chart([]), "", *banner_content(
            "No provider usage yet: run `tokenmeter collect openai-usage` or `anthropic-usage`.")
    except (WarehouseUnavailable, AccessDenied) as exc:
        return table_rows([]), reconciliation_chart([]), "", *banner_content(str(exc), "error")
    except Exception as exc:  # noqa: BLE001
        log.exception("reconciliation query failed")
        return table_rows([]), reconciliation_chart([]), "", *banner_content(f"Query failed: {exc}", "error")
    ours, theirs = totals(rows)
    flagged = sum(1 for r in rows if r.flagged)
    summary = (f"On days and models the providers reported: metered {format_usd(ours)}, provider-reported "
               f"{format_usd(theirs)}, difference {format_usd(ours - theirs)}. {flagged} row(s) differ by more "
               f"than {FLAG_RATIO * 100:.0f} %.")
    message = None if rows else "Nothing to compare in this range."
    return table_rows(rows), reconciliation_chart(rows), summary, *banner_content(message)
