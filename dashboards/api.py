"""JSON API under the dashboard server: the numbers behind each page, for BI tools and scripts.

Auth: the dashboard session cookie or HTTP Basic (same users file). Money is a decimal string, times RFC 3339.
A team user's queries are limited to their team; naming another team answers 403.

    GET /api/v1/me
    GET /api/v1/overview?start=YYYY-MM-DD&end=YYYY-MM-DD&team=a,b
    GET /api/v1/spend?group_by=team,model&start&end&bucket=day|hour&<dim>=v1,v2   (bucket: a time series)
    GET /api/v1/models?start&end
    GET /api/v1/budgets            GET /api/v1/budgets/<name>   (history of its latest period + alerts)
    GET /api/v1/anomalies?start&end
    GET /api/v1/reconciliation?start&end                         (finance only)
    GET /api/v1/export?month=YYYY-MM&format=csv|parquet|focus&group_by=team   (a file; &archived=NAME: a
                                                                              re-opened close, as close --list names it;
                                                                              group_by: report dimensions, tag:<key>)

Any other path under /api/ answers 404 JSON naming these; another method than GET on one of them, 405.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import flask
from werkzeug.exceptions import HTTPException

from dashboards.access import AccessDenied, scoped_warehouse
from dashboards.filters import Filters
from dashboards.handle import WarehouseUnavailable
from dashboards.tables import TableMissing, frame_records, json_value
from warehouse.backends import WarehouseError
from warehouse.queries import DIMENSIONS

log = logging.getLogger(__name__)
api_blueprint = flask.Blueprint("tokenmeter_api", __name__, url_prefix="/api/v1")
# Every other path under /api/: a JSON 404 naming the endpoints. Without it Dash's catch-all page route answered a
# typo (or a page's name, /api/v1/showback) with 200 and the dashboard's HTML (walk36). The login guard runs first.
api_unknown = flask.Blueprint("tokenmeter_api_unknown", __name__, url_prefix="/api")
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
SPEND_DIMS = DIMENSIONS  # `tokenmeter report`'s own list: a copy here had missed usage_assumption


class BadRequest(ValueError):
    pass


def _list(name: str) -> list[str]:
    return [v for item in flask.request.args.getlist(name) for v in item.split(",") if v.strip()]


def _reads(*names: str) -> None:
    """Refuse a query parameter the endpoint does not read: a filter it ignored answered with unfiltered money
    (walk31: `spend?group_by=team&teams=alpha`, a typo, gave every team's cost; `export?...&team=search` the whole
    organisation's file; `anomalies?team=search` every team's anomalies)."""
    unknown = sorted(set(flask.request.args) - set(names))
    if unknown:
        raise BadRequest(f"unknown parameter(s) {unknown}; this endpoint reads {', '.join(names) or 'none'}")


_RANGE = ("start", "end")


def _filters() -> Filters:
    args = flask.request.args
    days = {}
    for name in ("start", "end"):  # the pages fall back to the default week; a script must not get it silently
        value = args.get(name)
        if value:
            try:
                days[name] = date.fromisoformat(value[:10])
            except ValueError:
                raise BadRequest(f"{name}={value!r} is not a date; use YYYY-MM-DD") from None
    # The pages swap a reversed pick (the date picker then shows the range read); a script that built its range
    # wrong must hear so, as from `tokenmeter report` (left24: it got the swapped range's money without a word).
    if len(days) == 2 and days["end"] < days["start"]:
        raise BadRequest(f"end={days['end'].isoformat()} is before start={days['start'].isoformat()}: the range is "
                         "empty (swapped?); end is inclusive, so start=end asks for one day")
    return Filters.from_inputs(args.get("start"), args.get("end"), _list("team"))


@api_blueprint.errorhandler(AccessDenied)
def _denied(exc: AccessDenied):
    return flask.jsonify({"error": str(exc)}), 403


@api_blueprint.errorhandler(BadRequest)
def _bad(exc: BadRequest):
    return flask.jsonify({"error": str(exc)}), 400


@api_blueprint.errorhandler(TableMissing)
def _missing(exc: TableMissing):
    return flask.jsonify({"error": "not available yet: the stage that writes this table has not run",
                          "detail": str(exc)}), 404


@api_blueprint.errorhandler(WarehouseUnavailable)
def _unavailable(exc: WarehouseUnavailable):
    return flask.jsonify({"error": str(exc)}), 503


@api_blueprint.errorhandler(WarehouseError)
def _books_refused(exc: WarehouseError):
    # The books cannot give the answer as asked (a closed month's kept finance file changed since the close, raw
    # events of the range gone): the reason, as the CLI says it, instead of Flask's HTML 500 page (walk29).
    log.warning("api: %s", exc)
    return flask.jsonify({"error": str(exc)}), 500


def _endpoints() -> list[str]:
    return sorted({rule.rule for rule in flask.current_app.url_map.iter_rules()
                   if rule.endpoint.startswith(api_blueprint.name + ".")})


@api_unknown.route("/", defaults={"rest": ""}, methods=ALL_METHODS)
@api_unknown.route("/<path:rest>", methods=ALL_METHODS)
def unknown(rest: str):
    # A known endpoint asked with another method lands here too (this rule takes every method): say so (405).
    try:
        endpoint, _ = flask.current_app.url_map.bind("").match(flask.request.path, method="GET")
    except HTTPException:
        endpoint = None
    if endpoint and endpoint.startswith(api_blueprint.name + "."):
        response = flask.jsonify({"error": f"{flask.request.method} is not allowed on {flask.request.path}; use GET"})
        response.headers["Allow"] = "GET, HEAD"
        return response, 405
    endpoints = _endpoints()
    return flask.jsonify({"error": f"no API endpoint {flask.request.path}; the endpoints: {', '.join(endpoints)}",
                          "endpoints": endpoints}), 404


def _json(body: Any):
    return flask.jsonify(json_value(body))


@api_blueprint.get("/me")
def me():
    from dashboards.auth import current_principal

    p = current_principal()
    return _json({"user": p.name, "role": p.role, "team": p.team})


@api_blueprint.get("/overview")
def overview():
    from dashboards.overview_data import build_overview
    from dashboards.summary_data import headline, top_movers

    _reads(*_RANGE, "team")
    filters = _filters()
    with scoped_warehouse() as wh:
        data = build_overview(wh, filters)
        head = headline(wh, filters)
        movers = top_movers(wh, filters)
    k = data.kpis
    return _json({
        "start": filters.start, "end": filters.end, "teams": filters.teams,
        "kpis": {name: getattr(k, name) for name in k.__dataclass_fields__},
        "today_usd": head.today_usd, "month_to_date_usd": head.month_usd,
        "by_team": [vars(t) for t in data.by_team],
        "by_model": [{k2: v for k2, v in vars(m).items()} for m in data.by_model],
        "top_movers": [{"team": m.team, "model": m.model, "before_usd": m.before, "now_usd": m.now,
                        "change_usd": m.change} for m in movers],
        "budgets": [{"budget": b.budget, "state": b.state, "percent": b.percent} for b in head.budgets],
    })


@api_blueprint.get("/spend")
def spend():
    _reads("group_by", "bucket", *_RANGE, *SPEND_DIMS)
    dims = _list("group_by") or ["team"]
    unknown = [d for d in dims if d not in SPEND_DIMS]
    if unknown:
        raise BadRequest(f"unknown dimension(s) {unknown}; choose from {', '.join(SPEND_DIMS)}")
    filters = _filters()
    where = {dim: _list(dim) for dim in SPEND_DIMS if _list(dim)}
    bucket = flask.request.args.get("bucket")
    with scoped_warehouse() as wh:
        if bucket:
            if bucket not in ("hour", "day") or len(dims) > 1:
                raise BadRequest("bucket must be hour or day, with at most one group_by dimension")
            frame = wh.spend_over_time(bucket, dims[0], since=filters.since, until=filters.until, filters=where)
        else:
            frame = wh.spend(dims, since=filters.since, until=filters.until, filters=where)
    return _json({"start": filters.start, "end": filters.end, "group_by": dims, "filters": where,
                  "rows": frame_records(frame)})


@api_blueprint.get("/models")
def models():
    from dashboards.models_data import economics_json, model_economics, output_drivers

    _reads(*_RANGE, "team")
    filters = _filters()
    with scoped_warehouse() as wh:
        rows = [economics_json(r) for r in model_economics(wh, filters)]
        drivers = output_drivers(wh, filters)
    return _json({"start": filters.start, "end": filters.end, "models": rows, "output_drivers": drivers})


@api_blueprint.get("/budgets")
def budgets():
    from dashboards.budgets_data import latest_statuses, status_json

    _reads()
    with scoped_warehouse() as wh:
        return _json({"budgets": [status_json(s) for s in latest_statuses(wh)]})


@api_blueprint.get("/budgets/<name>")
def budget(name: str):
    from dashboards.budgets_data import alert_history, budget_history, budget_periods, status_json

    _reads("period_key")
    period_key = flask.request.args.get("period_key")
    with scoped_warehouse() as wh:
        history = budget_history(wh, name, period_key)
        if not history:
            periods = budget_periods(wh, name) if period_key is not None else []
            if periods:  # the budget is there: the period is not (until hostile32 this said the budget was not)
                return flask.jsonify({"error": f"budget {name!r} has no period {period_key[:100]!r} (its periods, "
                                               f"newest first: {', '.join(periods)})"}), 404
            return flask.jsonify({"error": f"no budget {name[:200]!r} visible to you"}), 404
        alerts = alert_history(wh, name)
    return _json({"budget": name, "history": [status_json(s) for s in history], "alerts": alerts})


@api_blueprint.get("/anomalies")
def anomalies():
    from dashboards.anomalies_data import list_anomalies

    _reads(*_RANGE)  # every anomaly a team user may see is of their team already; finance sees all
    filters = _filters()
    with scoped_warehouse() as wh:
        return _json({"anomalies": list_anomalies(wh, filters.since, filters.until)})


@api_blueprint.get("/reconciliation")
def reconciliation():
    from dashboards.reconciliation_data import reconcile, totals

    _reads(*_RANGE)  # provider bills are whole-organisation: no team to filter by
    filters = _filters()
    with scoped_warehouse() as wh:
        rows = reconcile(wh, filters.since, filters.until)
    ours, theirs = totals(rows)
    return _json({"start": filters.start, "end": filters.end, "ours_usd": ours, "provider_usd": theirs,
                  "rows": [{**vars(r), "difference": r.difference, "flagged": r.flagged} for r in rows]})


@api_blueprint.get("/export")
def export():
    from dashboards.export_data import ExportUnavailable, export_file

    _reads("month", "format", "group_by", "archived")  # a team user's file holds their team only
    args = flask.request.args
    try:
        with scoped_warehouse() as wh:
            name, mimetype, body = export_file(wh, args.get("month", ""), args.get("format", "csv"),
                                               args.get("group_by", "team"), args.get("archived", ""))
    except ExportUnavailable as exc:
        return flask.jsonify({"error": str(exc)}), 501
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return flask.Response(body, mimetype=mimetype, headers={"Content-Disposition": f'attachment; filename="{name}"'})
