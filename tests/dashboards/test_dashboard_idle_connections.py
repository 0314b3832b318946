"""hostile24: the dashboard (Flask's threaded server) kept a thread for every connection that sent nothing, or half
a request head, for good: 300 silent sockets held 300 threads. It is served with a handler that closes a
connection silent for IDLE_TIMEOUT_S. In process: werkzeug's server with the dashboard's handler.
left24: each such close was an ERROR line of werkzeug's ("Request timed out: TimeoutError('timed out')"), one per idle
browser tab or probe, noise in the log on-call reads; it is counted and logged at debug instead."""

from __future__ import annotations

import socket
import threading
import time

import logging

import flask
from werkzeug.serving import make_server

from dashboards import app as dashboard_app
from tokenmeter.settings import free_port


def test_silent_and_half_sent_connections_are_closed(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(dashboard_app, "IDLE_TIMEOUT_S", 1.0)
    closed_before = dashboard_app.idle_connections_closed()
    site = flask.Flask("idle")
    site.get("/")(lambda: "ok")
    port = free_port()
    server = make_server("127.0.0.1", port, site, threaded=True, request_handler=dashboard_app.idle_closing_handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    clients = []
    try:
        clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(10)]
        for sock in clients[:5]:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        for sock in clients:
            assert sock.recv(100) == b""  # closed by the server (the old one never did: socket timeout, 10 s)
        assert time.monotonic() - started < 8
        with socket.create_connection(("127.0.0.1", port), timeout=10) as ok:
            ok.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            answer = b""
            while chunk := ok.recv(4096):
                answer += chunk
            assert answer.split(b"\r\n", 1)[0].endswith(b"200 OK"), answer[:200]
        loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and "timed out" in r.getMessage()]
        assert loud == []  # was 10 ERROR lines, one per closed connection
        assert dashboard_app.idle_connections_closed() - closed_before == 10
        assert any("closed an idle connection" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    finally:
        for sock in clients:
            sock.close()
        server.shutdown()
        thread.join(10)
