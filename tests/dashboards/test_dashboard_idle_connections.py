"""hostile24: the dashboard (then Flask's threaded server) kept a thread for every connection that sent nothing, or half
a request head, for good: 300 silent sockets held 300 threads. A connection silent for IDLE_TIMEOUT_S is closed.
left24: each such close was an ERROR line ("Request timed out: TimeoutError('timed out')"), one per idle browser tab
or probe, noise in the log on-call reads; it is counted (for /metrics) and logged at debug instead.
dash31: served by waitress (dashboards/serving.py), where a silent connection holds no thread at all; the same
behaviour through the dashboard's own server factory, in process, over real sockets."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import flask
import httpx

from dashboards import serving
from tokenmeter.settings import free_port


@contextlib.contextmanager
def running(site: flask.Flask, threads: int, idle_timeout_s: float, **options):
    """The dashboard's server (`serving.make_server`) on a free port, served in a thread by `serving.serve_until` (the
    loop `serve` runs) and stopped as SIGTERM stops it. Not by pulling waitress's trigger from this thread: the
    closing thunk could run before this thread's write to the trigger, which then failed with EBADF (2 of 6 local
    runs of the three files using this with -n 2 on a loaded machine)."""
    port = free_port()
    server = serving.make_server(site.wsgi_app, "127.0.0.1", port, threads, idle_timeout_s=idle_timeout_s, **options)
    stopping = threading.Event()
    thread = threading.Thread(target=serving.serve_until, args=(server, stopping.is_set), kwargs={"wait_s": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stopping.set()
        thread.join(10)
        assert not thread.is_alive()


def test_silent_and_half_sent_connections_are_closed(caplog):
    caplog.set_level(logging.DEBUG)
    closed_before = serving.idle_connections_closed()
    site = flask.Flask("idle")
    site.get("/")(lambda: "ok")
    clients = []
    with running(site, threads=2, idle_timeout_s=1) as port:
        try:
            clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(10)]
            for sock in clients[:5]:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            for sock in clients:
                assert sock.recv(100) == b""  # closed by the server (the socket's own timeout is 10 s)
            assert time.monotonic() - started < 8
            with socket.create_connection(("127.0.0.1", port), timeout=10) as ok:
                ok.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
                answer = b""
                while chunk := ok.recv(4096):
                    answer += chunk
                assert answer.split(b"\r\n", 1)[0].endswith(b"200 OK"), answer[:200]
        finally:
            for sock in clients:
                sock.close()
    loud = [r.getMessage() for r in caplog.records
            if r.levelno >= logging.INFO and ("timed out" in r.getMessage() or "idle" in r.getMessage())]
    assert loud == []  # was 10 ERROR lines, one per closed connection
    assert serving.idle_connections_closed() - closed_before == 10
    assert any("closed an idle connection" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)


def test_many_silent_connections_hold_no_thread_and_requests_are_served():
    """300 silent connections (hostile24's count; three times waitress's default connection limit) beside 2 threads:
    60 requests from 12 clients at once are all answered, promptly."""
    site = flask.Flask("busy")
    in_flight, most = [0], [0]
    lock = threading.Lock()

    @site.get("/work")
    def work():
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.02)  # a request that takes a while, so requests overlap
        with lock:
            in_flight[0] -= 1
        return "done"

    silent = []
    with running(site, threads=2, idle_timeout_s=60) as port:
        try:
            silent = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(300)]
            for sock in silent[::2]:
                sock.sendall(b"GET /work HTTP/1.1\r\nHost: x\r\n")  # half a request head
            started = time.monotonic()
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10,
                              limits=httpx.Limits(max_connections=12)) as client, ThreadPoolExecutor(12) as pool:
                answers = list(pool.map(lambda _: client.get("/work"), range(60)))
            took = time.monotonic() - started
        finally:
            for sock in silent:
                sock.close()
    assert [a.status_code for a in answers] == [200] * 60
    assert {a.text for a in answers} == {"done"}
    assert most[0] == 2  # the pool's size: the silent connections held none of its threads
    assert took < 10, took
