"""Chargeback export ("/export"): pick a month and a grouping, download CSV, Parquet or a FOCUS 1.x file.
A team user's file only ever holds their own team. A month re-opened after a close also offers that close's
file ("Version"), byte for byte what it gave (`tokenmeter export --archived`)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import dash
from dash import Input, Output, State, callback, dcc, html, no_update

from dashboards.access import AccessDenied, scoped_warehouse
from dashboards.finance_panel import damaged_closes_banner, month_options
from dashboards.export_data import (FORMATS, ExportUnavailable, archived_versions, export_file, grouping_options,
                                    month_tag_keys, recent_months)
from warehouse.backends import WarehouseError

dash.register_page(__name__, path="/export", name="Export", title="tokenmeter - chargeback export", order=6)

log = logging.getLogger(__name__)


def layout(month: str | None = None, group_by: str | None = None, format: str | None = None, **_):  # noqa: A002
    months = recent_months(datetime.now(timezone.utc).date())
    try:
        options, damaged = month_options(months), []
    except WarehouseError as exc:  # a damaged close record: said, and the months listed unmarked
        options, damaged = [{"label": m, "value": m} for m in months], [damaged_closes_banner(exc)]
    chosen = [g.strip() for g in (group_by or "team").split(",") if g.strip()] or ["team"]  # ?group_by=team,tag:env
    return html.Div(className="page", children=[
        *damaged,
        html.P("A month of cost per group, for chargeback. FOCUS is the FinOps Open Cost and Usage "
               "Specification (1.x columns such as BilledCost, EffectiveCost, ChargePeriodStart).", className="hint"),
        html.Div(className="filter-bar", children=[
            html.Div(className="filter", children=[
                html.Label("Month (UTC)", className="filter-label"),
                dcc.Dropdown(id="export-month", options=options,
                             value=month if month in months else months[0], clearable=False,
                             style={"width": "240px"}),
            ]),
            html.Div(className="filter", children=[
                html.Label("Version", className="filter-label"),
                dcc.Dropdown(id="export-version", options=[{"label": "current books", "value": ""}], value="",
                             clearable=False, style={"width": "360px"}),
            ]),
            html.Div(className="filter", children=[
                html.Label("Group by", className="filter-label"),
                dcc.Dropdown(id="export-group", options=grouping_options([], chosen=chosen), value=chosen,
                             multi=True, clearable=False, style={"minWidth": "260px"},
                             placeholder="a dimension, or tag:KEY"),
            ]),
            html.Div(className="filter", children=[
                html.Label("Format", className="filter-label"),
                dcc.RadioItems(id="export-format", value=format if format in FORMATS else "focus", inline=True,
                               options=[{"label": f" {label}", "value": key} for key, (_, _, label) in FORMATS.items()],
                               inputStyle={"marginLeft": "10px"}),
            ]),
            html.Button("Download", id="export-download-button", className="btn btn-primary", n_clicks=0),
        ]),
        dcc.Loading(html.Div(id="export-result", className="ack-result")),
        dcc.Download(id="export-download"),
    ])


@callback(
    Output("export-version", "options"),
    Output("export-version", "value"),
    Input("export-month", "value"),
)
def versions(month):
    """A month re-opened after a close lists that close: the file finance was sent before the restatement."""
    from dashboards.finance_panel import app_closes

    try:
        return archived_versions(month or "", app_closes()), ""
    except WarehouseError:  # a damaged re-open record: the layout's banner names it; the current books stay
        return [{"label": "current books", "value": ""}], ""


@callback(
    Output("export-group", "options"),
    Input("export-month", "value"),
    Input("export-group", "search_value"),
    State("export-group", "value"),
)
def group_options(month, typed, chosen):
    """Every dimension, the chosen month's tag keys and a typed tag key: what `/api/v1/export?group_by=` takes."""
    try:
        with scoped_warehouse() as wh:
            keys = month_tag_keys(wh, month or "")
    except Exception as exc:  # noqa: BLE001 - tag keys are a convenience; typing one still works
        log.debug("tag keys unavailable: %s", exc)
        keys = []
    return grouping_options(keys, typed, chosen)


@callback(
    Output("export-download", "data"),
    Output("export-result", "children"),
    Input("export-download-button", "n_clicks"),
    State("export-month", "value"),
    State("export-group", "value"),  # a list: several groupings, as `group_by=team,tag:env`
    State("export-format", "value"),
    State("export-version", "value"),
    prevent_initial_call=True,
)
def download(n_clicks, month, group_by, fmt, version):
    if not n_clicks:
        return no_update, no_update
    try:
        with scoped_warehouse() as wh:
            name, _mimetype, body = export_file(wh, month, fmt, group_by, version or "")
    except (ExportUnavailable, AccessDenied, ValueError) as exc:
        return no_update, str(exc)
    except WarehouseError as exc:  # the books on disk (a changed close, a damaged record): said, not a traceback
        log.warning("export of %s refused: %s", month, exc)
        return no_update, str(exc)
    except Exception as exc:  # noqa: BLE001
        log.exception("export failed")
        return no_update, f"Export failed: {exc}"
    return dcc.send_bytes(body, name), f"{name}: {len(body):,} bytes"
