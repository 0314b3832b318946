"""dash31: `tokenmeter dash` as production runs it (compose's `dashboard` service, `tokenmeter up`'s child): the real
command in a child process, real HTTP. Before, it ran Flask's development server: werkzeug's "This is a development
server. Do not use it in a production deployment" at every start, a request's whole query string in its access line
(a token given as `?token=` included), and SIGTERM (compose's and `up`'s stop) killed it where it stood (exit -15,
the warehouse handle never closed)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import flask
import httpx
import pytest

from dashboards import serving
from tests.process_support import start_dashboard, stop, wait_for
from tokenmeter.settings import free_port

SECRET_QUERY = "q-s3cret-in-the-query"
SECRET_COOKIE = "c-s3cret-in-the-cookie"
SECRET_BASIC = "YWw6YS1zM2NyZXQtcGFzc3dvcmQ="  # al:a-s3cret-password
BODY = bytes(range(256)) * (8 * 4096)  # 8 MB


def test_dash_serves_without_the_development_warning_logs_no_secret_and_stops_on_sigterm(tmp_path):
    proc, base, log_path = start_dashboard(tmp_path)
    try:
        answer = httpx.get(f"{base}/api/v1/me?start=2026-11-01&token={SECRET_QUERY}",
                           headers={"Authorization": f"Basic {SECRET_BASIC}", "Cookie": f"session={SECRET_COOKIE}"},
                           timeout=10)
        assert answer.status_code == 401  # no such user: refused, and one access line written
        assert httpx.get(f"{base}/assets/no-such-file.css", timeout=10).status_code == 404
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
        stopped_in = time.monotonic() - signalled
    finally:
        stop(proc)
    text = log_path.read_text()
    assert "development server" not in text.lower(), text
    assert code == 0, (code, text)  # was -15: killed by the signal, no cleanup ran
    assert stopped_in < 6, stopped_in
    assert "GET /healthz" not in text  # a successful probe is logged at DEBUG: `up` probes every 5 s
    line = next(li for li in text.splitlines() if "GET /api/v1/me" in li)
    assert " 401 " in line and "start=2026-11-01" in line and "token=***" in line, line
    for secret in (SECRET_QUERY, SECRET_COOKIE, SECRET_BASIC, "a-s3cret-password"):
        assert secret not in text, (secret, text)
    assert '"GET /assets/no-such-file.css HTTP/1.1" 404' in text, text
    assert "Traceback" not in text, text


def test_sigterm_lets_a_running_request_finish_and_refuses_new_connections():
    """`serving.serve` in this (main) thread, as `tokenmeter dash` runs it, SIGTERM sent while a request runs: its
    whole answer still arrives, a new connection is refused, and the stop takes about the request's remaining time.
    The answer is 8 MB (plotly's bundle, which every first page load fetches, is ~4.5 MB): more than a socket takes
    at once, so its rest waits for the server's I/O loop. waitress's own stop (`run()` on Ctrl-C) ended that loop
    and closed the sockets once the threads were done: the client got a cut answer."""
    site = flask.Flask("slow")
    running = threading.Event()

    @site.get("/slow")
    def slow():
        running.set()
        time.sleep(1.0)
        return BODY

    port = free_port()
    server = serving.make_server(site.wsgi_app, "127.0.0.1", port, threads=2)
    answers: list = []
    client = threading.Thread(target=lambda: answers.append(httpx.get(f"http://127.0.0.1:{port}/slow", timeout=10)))

    def terminate_once_running() -> None:
        if running.wait(10):
            os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_once_running)
    client.start()
    killer.start()
    handler_before = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    try:
        serving.serve(server)
        took = time.monotonic() - started
    finally:
        killer.join(15)
        client.join(15)
    assert [(a.status_code, len(a.content)) for a in answers] == [(200, len(BODY))]
    assert answers[0].content == BODY
    assert took < 4, took
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    assert signal.getsignal(signal.SIGTERM) is handler_before  # put back


def test_an_error_is_logged_once_with_its_traceback_and_its_access_line(caplog):
    """A route that raises: Flask's one ERROR record with the traceback, then the request's access line (500); the
    server adds no second report of it."""
    import logging

    from tests.dashboards.test_dashboard_idle_connections import running

    caplog.set_level(logging.DEBUG)
    site = flask.Flask("failing")

    @site.get("/boom")
    def boom():
        raise RuntimeError("the warehouse said no")

    with running(site, threads=2, idle_timeout_s=30) as port:
        assert httpx.get(f"http://127.0.0.1:{port}/boom?api_key=k-s3cret", timeout=10).status_code == 500
        wait_for(lambda: any(r.name == "dashboards.access" for r in caplog.records), timeout=10, what="access line")
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.name, r.exc_info[0]) for r in errors] == [("failing", RuntimeError)], [r.getMessage() for r in errors]
    access = [r.getMessage() for r in caplog.records if r.name == "dashboards.access"]
    assert len(access) == 1 and '"GET /boom?api_key=*** HTTP/1.1" 500' in access[0], access
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]  # not the client's
    assert not any("k-s3cret" in r.getMessage() for r in server_side)


def test_forwarded_headers_are_not_trusted():
    """docs/security.md: the client IP (the sign-in lock-out's key) is the TCP peer; a client's `X-Forwarded-For`
    neither changes it nor reaches the app."""
    from tests.dashboards.test_dashboard_idle_connections import running

    site = flask.Flask("peer")
    site.get("/peer")(lambda: {"addr": flask.request.remote_addr, "scheme": flask.request.scheme,
                               "forwarded": [k for k in flask.request.headers.keys() if "forward" in k.lower()]})
    with running(site, threads=1, idle_timeout_s=30) as port:
        seen = httpx.get(f"http://127.0.0.1:{port}/peer", timeout=10, headers={
            "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "Forwarded": "for=203.0.113.9"}).json()
        server = httpx.get(f"http://127.0.0.1:{port}/peer", timeout=10).headers["server"]
    assert seen == {"addr": "127.0.0.1", "scheme": "http", "forwarded": []}
    assert server == "tokenmeter"


def _can_unshare_pid() -> bool:
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _can_unshare_pid(), reason="needs unshare --pid (root or user namespaces)")
def test_sigterm_stops_it_as_pid_1_of_a_container(tmp_path):
    """The compose image runs `tokenmeter dash` as PID 1 (no init). Linux delivers no signal to PID 1 that it has no
    handler for, so Python's default SIGTERM did nothing there: `docker compose stop` waited its 10 s and killed it.
    Here: PID 1 of its own PID namespace, SIGTERM from outside."""
    import psutil

    wrapper, _, log_path = start_dashboard(tmp_path, prefix=("unshare", "--pid", "--fork", "--kill-child"))
    try:
        dash = psutil.Process(wrapper.pid).children()[0]
        status = open(f"/proc/{dash.pid}/status").read()
        assert re.search(r"^NSpid:\s+\d+\s+1$", status, re.M), status  # PID 1 inside
        dash.send_signal(signal.SIGTERM)
        dash.wait(6)  # psutil.TimeoutExpired before: still serving
        assert wrapper.wait(10) == 0, log_path.read_text()
    finally:
        stop(wrapper, signal.SIGKILL)  # --kill-child: the namespace goes with it
    assert "dashboard stopped" in log_path.read_text()


def test_probes_are_answered_while_every_thread_waits_on_a_page():
    """The liveness probe (`tokenmeter up` restarts a dashboard whose /healthz goes unanswered for 30 s) and the
    Prometheus scrape queued behind page requests: with every pool thread waiting (on the warehouse, which serves one
    query at a time, dashboards/handle.py), /healthz waited too, so `up` would restart the dashboard (and sign every
    user out) exactly when it was busiest. Probes have their own thread now; pages still wait their turn."""
    from tests.dashboards.test_dashboard_idle_connections import running

    release, started = threading.Event(), []
    site = flask.Flask("busy")
    site.add_url_rule("/slow", "slow", lambda: (started.append(1), release.wait(30), "slow")[2])
    site.add_url_rule("/healthz", "healthz", lambda: "ok\n")
    site.add_url_rule("/metrics", "metrics", lambda: "counts\n")
    with running(site, threads=2, idle_timeout_s=30) as port:
        base = f"http://127.0.0.1:{port}"
        with ThreadPoolExecutor(4) as pool:
            try:
                pages = [pool.submit(httpx.get, f"{base}/slow", timeout=40) for _ in range(3)]  # 2 threads, 1 queued
                wait_for(lambda: len(started) == 2, timeout=10, what="both threads serving a page")
                assert httpx.get(f"{base}/healthz", timeout=3).text == "ok\n"  # ReadTimeout before
                assert httpx.get(f"{base}/metrics", timeout=3).text == "counts\n"
                assert not any(page.done() for page in pages)
            finally:
                release.set()
            assert [page.result().text for page in pages] == ["slow"] * 3
