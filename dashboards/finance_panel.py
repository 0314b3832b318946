"""The showback page's finance table: per team, its cost center, GL account and owner with direct, allocated
and total cost for the selected range (warehouse.finance, the same numbers as `tokenmeter showback` and the
exports). Shares depend on every team's usage, so they are computed over all teams and then cut down to the
signed-in user's team."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dash import html

from dashboards.formatting import format_usd, format_usd_exact
from tokenmeter.timefmt import people_utc
from warehouse.backends import WarehouseError
from warehouse.finance import FinanceConfig, corrections_note, finance_from_settings, showback_and_corrected

HINT = ("No cost centers or allocation rules configured: set TOKENMETER_COST_CENTERS_FILE "
        "(and optionally TOKENMETER_ALLOCATION_FILE); see docs/finance.md.")


def finance_config(settings: Any) -> FinanceConfig | None:
    if not (getattr(settings, "cost_centers_file", None) or getattr(settings, "allocation_file", None)):
        return None
    return finance_from_settings(settings)


def finance_rows(scoped: Any, config: FinanceConfig, since: datetime, until: datetime):
    """(Rows for the scoped user (finance: all teams; a team user: their team only), the closed months whose
    corrections they show)."""
    return showback_and_corrected(scoped._warehouse, config, since, until, team=scoped.team, closes=app_closes())


def _money(amount) -> html.Td:
    return html.Td(format_usd(amount), title=format_usd_exact(amount), className="num")


def finance_table(frame, corrected: list[str] = (), month: str = "") -> list:
    """The team table; a Corrections column (and a line saying what it holds) when `month` books changes to
    closed months (`corrected`): Direct and Allocated are then its own spend."""
    money = ["direct_usd", "allocated_usd"]
    if corrected:
        money.append("corrections_usd")
    money.append("total_usd")
    names = {"direct_usd": "Direct", "allocated_usd": "Allocated", "corrections_usd": "Corrections",
             "total_usd": "Total"}
    header = html.Thead(html.Tr([html.Th(h) for h in ("Team", "Cost center", "GL account", "Owner",
                                                      *[names[m] for m in money])]))
    body = []
    for row in frame.iter_rows(named=True):
        unmapped = row["cost_center"] == "unmapped"
        body.append(html.Tr(className="unmapped" if unmapped else None, children=[
            html.Td(row["team"] or "(untagged)"), html.Td(row["cost_center"]), html.Td(row["gl_account"]),
            html.Td(row["owner"]), *[_money(row[m]) for m in money]]))
    if frame.height:
        body.append(html.Tr(className="total", children=[html.Td("Total"), html.Td(""), html.Td(""), html.Td(""),
                                                         *[_money(sum(frame[m])) for m in money]]))
    if "corrections_usd" in money:
        body_note = [html.P(corrections_note(month, list(corrected), "Corrections", "Direct and Allocated"),
                            className="hint", id="showback-finance-corrections")]
    else:
        body_note = []
    note = body_note + ([html.P(
        "Amounts are rounded for reading (cents; 4 decimals below $1): a rounded row or total can differ by a cent "
        "from the sum of its rounded parts. Hover an amount for its exact value; exports keep every digit.",
        className="hint", id="showback-finance-rounding")] if frame.height else [])
    return [html.H3("Cost centers and shared-cost allocation"),
            html.Table(id="showback-finance-table", className="data-table", children=[header, html.Tbody(body)]),
            *note]


def app_finance() -> FinanceConfig | None:
    """The finance config of the app serving this request (None outside one, or when not configured)."""
    import flask

    from dashboards.handle import current_settings

    if not flask.has_app_context():
        return None
    return finance_config(current_settings())


def app_closes():
    """The month-close directory of the app serving this request (None outside one)."""
    import flask

    from dashboards.handle import current_settings
    from warehouse.month_close import closes_dir

    return closes_dir(current_settings()) if flask.has_app_context() else None


def damaged_closes_banner(exc: Exception) -> html.Pre:
    """A close or re-open record that cannot be read (warehouse.month_close.read_record): said on the page, which
    still renders (walk29: the page failed)."""
    return html.Pre(str(exc), className="banner error", id="closes-damaged")


def month_options(months: list[str]) -> list[dict[str, str]]:
    """Dropdown options with closed months marked "(closed <date>)", re-opened ones "(re-opened <date>)". Raises
    WarehouseError naming a damaged close record (the caller shows it and lists the months unmarked)."""
    from warehouse.month_close import closed_months
    from warehouse.month_reopen import reopen_history

    closed = closed_months(app_closes())
    reopened = {r["month"]: r["reopened_at"][:10] for r in reopen_history(app_closes())}  # the latest per month
    return [{"label": f"{m} (closed {closed[m]['closed_at'][:10]})" if m in closed
             else f"{m} (re-opened {reopened[m]})" if m in reopened else m, "value": m} for m in months]


def closed_note(since: datetime, until: datetime) -> list:
    try:
        return _closed_note(since, until)
    except WarehouseError as exc:
        return [damaged_closes_banner(exc)]


def _closed_note(since: datetime, until: datetime) -> list:
    from warehouse.month_close import closed_months, reopened_note, whole_month

    month = whole_month(since, until)
    info = closed_months(app_closes()).get(month or "")
    reopened = reopened_note(app_closes(), month) if month and not info else ""
    if reopened:
        return [html.P(reopened + ".", className="hint reopened-month", id="reopened-month-note")]
    from warehouse.month_reopen import reopen_history

    earlier = [r for r in reopen_history(app_closes()) if r["month"] == month]
    last = (f"re-opened {people_utc(earlier[-1]['reopened_at'])} by {earlier[-1]['reopened_by']} "
            f"({earlier[-1]['reason']})") if earlier else ""
    if not info:
        return [html.P(f"{month} was {last}: these numbers are live until it is closed again.",
                       className="hint reopened-month", id="reopened-month-note")] if last else []
    by = f" by {info['closed_by']}" if info.get("closed_by") else ""
    before = f" It was closed before and {last}." if last else ""
    return [html.P(f"{month} is closed (since {people_utc(info['closed_at'])}{by}): these numbers are frozen; later "
                   f"changes are corrections in the first open month.{before}", className="hint closed-month",
                   id="closed-month-note")]
