"""Models ("/models"): what each model costs per 1k tokens and per request, how much caching saves, how fast it
answers, and which features drive the most output tokens."""

from __future__ import annotations

import logging
from decimal import ROUND_HALF_UP, Decimal

import dash
from dash import Input, Output, callback, dcc, html

from dashboards.access import AccessDenied, scoped_warehouse
from dashboards.filters import Filters
from dashboards.formatting import format_count, format_usd, format_usd_exact
from dashboards.handle import WarehouseUnavailable
from dashboards.models_data import ModelEconomics, model_economics, output_drivers
from dashboards.panels import banner_content, date_range_filter, status_banner

dash.register_page(__name__, path="/models", name="Models", title="tokenmeter - cost per model", order=3)

log = logging.getLogger(__name__)
HEADERS = ("Provider", "Model", "Cost", "Requests", "Cost / 1k tokens", "Tokens / request", "Output / input",
           "Cache hits", "Cache savings", "Latency avg (p95)", "TTFT avg", "Unpriced")
DRIVER_HEADERS = ("Feature", "Model", "Output tokens", "Requests", "Cost")


def layout(start: str | None = None, end: str | None = None, team: str | list[str] | None = None, **_):
    filters = Filters.from_inputs(start, end, team)
    return html.Div(className="page", children=[
        html.Div(className="filter-bar", children=[date_range_filter("models-dates", filters.start, filters.end)]),
        status_banner("models-status"),
        dcc.Loading(html.Div(className="table-card", children=html.Table(id="models-table", className="data-table"))),
        html.P(className="hint", children=(
            "Successful calls only. Latency and TTFT (time to first token) show \"-\" where the gateways did not log "
            "them; cache savings are an estimate: cached tokens at the model's uncached input rate, minus what they "
            "cost.")),
        html.H3("Features driving the most output tokens", className="section-title"),
        html.Div(className="table-card", children=html.Table(id="models-drivers", className="data-table")),
    ])


def _fixed(value: Decimal | None, places: str) -> str:
    return "-" if value is None else format(value.quantize(Decimal(places), rounding=ROUND_HALF_UP), "f")


def format_rate(rate: Decimal | None) -> str:
    return "unpriced" if rate is None else "$" + _fixed(rate, "0.000001")


def _whole(value: Decimal | None) -> str:
    return "-" if value is None else f"{value.quantize(Decimal(1), rounding=ROUND_HALF_UP):,}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def table_rows(models: list[ModelEconomics]) -> list[html.Tr]:
    rows = []
    for row in models:
        share = row.cache_hit_share
        rows.append(html.Tr(className="row-warn" if row.unpriced_events else "", children=[
            html.Td(row.provider),
            html.Td(row.model),
            # A model with no price shows "unpriced", never "$0.00".
            html.Td("unpriced" if row.all_unpriced else format_usd(row.cost_usd),
                    title=format_usd_exact(row.cost_usd), className="num"),
            html.Td(format_count(row.events), className="num"),
            html.Td(format_rate(row.cost_per_1k_tokens), className="num"),
            html.Td(_whole(row.tokens_per_request), className="num"),
            html.Td(_fixed(row.output_input_ratio, "0.01"), className="num"),
            html.Td("-" if share is None else f"{share * 100:.0f}%", className="num"),
            html.Td("-" if row.cache_savings_usd is None else format_usd(row.cache_savings_usd), className="num",
                    title="cached tokens at the model's uncached input rate, minus what they cost"),
            html.Td(_ms(row.latency_ms) + ("" if row.latency_p95_ms is None else f" ({row.latency_p95_ms:,.0f})"),
                    className="num"),
            html.Td(_ms(row.ttft_ms), className="num"),
            html.Td(f"{row.unpriced_events:,}", className="num"),
        ]))
    return rows


def driver_rows(drivers: list[dict]) -> list:
    header = html.Thead(html.Tr([html.Th(h) for h in DRIVER_HEADERS]))
    body = [html.Tr([html.Td(d["feature"]), html.Td(d["model"]), html.Td(f"{d['output_tokens']:,}", className="num"),
                     html.Td(f"{d['events']:,}", className="num"), html.Td(format_usd(d["cost_usd"]), className="num")])
            for d in drivers]
    return [header, html.Tbody(body)]


@callback(
    Output("models-table", "children"),
    Output("models-drivers", "children"),
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
        with scoped_warehouse() as warehouse:
            models = model_economics(warehouse, filters)
            drivers = output_drivers(warehouse, filters)
    except (WarehouseUnavailable, AccessDenied) as exc:
        return [header], driver_rows([]), *banner_content(str(exc), "error")
    except Exception as exc:  # noqa: BLE001
        log.exception("models query failed")
        return [header], driver_rows([]), *banner_content(f"Query failed: {exc}", "error")
    message = None if models else "No data yet, waiting for events."
    return [header, html.Tbody(table_rows(models))], driver_rows(drivers), *banner_content(message)
