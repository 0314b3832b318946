"""Alerts ("/alerts", finance only): the inbox of every alert tokenmeter raised in the range (budgets, anomalies,
cost drift, source completeness), newest first, with how each notification route fared. Alerts without a route
are recorded here too, so a demo or a new deployment shows what it would have sent."""

from __future__ import annotations

import logging
import re

import dash
from dash import Input, Output, callback, dcc, html

from dashboards.access import AccessDenied, scoped_warehouse
from dashboards.filters import Filters
from dashboards.handle import WarehouseUnavailable
from dashboards.panels import banner_content, date_range_filter, status_banner

dash.register_page(__name__, path="/alerts", name="Alerts", title="tokenmeter - alerts", order=7, finance_only=True)

log = logging.getLogger(__name__)
HEADERS = ("When (UTC)", "Source", "Kind", "Severity", "Alert", "Delivery")
SEVERITY_CLASS = {"critical": "row-bad", "error": "row-bad", "warning": "row-warn"}


def layout(start: str | None = None, end: str | None = None, **_):
    filters = Filters.from_inputs(start, end, None)
    return html.Div(className="page", children=[
        html.Div(className="filter-bar", children=[date_range_filter("alerts-dates", filters.start, filters.end)]),
        status_banner("alerts-status"),
        dcc.Loading(html.Div(className="table-card", children=html.Table(id="alerts-table", className="data-table"))),
    ])


# `warehouse.analytics.alerts_history` writes each route's state as "route:status(attempts)" (the API's field)
DELIVERY = re.compile(r"([\w.-]+):(\w+)\((\d+)\)")


def delivery_text(deliveries: str | None) -> str:
    """Each route as the Budgets page writes it, "slack: delivered", with the attempts when there were several:
    "webhook:delivered(1), pagerduty:failed(3)" -> "webhook: delivered, pagerduty: failed after 3 attempts"."""
    if not deliveries:
        return "no route"

    def one(match: re.Match) -> str:
        route, status, attempts = match.group(1), match.group(2), int(match.group(3))
        after = f" after {attempts} attempts" if attempts > 1 and status != "retrying" else ""
        return f"{route}: {status}{after}" if status != "retrying" else f"{route}: retrying ({attempts} so far)"

    return DELIVERY.sub(one, deliveries)


def alert_rows(rows: list[dict]) -> list:
    header = html.Thead(html.Tr([html.Th(h) for h in HEADERS]))
    body = []
    for r in rows:
        delivery = delivery_text(r.get("deliveries")) if r.get("deliveries") or not r.get("delivery_state") else ""
        body.append(html.Tr(className=SEVERITY_CLASS.get(r["severity"], ""), **{"data-source": r["source"]}, children=[
            html.Td(r["at"].strftime("%Y-%m-%d %H:%M")), html.Td(r["source"]), html.Td(r["kind"]),
            html.Td(r["severity"]),
            html.Td([html.Div(r["title"], className="alert-title"), html.Div(r["summary"], className="alert-summary")]),
            html.Td(delivery, title=r.get("last_error") or ""),
        ]))
    return [header, html.Tbody(body)]


@callback(
    Output("alerts-table", "children"),
    Output("alerts-status", "children"),
    Output("alerts-status", "style"),
    Output("alerts-status", "className"),
    Input("alerts-dates", "start_date"),
    Input("alerts-dates", "end_date"),
    Input("refresh", "n_intervals"),
)
def refresh_alerts(start, end, _n_intervals):
    from warehouse.analytics import alerts_history

    filters = Filters.from_inputs(start, end, None)
    try:
        with scoped_warehouse() as wh:
            if wh.team is not None:
                raise AccessDenied("the alert inbox holds every team's and the providers' alerts: finance only")
            rows = list(alerts_history(wh, since=filters.since, until=filters.until, limit=300).iter_rows(named=True))
    except (WarehouseUnavailable, AccessDenied) as exc:
        return alert_rows([]), *banner_content(str(exc), "error")
    except Exception as exc:  # noqa: BLE001 - keep the page alive, log the detail for operators
        log.exception("alerts query failed")
        return alert_rows([]), *banner_content(f"Query failed: {exc}", "error")
    return alert_rows(rows), *banner_content(None if rows else "No alert in this date range.")
