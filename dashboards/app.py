"""The finance dashboard: a multi-page Dash app over the warehouse query layer.

`create_app(settings)` builds the app (the warehouse opens on the first request); `run_dashboard(settings)`
serves it on settings.host:settings.dash_port (waitress: dashboards/serving.py).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import dash
from dash import Dash, Input, Output, dcc, html

from dashboards.access import scoped_warehouse
from dashboards.auth import csrf_token, current_principal, install_auth
from dashboards.formatting import describe_freshness
from dashboards.handle import CONFIG_KEY, SETTINGS_KEY, WarehouseHandle, WarehouseUnavailable

HERE = Path(__file__).parent
log = logging.getLogger(__name__)


def _as_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def freshness_text(freshness: dict[str, Any]) -> tuple[str, str]:
    """(text, level) from Warehouse.freshness(); level drives the dot colour."""
    if not freshness.get("events"):
        return describe_freshness(None).text, "empty"
    status = describe_freshness(_as_datetime(freshness.get("last_event_ts")), datetime.now(timezone.utc))
    return f"{status.text} · {int(freshness['events']):,} events", status.level


def _visible(page: dict) -> bool:
    """Pages marked finance_only (reconciliation: provider bills are not per team) are not linked for team users."""
    principal = current_principal()
    return not page.get("finance_only") or (principal is not None and principal.is_finance)


def user_badge() -> html.Div:
    principal = current_principal()
    if principal is None:
        return html.Div()
    scope = "all teams" if principal.is_finance else f"team {principal.team}"
    return html.Div(className="user-badge", children=[
        html.Span(f"{principal.name} · {scope}", id="user-name"),
        html.Form(method="POST", action="/logout", className="logout-form", children=[  # never a GET link
            dcc.Input(type="hidden", name="csrf", value=csrf_token()),
            html.Button("Sign out", type="submit", className="nav-link", id="logout-link"),
        ]),
    ])


def shell_layout(refresh_ms: int) -> html.Div:
    """The page frame; `refresh_ms`: the period of the `refresh` interval every page's callbacks listen to."""
    return html.Div(className="shell", children=[
        html.Header(className="topbar", children=[
            html.Div(className="brand", children=[html.Span("tokenmeter", className="brand-name"),
                                                  html.Span("LLM spend", className="brand-sub")]),
            html.Nav(className="nav", children=[
                dcc.Link(page["name"], href=page["relative_path"], className="nav-link")
                for page in dash.page_registry.values() if _visible(page)
            ]),
            html.Div(id="freshness", className="freshness freshness-empty", children=[
                html.Span(className="dot"), html.Span("connecting…", id="freshness-text"),
            ]),
            user_badge(),
        ]),
        html.Main(dash.page_container, className="content"),
        dcc.Interval(id="refresh", interval=refresh_ms, n_intervals=0),
    ])


def _register_shell_callbacks(app: Dash, handle: WarehouseHandle) -> None:
    # Registered on this app (not module-level) because the shell module is imported once per process
    # while each app needs its own copy.
    @app.callback(
        Output("freshness-text", "children"),
        Output("freshness", "className"),
        Input("refresh", "n_intervals"),
    )
    def refresh_freshness(_n_intervals):
        try:
            with scoped_warehouse() as warehouse:
                text, level = freshness_text(warehouse.freshness())
        except WarehouseUnavailable:
            return "warehouse unavailable", "freshness freshness-red"
        except Exception:  # noqa: BLE001
            log.exception("freshness query failed")
            return "freshness unknown", "freshness freshness-red"
        return text, f"freshness freshness-{level}"


def create_app(settings: Any, warehouse: Any = None) -> Dash:
    """Build the dashboard. `warehouse`: an open Warehouse to share (tests, `tokenmeter up`); else opened lazily."""
    app = Dash(
        __name__,
        use_pages=True,
        pages_folder=str(HERE / "pages"),
        assets_folder=str(HERE / "assets"),
        title="tokenmeter",
        update_title=None,  # no "Updating..." flicker in the tab at every refresh
        suppress_callback_exceptions=True,  # page components exist only while their page is shown
    )
    handle = WarehouseHandle(settings, warehouse)
    app.server.config[CONFIG_KEY] = handle
    app.server.config[SETTINGS_KEY] = settings
    install_auth(app.server, settings)
    from dashboards.api import api_blueprint, api_unknown  # imported here: the API imports page data modules

    app.server.register_blueprint(api_blueprint)
    app.server.register_blueprint(api_unknown)
    app.layout = partial(shell_layout, round(settings.dashboard_refresh_seconds * 1000))  # a function: per request
    _register_shell_callbacks(app, handle)
    return app


def run_dashboard(settings: Any) -> None:
    """Serve on settings.host:settings.dash_port with waitress (dashboards/serving.py) until SIGINT or SIGTERM."""
    from dashboards import serving
    from dashboards.users import ensure_users_file
    from tokenmeter.cli_support import configure_logging

    configure_logging(settings)  # the access lines and the app's own (Flask's development server wrote its own)
    for line in ensure_users_file(settings, demo=False):
        print(line, flush=True)  # stdout, not the log: a generated password is shown once, to the operator
    app = create_app(settings)
    try:
        server = serving.make_server(app.server, settings.host, settings.dash_port, settings.dashboard_threads,
                                     trusted_proxies=settings.dashboard_trusted_proxies)
        log.info("dashboard on %s (waitress, %d threads)", settings.dashboard_url, settings.dashboard_threads)
        if settings.dashboard_trusted_proxies:
            log.info("client addresses from X-Forwarded-For and -Proto of the trusted proxies %s",
                     ", ".join(settings.dashboard_trusted_proxies))
        serving.serve(server)
    finally:
        app.server.config[CONFIG_KEY].close()
    log.info("dashboard stopped")
