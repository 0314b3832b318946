"""The dashboard's /healthz and /metrics, as the collectors' HTTP ingest and the worker have: a probe and a Prometheus
scrape without a session. Before, both answered 302 to /login, and what the dashboard counted (idle connections
closed, left24; failed and throttled sign-ins) reached no scrape, only the log. Flask's test client on the real app."""

from __future__ import annotations

import re

from dashboards import serving
from tests.dashboards.test_dashboard_login_security import login, make_app


def scrape(client) -> dict[str, float]:
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.status_code
    assert answer.mimetype == "text/plain" and answer.headers["X-Content-Type-Options"] == "nosniff"
    text = answer.get_data(as_text=True)
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+(?:\{[^}]*\})?) (\S+)$", text, re.M)}


def test_healthz_and_metrics_answer_without_a_session(tmp_path):
    client = make_app(tmp_path).test_client()
    health = client.get("/healthz")
    assert health.status_code == 200 and health.get_data(as_text=True) == "ok\n"
    assert "tokenmeter_dashboard_sessions" in scrape(client)
    assert client.get("/api/v1/me").status_code == 401  # everything else still needs a sign-in


def test_sign_ins_and_idle_closes_are_counted(tmp_path):
    server = make_app(tmp_path, dashboard_login_max_failures=3, dashboard_lockout_seconds=120)
    client = server.test_client()
    before = scrape(client)
    assert login(client).status_code == 302
    for _ in range(3):
        login(client, user="al", password="guess")
    assert login(client, user="al", password="al-pass").status_code == 429  # locked out: refused unchecked
    assert server.test_client().get("/api/v1/me", headers={"Authorization": "Basic YWw6Z3Vlc3M="}).status_code == 429  # al:guess
    serving._count_idle_close()
    after = scrape(client)

    def grew(name: str) -> float:
        return after[name] - before.get(name, 0)

    assert grew('tokenmeter_dashboard_sign_ins_total{result="ok"}') == 1
    assert grew('tokenmeter_dashboard_sign_ins_total{result="wrong"}') == 3
    assert grew('tokenmeter_dashboard_sign_ins_total{result="locked_out"}') == 2
    assert grew("tokenmeter_dashboard_idle_connections_closed_total") == 1
    assert after["tokenmeter_dashboard_sessions"] == 1
    text = server.test_client().get("/metrics").get_data(as_text=True)
    assert set(re.findall(r"[{,](\w+)=", text)) == {"result"}  # counts only: no user names, addresses or passwords
