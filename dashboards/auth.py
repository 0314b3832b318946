"""Login for the dashboard: a Flask guard in front of every route, a plain login form, signed session cookies.

Pages redirect to /login; Dash's JSON endpoints and the JSON API answer 401 instead. The JSON API also
accepts HTTP Basic, for BI tools and scripts. The signed-in user is `flask.g.principal` (dashboards.users).

The cookie (HttpOnly, SameSite=Lax, Secure with TOKENMETER_DASHBOARD_SECURE_COOKIES or over HTTPS) only names a server-side
session (dashboards.auth_state), so logout (POST /logout with the session's CSRF token) ends it for good.
Failed sign-ins (form and Basic) are throttled per user name and per client IP, with a temporary lock-out:
429 + Retry-After, and the page says how long to wait.
"""

from __future__ import annotations

import html
import logging
import secrets
from typing import Any
from urllib.parse import quote

import flask
from flask.sessions import SecureCookieSessionInterface

from dashboards import metrics
from dashboards.auth_state import LoginThrottle, SessionRegistry, describe_wait
from dashboards.users import Principal, UserStore, users_file_path

log = logging.getLogger(__name__)

USER_STORE_KEY = "TOKENMETER_USER_STORE"
SESSIONS_KEY = "TOKENMETER_SESSIONS"
THROTTLE_KEY = "TOKENMETER_LOGIN_THROTTLE"
PUBLIC_PATHS = ("/login", "/logout", "/_favicon.ico", "/healthz", "/metrics")  # the last two: counts only
PUBLIC_PREFIXES = ("/assets/",)  # the stylesheet; no data
# Dash's own JSON routes: a browser without a session gets a 401, not an HTML login page it cannot parse.
JSON_PREFIXES = ("/api/", "/_dash-", "/_reload-hash")

LOGIN_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>tokenmeter - sign in</title>
<style>
 body {{ font-family: -apple-system, "Segoe UI", Roboto, Arial, sans-serif; background: #f3f4f6; margin: 0; }}
 form {{ max-width: 340px; margin: 12vh auto; background: #fff; padding: 28px; border-radius: 12px;
        box-shadow: 0 1px 3px rgba(0,0,0,.1); display: flex; flex-direction: column; gap: 10px; }}
 h1 {{ font-size: 20px; margin: 0 0 8px; }} label {{ font-size: 13px; color: #4b5563; }}
 input {{ padding: 8px 10px; font-size: 15px; border: 1px solid #d1d5db; border-radius: 6px; }}
 button {{ padding: 9px; font-size: 15px; background: #2563eb; color: #fff; border: 0; border-radius: 6px; }}
 .error {{ color: #991b1b; background: #fee2e2; padding: 8px; border-radius: 6px; font-size: 14px; }}
</style></head>
<body><form method="post" action="/login?next={next_q}" id="login-form">
<h1>tokenmeter</h1>{error}
<label for="username">User</label><input id="username" name="username" autocomplete="username" autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password">
<button id="login-submit" type="submit">Sign in</button>
</form></body></html>"""


def safe_next(target: str | None) -> str:
    """Only local paths: a crafted ?next= must not send a signed-in user to another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _store() -> UserStore:
    return flask.current_app.config[USER_STORE_KEY]


def _sessions() -> SessionRegistry:
    return flask.current_app.config[SESSIONS_KEY]


def _throttle() -> LoginThrottle:
    return flask.current_app.config[THROTTLE_KEY]


def _client_ip() -> str:
    # The TCP peer, or behind a trusted proxy the client it forwarded for (dashboards/forwarded.py); a client's own
    # X-Forwarded-For never reaches here: any client can set it
    return flask.request.remote_addr or "unknown"


def _authenticate(name: str, password: str) -> tuple[Principal | None, int]:
    """(principal, 0) on success; (None, 0) for a wrong password; (None, seconds) while locked out, without
    even checking the password (so a correct guess during the lock-out teaches the attacker nothing)."""
    throttle, ip = _throttle(), _client_ip()
    wait = throttle.retry_after(name, ip)
    if wait:
        metrics.sign_in("locked_out")
        return None, wait
    principal = _store().authenticate(name, password)
    if principal is None:
        throttle.failed(name, ip)
        metrics.sign_in("wrong")
        log.warning("dashboard login failed for user %r from %s", name, ip)  # the name only, never the password
        return None, throttle.retry_after(name, ip)
    throttle.succeeded(name)
    metrics.sign_in("ok")
    return principal, 0


def csrf_token() -> str:
    """The signed-in session's CSRF token (for the logout form); "" outside a session."""
    if not flask.has_request_context():
        return ""
    session = _sessions().get(flask.session.get("sid"))
    return session.csrf if session else ""


def current_principal() -> Principal | None:
    if not flask.has_request_context():
        return None  # Dash may build the layout once at start-up, outside any request
    return getattr(flask.g, "principal", None)


def _login_page(next_target: str, error: str | None = None, status: int = 200) -> flask.Response:
    body = LOGIN_PAGE.format(
        next_q=html.escape(quote(next_target, safe="/")),
        error=f'<div class="error" id="login-error">{html.escape(error)}</div>' if error else "",
    )
    return flask.Response(body, status=status, mimetype="text/html")


def _guard() -> Any:
    path = flask.request.path
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return None
    store = _store()
    session = _sessions().get(flask.session.get("sid"))
    principal = store.principal(session.user) if session else None
    if principal is None and path.startswith("/api/"):
        try:
            basic = flask.request.authorization
        except ValueError:  # werkzeug's base64 decoding of non-ASCII credentials (hostile24: was a 500): none given
            basic = None
        if basic is not None and basic.type == "basic" and basic.username:
            principal, wait = _authenticate(basic.username, basic.password or "")
            if wait:
                response = flask.jsonify({"error": f"too many failed sign-ins: try again in {describe_wait(wait)}",
                                          "retry_after_s": wait})
                response.status_code = 429
                response.headers["Retry-After"] = str(wait)
                return response
    if principal is not None:
        flask.g.principal = principal
        return None
    if path.startswith(JSON_PREFIXES):
        response = flask.jsonify({"error": "login required"})
        response.status_code = 401
        if path.startswith("/api/"):
            response.headers["WWW-Authenticate"] = 'Basic realm="tokenmeter"'
        return response
    target = flask.request.full_path.rstrip("?")
    return flask.redirect("/login?next=" + quote(safe_next(target), safe="/"))


def login() -> Any:
    next_target = safe_next(flask.request.args.get("next"))
    if flask.request.method == "GET":
        return _login_page(next_target)
    name = flask.request.form.get("username", "").strip()
    principal, wait = _authenticate(name, flask.request.form.get("password", ""))
    if wait:
        response = _login_page(next_target, f"Too many failed sign-ins. Try again in {describe_wait(wait)}.",
                               status=429)
        response.headers["Retry-After"] = str(wait)
        return response
    if principal is None:
        return _login_page(next_target, "Wrong user name or password.", status=401)
    _sessions().end(flask.session.get("sid"))  # a session id never outlives a new sign-in (fixation)
    flask.session.clear()
    sid, _ = _sessions().create(principal.name)
    flask.session["sid"] = sid
    log.info("dashboard login: %s (%s)", principal.name, principal.role)
    return flask.redirect(next_target)


def logout() -> Any:
    """POST only, with the session's CSRF token (the page's Sign-out form sends it): a link or a form on
    another site cannot sign a user out. The server-side session ends, so a copied cookie is worthless."""
    session = _sessions().get(flask.session.get("sid"))
    if session is not None:
        given = flask.request.form.get("csrf", "")
        if not given or not secrets.compare_digest(given, session.csrf):
            return flask.Response("logout needs the CSRF token of your session", status=400, mimetype="text/plain")
        _sessions().end(flask.session.get("sid"))
    flask.session.clear()
    return flask.redirect("/login")


def _logout_needs_post() -> Any:
    return flask.Response("sign out with POST (the Sign out button)", status=405, mimetype="text/plain",
                          headers={"Allow": "POST"})


class _SecureOverHttps(SecureCookieSessionInterface):
    """The session cookie is Secure with TOKENMETER_DASHBOARD_SECURE_COOKIES, and also for a request that came over
    HTTPS (the scheme a trusted proxy forwarded: dashboards/forwarded.py), so a browser never sends it over HTTP."""

    def get_cookie_secure(self, app: flask.Flask) -> bool:
        return super().get_cookie_secure(app) or (flask.has_request_context() and flask.request.scheme == "https")


def install_auth(server: flask.Flask, settings: Any) -> None:
    """Require a login on every route of `server` (the Dash app's Flask server)."""
    secret = settings.dashboard_secret_key.get_secret_value() if settings.dashboard_secret_key else None
    if not secret:
        log.warning("TOKENMETER_DASHBOARD_SECRET_KEY is not set: sessions are signed with a random key and "
                    "end when the dashboard restarts")
        secret = secrets.token_hex(32)
    server.secret_key = secret
    server.session_interface = _SecureOverHttps()
    server.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                         SESSION_COOKIE_SECURE=bool(settings.dashboard_secure_cookies))
    if not settings.dashboard_secure_cookies:
        log.info("session cookies are marked Secure only for requests a trusted proxy forwarded over HTTPS; behind "
                 "HTTPS set TOKENMETER_DASHBOARD_SECURE_COOKIES=true")
    server.config[USER_STORE_KEY] = UserStore(users_file_path(settings))
    server.config[SESSIONS_KEY] = SessionRegistry(settings.dashboard_session_hours * 3600)
    server.config[THROTTLE_KEY] = LoginThrottle(settings.dashboard_login_max_failures,
                                                settings.dashboard_login_ip_max_failures,
                                                settings.dashboard_lockout_seconds)
    server.before_request(_guard)
    server.add_url_rule("/login", "tokenmeter_login", login, methods=["GET", "POST"])
    server.add_url_rule("/logout", "tokenmeter_logout", logout, methods=["POST"])
    server.add_url_rule("/healthz", "tokenmeter_healthz", metrics.healthz, methods=["GET"])
    server.add_url_rule("/metrics", "tokenmeter_metrics", lambda: metrics.metrics_page(_sessions().live),
                        methods=["GET"])
    # Without this, Dash's catch-all page route would answer a GET /logout with the app (and no logout).
    server.add_url_rule("/logout", "tokenmeter_logout_get", _logout_needs_post, methods=["GET"])
