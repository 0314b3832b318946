"""Issue 11 item 10, HTTP collector: a body that does not arrive in time gets 408 and its connection closed
(500 slow connections were held for 30 s), a Content-Type the route does not read gets 415 (text/plain was
accepted). A real `tokenmeter collect http` subprocess and raw sockets."""

from __future__ import annotations

import socket
import time
import uuid

import httpx
import orjson
import pytest
from test_collectors_mode_support import canonical_event, start_http, stop_process


BODY_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def server(kafka_bootstrap, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("http-hardening")
    url, proc = start_http(tmp, kafka_bootstrap, "--max-body-bytes", "64KB",
                           TOKENMETER_COLLECT_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT_S))
    try:
        yield int(url.rsplit(":", 1)[1])
    finally:
        assert stop_process(proc) == 0


def slow_client(port: int) -> socket.socket:
    """Headers promise 1000 bytes of body; only 10 are sent, then nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n[{\"event_i")
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):  # ends when the server closes the connection
        data += chunk
    return data


def test_slow_bodies_get_408_and_their_connections_closed(server):
    started = time.monotonic()
    clients = [slow_client(server) for _ in range(50)]
    try:
        answers = [read_all(sock) for sock in clients]  # socket timeout 10 s: the old server never answered
    finally:
        for sock in clients:
            sock.close()
    elapsed = time.monotonic() - started
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[0][:200]
    assert b"not received within 1 s" in answers[0]
    assert elapsed < 8, elapsed  # all answered about BODY_TIMEOUT_S after they stalled
    event = canonical_event(f"after-slow-{uuid.uuid4().hex}")
    ok = httpx.post(f"http://127.0.0.1:{server}/v1/events", content=orjson.dumps(event),
                    headers={"content-type": "application/json"}, timeout=30)
    assert ok.status_code == 202  # the server is still serving


@pytest.mark.parametrize("path", ["/v1/events", "/v1/logs/kong", "/v1/traces"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(server, path, content_type):
    headers = {"content-type": content_type} if content_type else {}
    body = orjson.dumps(canonical_event(f"ct-{uuid.uuid4().hex}"))
    response = httpx.post(f"http://127.0.0.1:{server}{path}", content=body, headers=headers, timeout=30)
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["accepted"]


@pytest.mark.parametrize("encoding", ["snappy", "lz4", "x-custom"])
def test_a_content_encoding_it_cannot_decode_is_415_naming_the_ones_it_can(server, encoding):
    """walk32: the OpenTelemetry Collector's otlphttp exporter offers `compression: snappy | lz4 | zstd | gzip |
    deflate`; a body in a coding aiohttp does not decode was read as it came, and the sender got a 400 about invalid
    UTF-8 in 'line 1', 'line 2', ... (the exporter drops a batch on 400, with that message to go on)."""
    import zlib

    body = zlib.compress(orjson.dumps(canonical_event(f"enc-{uuid.uuid4().hex}")))
    response = httpx.post(f"http://127.0.0.1:{server}/v1/traces", content=body, timeout=30,
                          headers={"content-type": "application/json", "content-encoding": encoding})
    assert response.status_code == 415, response.text
    assert encoding in response.json()["error"] and "gzip" in response.headers["Accept-Encoding"]
    plain = orjson.dumps(canonical_event(f"enc-ok-{uuid.uuid4().hex}"))
    for coding, data in (("gzip", __import__("gzip").compress(plain)), ("identity", plain)):
        ok = httpx.post(f"http://127.0.0.1:{server}/v1/events", content=data, timeout=30,
                        headers={"content-type": "application/json", "content-encoding": coding})
        assert ok.status_code == 202, (coding, ok.text)


def test_slow_or_silent_heads_are_closed_too(server):
    """hostile24: the 408 covered a slow body only. A client that sent half a request head (or nothing) held its
    connection for aiohttp's keep-alive default, 3630 s, so a few thousand such sockets used up the descriptors.
    The head must now arrive within the body timeout as well."""
    started = time.monotonic()
    half_heads = [socket.create_connection(("127.0.0.1", server), timeout=10) for _ in range(20)]
    for sock in half_heads:
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Ty")
    silent = [socket.create_connection(("127.0.0.1", server), timeout=10) for _ in range(20)]
    try:
        answers = [read_all(sock) for sock in half_heads + silent]  # socket timeout 10 s: the old server held them
    finally:
        for sock in half_heads + silent:
            sock.close()
    assert all(not a or a.startswith(b"HTTP/1.1 408") for a in answers), answers[0][:200]
    assert time.monotonic() - started < 8
    ok = httpx.get(f"http://127.0.0.1:{server}/healthz", timeout=30)
    assert ok.status_code == 200
