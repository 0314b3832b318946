"""Budgets ("/budgets"): status of every budget you may see, the burn-down of one with its forecast line,
and the history of its alerts (with how each notification route fared)."""

from __future__ import annotations

import logging

import dash
from dash import Input, Output, callback, clientside_callback, dcc, html

from dashboards.access import AccessDenied, scoped_warehouse
from dashboards.budgets_data import BudgetStatus, alert_history, budget_history, latest_statuses
from dashboards.charts import burn_down
from dashboards.figures import empty_figure
from dashboards.formatting import format_count, format_usd
from dashboards.handle import WarehouseUnavailable
from dashboards.panels import banner_content, preselected, status_banner
from dashboards.tables import TableMissing

dash.register_page(__name__, path="/budgets", name="Budgets", title="tokenmeter - budgets", order=2)

log = logging.getLogger(__name__)
STATUS_HEADERS = ("Budget", "Scope", "State", "Committed", "Held", "Headroom", "Limit", "%", "Expired holds",
                  "Forecast at period end", "Expected breach (UTC)", "Enforcement", "Updated (UTC)")
ALERT_HEADERS = ("When (UTC)", "Budget", "Alert", "Severity", "Delivered")
STATE_CLASS = {"over budget": "row-bad", "at risk": "row-warn", "pending": "", "unknown": "", "ok": ""}
# The period's spend from before a budget was defined (seed32): the decision record said "pending" while the page
# showed the live spend alone as if it were the period's (walk33). What the Committed cell adds, and why.
SPEND_BEFORE = {
    "pending": ("+ spend from before the budget: pending",
                "the period's spend from before the budget was defined is being taken from the warehouse (seconds "
                "after the definition); until then Committed holds only what came since"),
    "unknown": ("+ spend from before the budget: unknown",
                "state written before 2026-12-07: a budget defined mid-period counted only from its definition; "
                "with the workers stopped, `tokenmeter budget rebuild --all` counts the whole period (`up` does it "
                "at each start)"),
}


def layout(budget: str | None = None, **_):
    return html.Div(className="page", children=[
        status_banner("budgets-status"),
        dcc.Loading(html.Div(className="table-card", children=html.Table(id="budgets-table", className="data-table"))),
        html.Div(className="filter-bar", style={"marginTop": "14px"}, children=[html.Div(className="filter", children=[
            html.Label("Burn-down of", className="filter-label"),
            dcc.Dropdown(id="budgets-select", value=budget, options=preselected(budget), clearable=False,
                         style={"width": "320px"}, placeholder="pick a budget"),
        ])]),
        html.Div(className="graph-card", children=dcc.Graph(id="budgets-burndown", style={"height": "360px"},
                                                             config={"displaylogo": False})),
        html.H3("Alerts", className="section-title"),
        html.Div(className="table-card", children=html.Table(id="budgets-alerts", className="data-table")),
        dcc.Store(id="budgets-url-sync"),
    ])


def _amount(status: BudgetStatus, value) -> str:
    if value is None:
        return "-"
    return format_usd(value) if status.metric == "cost_usd" else f"{format_count(int(value))} tokens"


def _forecast(status: BudgetStatus) -> tuple[str, str]:
    """The "Forecast at period end" cell and its tooltip. The ledger publishes a projection (spend + the last hour's
    burn rate x time left, the forecast alert's own definition) once it has seen 10 minutes of the period's spend
    arrive; a bare "-" read as "no forecast" where the projection was merely below the limit (records before
    2026-12-06 published none then)."""
    if status.projected is not None:
        within = status.projected < status.limit
        return (_amount(status, status.projected) + (" (within limit)" if within else ""),
                "spend so far + the last hour's burn rate until the period ends")
    if status.period_key.startswith("rolling:"):
        return "none (rolling window)", "a rolling window has no period end to project to"
    if status.spend >= status.limit:
        return "limit reached", "spend has reached the limit"
    if not status.spend:
        return "no spend yet", "nothing spent in this period"
    # a seed's spend from before the budget is a total, no burn rate: the worker measures it from arriving spend
    return "not enough data yet", "a forecast needs 10 minutes of spend seen by the worker in this period"


def _committed(status: BudgetStatus):
    before = SPEND_BEFORE.get(status.spend_before_definition)
    if before is None:
        return html.Td(_amount(status, status.spend), className="num")
    return html.Td(f"{_amount(status, status.spend)} {before[0]}", className="num", title=before[1])


def spend_before_message(statuses: list[BudgetStatus]) -> str | None:
    """The banner's words for budgets whose Committed lacks the period's spend from before their definition."""
    pending = [s.budget for s in statuses if s.spend_before_definition == "pending"]
    unknown = [s.budget for s in statuses if s.spend_before_definition == "unknown"]
    parts = []
    if pending:
        parts.append(f"{', '.join(pending)}: the period's spend from before the budget was defined is being counted "
                     "from the warehouse (spend_before_definition: pending); Committed shows only what came since.")
    if unknown:
        parts.append(f"{', '.join(unknown)}: state from before 2026-12-07, when a budget defined mid-period counted "
                     "only from its definition; to count the whole period, stop the workers and run `tokenmeter "
                     "budget rebuild --all` (restarting `tokenmeter up` does it).")
    return " ".join(parts) or None


def status_rows(statuses: list[BudgetStatus]) -> list:
    header = html.Thead(html.Tr([html.Th(h) for h in STATUS_HEADERS]))
    body = [html.Tr(className=STATE_CLASS[s.state], children=[
        html.Td(s.budget), html.Td(", ".join(f"{k}={v}" for k, v in sorted(s.scope.items())) or "all traffic"),
        html.Td(s.state, title=SPEND_BEFORE[s.state][1] if s.state in SPEND_BEFORE else None), _committed(s),
        html.Td(_amount(s, s.held) + (f" ({s.open_reservations} open)" if s.open_reservations else ""),
                className="num", title="worst cases of open reservations (POST /v1/reservations)"),
        html.Td(_amount(s, s.headroom), className="num", title="limit - committed - held"),
        html.Td(_amount(s, s.limit), className="num"),
        html.Td(f"{s.percent}%", className="num"),
        html.Td(format_count(s.reservations_expired), className="num",
                title="reservations whose usage never came within TOKENMETER_RESERVATION_TTL_SECONDS"),
        html.Td(forecast[0], className="num", title=forecast[1]),
        html.Td(s.expected_breach_at.strftime("%Y-%m-%d %H:%M") if s.expected_breach_at else "-"),
        # "allow (budget 'search-monthly' within its limit)" repeated the row's name: the reason is for a refusal
        html.Td(s.action + (f" ({s.reason})" if s.reason and s.action != "allow" else ""), title=s.reason),
        html.Td(s.updated_at.strftime("%Y-%m-%d %H:%M")),
    ]) for s in statuses for forecast in [_forecast(s)]]
    return [header, html.Tbody(body)]


def alert_rows(alerts: list[dict]) -> list:
    header = html.Thead(html.Tr([html.Th(h) for h in ALERT_HEADERS]))
    body = [html.Tr([html.Td(a["at"].strftime("%Y-%m-%d %H:%M")), html.Td(a["budget"]),
                     html.Td(f"{a['title']}" + (" (resolved)" if a["action"] == "resolve" else "")),
                     html.Td(a["severity"]), html.Td(a["deliveries"] or "none recorded (no route, or the alert dispatcher is not running)")]) for a in alerts]
    if not body:
        body = [html.Tr(html.Td("No alerts yet.", colSpan=len(ALERT_HEADERS)))]
    return [header, html.Tbody(body)]


@callback(
    Output("budgets-table", "children"),
    Output("budgets-select", "options"),
    Output("budgets-select", "value"),
    Output("budgets-status", "children"),
    Output("budgets-status", "style"),
    Output("budgets-status", "className"),
    Input("refresh", "n_intervals"),
    Input("budgets-select", "value"),
)
def refresh_budgets(_n_intervals, selected):
    try:
        with scoped_warehouse() as wh:
            statuses = latest_statuses(wh)
    except TableMissing:
        return status_rows([]), [], None, *banner_content(
            "No budget status yet: define budgets with `tokenmeter budget set` and run the worker and loader.")
    except (WarehouseUnavailable, AccessDenied) as exc:
        return status_rows([]), [], None, *banner_content(str(exc), "error")
    except Exception as exc:  # noqa: BLE001
        log.exception("budget status query failed")
        return status_rows([]), [], None, *banner_content(f"Query failed: {exc}", "error")
    names = [s.budget for s in statuses]
    if selected not in names:
        selected = names[0] if names else None  # worst budget first
    message = spend_before_message(statuses) if statuses else "No budget has reported status yet."
    return status_rows(statuses), [{"label": n, "value": n} for n in names], selected, *banner_content(message)


@callback(
    Output("budgets-burndown", "figure"),
    Output("budgets-alerts", "children"),
    Input("budgets-select", "value"),
    Input("refresh", "n_intervals"),
)
def refresh_burn_down(budget, _n_intervals):
    try:
        with scoped_warehouse() as wh:
            history = budget_history(wh, budget) if budget else []
            try:
                alerts = alert_history(wh, budget)
            except TableMissing:
                alerts = []
    except Exception as exc:  # noqa: BLE001 - the status callback reports errors in the banner
        log.debug("burn-down unavailable: %s", exc)
        return empty_figure("Burn-down", "No budget status yet"), alert_rows([])
    return burn_down(history), alert_rows(alerts)


clientside_callback(
    """
    function(budget) {
        if (!budget) { return window.dash_clientside.no_update; }
        const target = window.location.pathname + '?budget=' + encodeURIComponent(budget);
        if (target !== window.location.pathname + window.location.search) {
            window.history.replaceState(window.history.state, '', target);
        }
        return window.dash_clientside.no_update;
    }
    """,
    Output("budgets-url-sync", "data"),
    Input("budgets-select", "value"),
)
