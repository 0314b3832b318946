"""What the dashboard process counts, for /metrics (Prometheus text) beside /healthz.

Both answer without a session, as the collectors' ingest and the worker's do: a probe and a scraper carry no user.
The page holds counts only (no user names, addresses or passwords), so it tells an outsider no more than trying.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import flask

SIGN_IN_RESULTS = ("ok", "wrong", "locked_out")  # locked_out: refused without checking the password
_counts: Counter[str] = Counter()
_lock = threading.Lock()


def count(name: str) -> int:
    """Add one to `name`; the new total."""
    with _lock:
        _counts[name] += 1
        return _counts[name]


def total(name: str) -> int:
    with _lock:
        return _counts[name]


def sign_in(result: str) -> None:
    assert result in SIGN_IN_RESULTS, result
    count(f"sign_in_{result}")


def healthz() -> flask.Response:
    return flask.Response("ok\n", mimetype="text/plain")


def metrics_page(live_sessions: Any) -> flask.Response:
    lines = ["# HELP tokenmeter_dashboard_sign_ins_total Sign-ins by result (form and HTTP Basic on the API).",
             "# TYPE tokenmeter_dashboard_sign_ins_total counter",
             *(f'tokenmeter_dashboard_sign_ins_total{{result="{r}"}} {total(f"sign_in_{r}")}' for r in SIGN_IN_RESULTS),
             "# HELP tokenmeter_dashboard_idle_connections_closed_total Connections closed for sitting silent.",
             "# TYPE tokenmeter_dashboard_idle_connections_closed_total counter",
             f"tokenmeter_dashboard_idle_connections_closed_total {total('idle_closes')}",
             "# HELP tokenmeter_dashboard_sessions Signed-in sessions not yet ended or expired.",
             "# TYPE tokenmeter_dashboard_sessions gauge",
             f"tokenmeter_dashboard_sessions {live_sessions()}"]
    return flask.Response("\n".join(lines) + "\n", mimetype="text/plain", headers={"X-Content-Type-Options": "nosniff"})
