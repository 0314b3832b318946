"""Models ("/models"): cost per model and the effective cost per 1k tokens."""

from __future__ import annotations

import logging
from decimal import ROUND_HALF_UP, Decimal

import dash
from dash import Input, Output, callback, html

from dashboards.filters import Filters
from dashboards.formatting import format_count, format_usd, format_usd_exact
from dashboards.handle import WarehouseUnavailable, current_handle
from dashboards.overview_data import ModelSpend, build_models_table
from dashboards.panels import banner_content, date_range_filter, status_banner

dash.register_page(__name__, path="/models", name="Models", title="tokenmeter - cost per model", order=1)

log = logging.getLogger(__name__)
HEADERS = ("Provider", "Model", "Cost", "Events", "Input tokens", "Output tokens", "Cost / 1k tokens", "Unpriced events")


def layout(start: str | None = None, end: str | None = None, team: str | list[str] | None = None, **_):
    filters = Filters.from_inputs(start, end, team)
    return html.Div(className="page", children=[
        html.Div(className="filter-bar", children=[date_range_filter("models-dates", filters.start, filters.end)]),
        status_banner("models-status"),
        html.Div(className="table-card", children=html.Table(id="models-table", className="data-table")),
    ])


def format_rate(rate: Decimal | None) -> str:
    if rate is None:
        return "unpriced"
    return "$" + format(rate.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP), "f")


def table_rows(models: list[ModelSpend]) -> list[html.Tr]:
    rows = []
    for row in models:
        rows.append(html.Tr(className="row-warn" if row.unpriced_events else "", children=[
            html.Td(row.provider),
            html.Td(row.model),
            # A model with no price shows "unpriced", never "$0.00".
            html.Td("unpriced" if row.all_unpriced else format_usd(row.cost_usd),
                    title=format_usd_exact(row.cost_usd), className="num"),
            html.Td(format_count(row.events), className="num"),
            html.Td(f"{row.input_tokens:,}", className="num"),
            html.Td(f"{row.output_tokens:,}", className="num"),
            html.Td(format_rate(row.cost_per_1k_tokens), className="num"),
            html.Td(f"{row.unpriced_events:,}", className="num"),
        ]))
    return rows


@callback(
    Output("models-table", "children"),
    Output("models-status", "children"),
    Output("models-status", "style"),
    Output("models-status", "className"),
    Input("models-dates", "start_date"),
    Input("models-dates", "end_date"),
    Input("refresh", "n_intervals"),
)
def refresh_models(start, end, _n_intervals):
    filters = Filters.from_inputs(start, end, None)
    header = html.Thead(html.Tr([html.Th(h) for h in HEADERS]))
    try:
        with current_handle().use() as warehouse:
            models = build_models_table(warehouse, filters)
    except WarehouseUnavailable as exc:
        return [header], *banner_content(str(exc), "error")
    except Exception as exc:  # noqa: BLE001
        log.exception("models query failed")
        return [header], *banner_content(f"Query failed: {exc}", "error")
    message = None if models else "No data yet, waiting for events."
    return [header, html.Tbody(table_rows(models))], *banner_content(message)
