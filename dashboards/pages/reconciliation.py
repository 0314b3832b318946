"""Reconciliation ("/reconciliation", finance only): our metered cost against the provider-reported cost per day
and model, with differences above 2% highlighted, and the drift check (warehouse/drift.py): each provider's
coverage (the share of its bill metered traffic explains) and every gap past the drift thresholds with its
likely cause. Provider reports come from `tokenmeter collect openai-usage` / `anthropic-usage`."""

from __future__ import annotations

import logging

import dash
from dash import Input, Output, callback, dcc, html

from dashboards.access import AccessDenied, scoped_warehouse
from dashboards.charts import reconciliation_chart
from dashboards.filters import Filters
from dashboards.formatting import format_count, format_usd, format_usd_change, format_usd_exact
from dashboards.handle import WarehouseUnavailable, current_settings
from dashboards.panels import banner_content, date_range_filter, status_banner
from dashboards.reconciliation_data import FLAG_RATIO, ReconRow, reconcile, totals
from dashboards.tables import TableMissing
from tokenmeter.measures import count_of

dash.register_page(__name__, path="/reconciliation", name="Reconciliation", title="tokenmeter - reconciliation",
                   order=5, finance_only=True)

log = logging.getLogger(__name__)
# The two tables subtract in opposite directions (the drift check's gap is what the bill holds beyond what was
# metered): the headers say which way, so "-$1.40" in one and "+$1.40" in the other do not read as a contradiction.
HEADERS = ("Day", "Provider", "Model", "Metered", "Provider-reported", "Difference (metered − reported)",
           "Metered tokens", "Provider tokens")
DRIFT_HEADERS = ("Day", "Provider", "Model", "Provider-reported", "Metered", "Gap (reported − metered)", "Coverage",
                 "Likely cause")


def layout(start: str | None = None, end: str | None = None, **_):
    filters = Filters.from_inputs(start, end, None)
    return html.Div(className="page", children=[
        html.Div(className="filter-bar", children=[date_range_filter("recon-dates", filters.start, filters.end)]),
        status_banner("recon-status"),
        html.Div(id="recon-summary", className="recon-summary"),
        html.Div(className="graph-card", children=dcc.Graph(id="recon-chart", style={"height": "320px"},
                                                             config={"displaylogo": False})),
        html.H3("Drift: provider bill vs metered", style={"marginTop": "16px"}),
        html.Div(id="drift-summary", className="recon-summary"),
        html.Div(className="table-card", children=html.Table(id="drift-table", className="data-table")),
        dcc.Loading(html.Div(className="table-card", style={"marginTop": "12px"},
                             children=html.Table(id="recon-table", className="data-table"))),
        html.H3("Calls seen by two sources (counted once)", style={"marginTop": "16px"}),
        html.Div(className="table-card", children=html.Table(id="dedup-table", className="data-table")),
    ])


DEDUP_HEADERS = ("Counted from", "Also seen by", "Calls", "Cost not counted twice", "By response id",
                 "By request id", "By trace", "Counted, then replaced")


def dedup_rows(rows: list[dict] | None) -> list:
    """The table; `None`: the headers alone (nothing was read, so nothing is claimed about the range)."""
    header = html.Thead(html.Tr([html.Th(h) for h in DEDUP_HEADERS]))
    if rows is None:
        return [header, html.Tbody([])]
    if not rows:
        return [header, html.Tbody(html.Tr(html.Td("No call was seen by two sources in this range.", colSpan=len(DEDUP_HEADERS))))]
    return [header, html.Tbody([html.Tr([
        html.Td(r["winner_source"]), html.Td(r["duplicate_source"]), html.Td(format_count(r["duplicates"]), className="num"),
        html.Td(format_usd(r["duplicate_cost_usd"]), title=format_usd_exact(r["duplicate_cost_usd"]), className="num"),
        html.Td(format_count(r["by_response_id"]), className="num"),
        html.Td(format_count(r["by_request_id"]), className="num"), html.Td(format_count(r["by_trace"]), className="num"),
        html.Td(format_count(r.get("replaced") or 0), className="num",
                title="copies counted first and taken out of the totals when the preferred copy arrived"),
    ]) for r in rows])]


def dedup_view(wh, filters: Filters) -> list:
    from warehouse.dedup import duplicates_by_source_pair

    try:
        frame = duplicates_by_source_pair(wh, since=filters.since, until=filters.until)
    except Exception as exc:  # noqa: BLE001 - a warehouse from before migration 0013: nothing to show
        log.debug("cross-source duplicates unavailable: %s", exc)
        return dedup_rows([])
    return dedup_rows(list(frame.iter_rows(named=True)))


def drift_rows(rows: list) -> list:
    """The drifting rows (model rows and provider totals), largest gap first."""
    from warehouse.drift import CAUSES

    header = html.Thead(html.Tr([html.Th(h) for h in DRIFT_HEADERS]))
    body = []
    for r in sorted(rows, key=lambda r: (-abs(r.gap), r.day, r.provider, r.model)):
        pct = f" ({r.gap_pct}%)" if r.gap_pct is not None else ""
        body.append(html.Tr(className="row-bad", **{"data-cause": r.cause}, children=[
            html.Td(r.day.isoformat()), html.Td(r.provider), html.Td(r.model or "(all models)"),
            html.Td(format_usd(r.reported_cost), title=format_usd_exact(r.reported_cost), className="num"),
            html.Td(format_usd(r.metered_cost), title=format_usd_exact(r.metered_cost), className="num"),
            html.Td(format_usd(r.gap) + pct, title=format_usd_exact(r.gap), className="num diff"),
            html.Td("-" if r.coverage_pct is None else f"{r.coverage_pct}%", className="num"),
            html.Td(r.cause.replace("_", " "), title=CAUSES[r.cause]),
        ]))
    return [header, html.Tbody(body)]


def drift_view(wh, filters: Filters) -> tuple[list, str]:
    """(drift table, summary: coverage per provider over the range and the thresholds)."""
    from decimal import Decimal

    from warehouse.drift import Thresholds, drift, drift_alerts

    limits = Thresholds.from_settings(current_settings())
    rows, totals = drift(wh, filters.since.date(), filters.until.date(), limits)  # whole UTC days
    alerted = {a["dedup_key"] for a in drift_alerts(rows, totals, limits)}
    shown = [r for r in rows + totals
             if f"tokenmeter:drift:{r.provider}:{r.model or '*'}:{r.day.isoformat()}" in alerted]
    coverage = []
    for provider in sorted({t.provider for t in totals}):
        part = [t for t in totals if t.provider == provider]
        billed = sum((t.reported_cost for t in part), Decimal(0))
        explained = sum((t.explained for t in part), Decimal(0))
        share = f"{(explained * 100 / billed).quantize(Decimal('0.1'))}%" if billed > 0 else "n/a"
        coverage.append(f"{provider}: {share} of {format_usd(billed)} billed")
    return drift_rows(shown), drift_summary(coverage, len(shown), limits)


def drift_summary(coverage: list[str], gaps: int, limits) -> str:
    if not coverage:
        return "No provider cost reports in this range."
    return ("Coverage (share of each provider's bill explained by metered traffic) — " + "; ".join(coverage)
            + f". {count_of(gaps, 'gap')} above {limits.pct}% and {format_usd(limits.min_usd)}.")


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
            html.Td("-" if diff is None else format_usd_change(diff),
                    title="" if diff is None else format_usd_exact(diff), className="num diff"),
            html.Td(format_count(r.ours_tokens), className="num"),
            html.Td("-" if r.provider_tokens is None else format_count(r.provider_tokens), className="num"),
        ]))
    return [header, html.Tbody(body)]


def recon_summary(rows: list[ReconRow]) -> str:
    ours, theirs = totals(rows)
    flagged = sum(1 for r in rows if r.flagged)
    return (f"On days and models the providers reported: metered {format_usd(ours)}, provider-reported "
            f"{format_usd(theirs)}, difference {format_usd_change(ours - theirs)}. {count_of(flagged, 'row')} "
            f"{'differs' if flagged == 1 else 'differ'} by more than {FLAG_RATIO * 100:.0f}%.")


@callback(
    Output("dedup-table", "children"),
    Output("drift-table", "children"),
    Output("drift-summary", "children"),
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
    empty = (dedup_rows([]), drift_rows([]), "")
    # Nothing was read (refused, unavailable, failed): the banner says why, no table or chart says "none in this
    # range" (walk31: a team user read "No call was seen by two sources in this range" under "finance only").
    unread = (dedup_rows(None), drift_rows([]), "", table_rows([]), reconciliation_chart([], ""), "")
    try:
        with scoped_warehouse() as wh:
            rows = reconcile(wh, filters.since, filters.until)
            drift_table, drift_summary = drift_view(wh, filters)
            dedup_table = dedup_view(wh, filters)
    except TableMissing:
        return *empty, table_rows([]), reconciliation_chart([]), "", *banner_content(
            "No provider usage yet: run `tokenmeter collect openai-usage` or `anthropic-usage`.")
    except (WarehouseUnavailable, AccessDenied) as exc:
        return *unread, *banner_content(str(exc), "error")
    except Exception as exc:  # noqa: BLE001
        log.exception("reconciliation query failed")
        return *unread, *banner_content(f"Query failed: {exc}", "error")
    summary = recon_summary(rows)
    message = None if rows else "Nothing to compare in this range."
    return (dedup_table, drift_table, drift_summary, table_rows(rows), reconciliation_chart(rows), summary,
            *banner_content(message))
