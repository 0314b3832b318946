"""Anomalies ("/anomalies"): a timeline, the scope's series against the expected band, and acknowledge / mute
buttons that publish an ack record to `tokenmeter.anomaly-acks` (the anomaly runner silences notifications of a
muted kind and scope until `mute_until`)."""

from __future__ import annotations

import logging

import dash
from dash import ALL, Input, Output, State, callback, ctx, dcc, html, no_update

from dashboards.access import AccessDenied, scoped_warehouse
from dashboards.acks import MUTE_HOURS, build_ack, publish_ack
from dashboards.anomalies_data import get_anomaly, list_anomalies, scope_buckets, scope_measure
from dashboards.auth import current_principal
from dashboards.charts import anomaly_band, anomaly_timeline
from dashboards.filters import Filters
from dashboards.handle import WarehouseUnavailable, current_settings
from dashboards.panels import banner_content, date_range_filter, preselected, status_banner
from dashboards.tables import TableMissing
from tokenmeter.measures import format_band, format_measure, format_observed

dash.register_page(__name__, path="/anomalies", name="Anomalies", title="tokenmeter - anomalies", order=4)

log = logging.getLogger(__name__)
# The detector judges 5-minute buckets: an observed rate "per hour" is its busiest bucket's amount x 12, not an hour's
# total (the band chart draws the scope's series the same way, so the two can be compared).
HEADERS = ("Start (UTC)", "Scope", "Kind", "Severity", "Observed (peak)", "Expected (normal range)", "Status",
           "What happened", "")
HEADER_HINTS = {
    "Observed (peak)": "The busiest 5-minute bucket of the anomaly, as a rate per hour (its amount x 12) where the "
                       "unit is per hour; shares of failed requests as a percentage.",
    "Expected (normal range)": "What the detector expected for that bucket and the range it judged normal.",
}


def layout(start: str | None = None, end: str | None = None, anomaly: str | None = None, id: str | None = None,  # noqa: A002
           **_):
    # Alerts link here as /anomalies?id=<anomaly id>&start=<its first day>&end=<its last day>
    # (streams/anomalies/publish.py): preselect that anomaly, in a range that lists it.
    anomaly = anomaly or id
    filters = Filters.from_inputs(start, end, None)
    return html.Div(className="page", children=[
        html.Div(className="filter-bar", children=[
            date_range_filter("anomalies-dates", filters.start, filters.end),
            html.Div(className="filter", children=[
                html.Label("Expected band of", className="filter-label"),
                dcc.Dropdown(id="anomalies-select", value=anomaly, options=preselected(anomaly),
                             style={"width": "360px"}, clearable=False, placeholder="pick an anomaly"),
            ]),
        ]),
        status_banner("anomalies-status"),
        html.Div(id="anomalies-ack-result", className="ack-result"),
        html.Div(className="graph-grid", children=[
            html.Div(className="graph-card", children=dcc.Graph(id="anomalies-timeline", style={"height": "320px"},
                                                                 config={"displaylogo": False})),
            html.Div(className="graph-card", children=dcc.Graph(id="anomalies-band", style={"height": "320px"},
                                                                 config={"displaylogo": False})),
        ]),
        html.P(className="hint", children=(
            "The detector judges 5-minute buckets. The chart on the right draws the scope the same way, in the "
            "anomaly's unit: rates per hour are a 5-minute bucket's amount x 12, so they can be compared with the "
            "normal range and the observed peak. An hour's total (Showback) is a different figure: 100 calls in an "
            "hour, 60 of them within 5 minutes, are a burst of 720 calls/hour.")),
        dcc.Loading(html.Div(className="table-card", style={"marginTop": "12px"},
                             children=html.Table(id="anomalies-table", className="data-table"))),
    ])


def _ack_state(a: dict) -> str:
    """The anomaly's status (open / closed), then the mute in force on its kind and scope (whoever gave it, on whichever
    anomaly) and its own ack. walk36: the mute and the ack replaced the status, so a burst muted after it had ended
    read "muted until ...; acknowledged by ..." and on-call could not tell whether it was still going on."""
    states = [a["status"]]
    if a.get("mute_until"):
        states.append(f"muted until {a['mute_until']:%Y-%m-%d %H:%M} by {a.get('muted_by') or a['ack_by']}")
    if a.get("acknowledged_by"):  # the newest ack, also after a later mute or unmute of the anomaly (anom32)
        states.append(f"acknowledged by {a['acknowledged_by']}")
    elif a.get("ack_action") == "ack":
        states.append(f"acknowledged by {a['ack_by']}")
    return "; ".join(states)


def _buttons(anomaly_id: str) -> html.Td:
    return html.Td(className="actions", children=[
        html.Button(label, id={"type": "anomaly-action", "id": anomaly_id, "action": action}, n_clicks=0,
                    className=f"btn btn-{action}")
        for action, label in (("ack", "Acknowledge"), ("mute", f"Mute {MUTE_HOURS} h"), ("unmute", "Unmute"))
    ])


def table_rows(anomalies: list[dict]) -> list:
    header = html.Thead(html.Tr([html.Th(h, title=HEADER_HINTS.get(h)) for h in HEADERS]))
    body = [html.Tr(className="row-warn" if a["severity"] in ("error", "critical") else "", children=[
        html.Td(a["start_at"].strftime("%Y-%m-%d %H:%M")), html.Td(f"{a['scope_dim']}={a['scope_value']}"),
        html.Td(a["kind"]), html.Td(a["severity"]),
        html.Td(format_observed(a["observed"], a["unit"], bool(a.get("unpriced"))), className="num"),
        html.Td([format_measure(a["expected"], a["unit"]), html.Br(),
                 html.Span(format_band(a["expected_low"], a["expected_high"], a["unit"]), className="band")],
                className="num"),
        html.Td(_ack_state(a)), html.Td(a["explanation"]), _buttons(a["id"]),
    ]) for a in anomalies]
    return [header, html.Tbody(body)]


@callback(
    Output("anomalies-table", "children"),
    Output("anomalies-timeline", "figure"),
    Output("anomalies-select", "options"),
    Output("anomalies-select", "value"),
    Output("anomalies-status", "children"),
    Output("anomalies-status", "style"),
    Output("anomalies-status", "className"),
    Input("anomalies-dates", "start_date"),
    Input("anomalies-dates", "end_date"),
    Input("refresh", "n_intervals"),
    Input("anomalies-timeline", "clickData"),
    State("anomalies-select", "value"),
)
def refresh_anomalies(start, end, _n_intervals, click, selected):
    filters = Filters.from_inputs(start, end, None)
    if ctx.triggered_id == "anomalies-timeline" and click and click.get("points"):
        selected = click["points"][0].get("customdata") or selected
    try:
        with scoped_warehouse() as wh:
            anomalies = list_anomalies(wh, filters.since, filters.until)
    except TableMissing:
        anomalies, message, level = [], "No anomalies recorded yet (the anomaly detector has not run).", "info"
    except (WarehouseUnavailable, AccessDenied) as exc:
        anomalies, message, level = [], str(exc), "error"
    except Exception as exc:  # noqa: BLE001
        log.exception("anomaly query failed")
        anomalies, message, level = [], f"Query failed: {exc}", "error"
    else:
        message, level = (None if anomalies else "No anomalies in this range."), "info"
    ids = [a["id"] for a in anomalies]
    if selected not in ids:
        selected = ids[0] if ids else None
    options = [{"label": f"{a['start_at']:%m-%d %H:%M} {a['scope_dim']}={a['scope_value']} {a['kind']}",
                "value": a["id"]} for a in anomalies]
    return (table_rows(anomalies), anomaly_timeline(anomalies, filters.since, filters.until), options, selected,
            *banner_content(message, level))


@callback(
    Output("anomalies-band", "figure"),
    Input("anomalies-select", "value"),
)
def refresh_band(anomaly_id):
    if not anomaly_id:
        return anomaly_band(None, None)
    try:
        with scoped_warehouse() as wh:
            anomaly = get_anomaly(wh, anomaly_id)
            frame = scope_buckets(wh, anomaly) if anomaly else None
    except Exception as exc:  # noqa: BLE001 - the list callback shows errors
        log.debug("band unavailable: %s", exc)
        return anomaly_band(None, None)
    return anomaly_band(anomaly, scope_measure(frame, anomaly["unit"]) if anomaly else None)


@callback(
    Output("anomalies-ack-result", "children"),
    Output("anomalies-ack-result", "className"),
    Input({"type": "anomaly-action", "id": ALL, "action": ALL}, "n_clicks"),
    prevent_initial_call=True,
)
def act_on_anomaly(clicks):
    trigger = ctx.triggered_id
    if not isinstance(trigger, dict) or not any(clicks or []):
        return no_update, no_update
    if not ctx.triggered or not ctx.triggered[0].get("value"):
        return no_update, no_update  # the buttons were re-rendered, nobody clicked
    principal = current_principal()
    try:
        with scoped_warehouse() as wh:
            anomaly = get_anomaly(wh, trigger["id"])  # scoped: a team user can only act on their team's
        if anomaly is None:
            raise AccessDenied(f"no anomaly {trigger['id']!r} visible to you")
        record = build_ack(anomaly, trigger["action"], by=principal.name)
        publish_ack(current_settings().bootstrap_servers, record)
    except AccessDenied as exc:
        return str(exc), "ack-result ack-error"
    except Exception as exc:  # noqa: BLE001 - Kafka down: say so, keep the page alive
        log.warning("anomaly ack not published: %s", exc)
        return f"Could not record it (Kafka unavailable?): {exc}", "ack-result ack-error"
    verb = {"ack": "Acknowledged", "mute": f"Muted for {MUTE_HOURS} h", "unmute": "Unmuted"}[trigger["action"]]
    return (f"{verb}: {anomaly['kind']} on {anomaly['scope_dim']}={anomaly['scope_value']} (by {principal.name})",
            "ack-result ack-ok")
