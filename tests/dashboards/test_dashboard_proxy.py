"""proxy31: the dashboard behind a reverse proxy. dash31's server removed every X-Forwarded-* header, so behind nginx,
an ALB or an ingress every client was the proxy's address: 20 failed sign-ins by anyone locked EVERY user out (the
per-IP lock-out, TOKENMETER_DASHBOARD_LOGIN_IP_MAX_FAILURES) and every access line showed the proxy. Now
TOKENMETER_DASHBOARD_TRUSTED_PROXIES names the proxies; only from them is X-Forwarded-For read (the right-most address
that is not itself a trusted proxy: the one the proxy saw) and X-Forwarded-Proto; from any other peer the headers are
still removed. Real `tokenmeter dash` and waitress over real HTTP; the "proxy" is this test client on 127.0.0.1, an
untrusted client the same test connecting from 127.0.0.2."""

from __future__ import annotations

import json
import socket

import flask
import httpx
import pytest

from dashboards.forwarded import MAX_FORWARDED_HOPS
from dashboards.users import add_user
from tests.dashboards.test_dashboard_idle_connections import running
from tests.process_support import start_dashboard, stop

pytestmark = pytest.mark.slow(seconds=20)  # rough seconds: longest files first (tests/suite_order.py)

CLIENT_A, CLIENT_B = "203.0.113.5", "198.51.100.7"


def _sign_in(base: str, name: str, password: str, forwarded_for: str | None = None,
             from_address: str = "127.0.0.1") -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else {}
    transport = httpx.HTTPTransport(local_address=from_address)
    with httpx.Client(transport=transport, timeout=30) as client:
        return client.post(f"{base}/login", data={"username": name, "password": password}, headers=headers).status_code


def test_behind_a_trusted_proxy_the_lock_out_is_per_forwarded_client_and_spoofing_gains_nothing(tmp_path):
    users_file = tmp_path / "users.yaml"
    add_user(users_file, "al", "al-pass", "team:alpha")
    proc, base, log_path = start_dashboard(tmp_path, TOKENMETER_DASHBOARD_USERS_FILE=str(users_file),
                                           TOKENMETER_DASHBOARD_LOGIN_IP_MAX_FAILURES="20",
                                           TOKENMETER_DASHBOARD_TRUSTED_PROXIES='["127.0.0.1"]')
    try:
        # A client that is not a trusted proxy (127.0.0.2) sends its own X-Forwarded-For, a new one each time: the
        # header is ignored, its 20 failures lock out its own address all the same.
        spoofed = [_sign_in(base, f"nobody{i}", "x", forwarded_for=f"192.0.2.{i}", from_address="127.0.0.2")
                   for i in range(20)]
        assert spoofed == [401] * 19 + [429]
        assert _sign_in(base, "al", "al-pass", forwarded_for="192.0.2.200", from_address="127.0.0.2") == 429

        # Through the trusted proxy: client A fails 20 times (a different name each time: the per-IP limit, not the
        # per-user one). A is locked out, B is not.
        failures = [_sign_in(base, f"nobody{i}", "x", forwarded_for=CLIENT_A) for i in range(20)]
        assert failures == [401] * 19 + [429]
        assert _sign_in(base, "al", "al-pass", forwarded_for=CLIENT_A) == 429
        # A naming B further left (what a client can add: the proxy appends the address it saw) is still A.
        assert _sign_in(base, "al", "al-pass", forwarded_for=f"{CLIENT_B}, {CLIENT_A}") == 429
        assert _sign_in(base, "al", "al-pass", forwarded_for=CLIENT_B) == 302  # was 429: everyone was the proxy
        assert _sign_in(base, "al", "al-pass") == 302  # the proxy's own address (no header) is not locked either
    finally:
        stop(proc)
    text = log_path.read_text()
    assert f"dashboard login failed for user 'nobody0' from {CLIENT_A}" in text, text
    assert f'{CLIENT_B} "POST /login HTTP/1.1" 302' in text, text  # the access line names the client, not the proxy
    assert "from 127.0.0.2" in text and "192.0.2." not in text  # the untrusted client's own header never used
    assert "trusted proxies 127.0.0.1/32" in text, text
    assert "Traceback" not in text, text


def _echo_site() -> flask.Flask:
    site = flask.Flask("peer")
    site.get("/peer")(lambda: {"addr": flask.request.remote_addr, "scheme": flask.request.scheme,
                               "forwarded": sorted(k for k in flask.request.headers.keys() if "forward" in k.lower())})
    return site


def _seen(port: int, headers: dict | list) -> dict:
    """GET /peer over a plain socket: httpx refuses to send padded or non-ASCII header values, a client need not."""
    pairs = headers.items() if isinstance(headers, dict) else headers
    head = b"GET /peer HTTP/1.0\r\nHost: dash\r\n" + b"".join(
        name.encode() + b": " + value.encode("utf-8") + b"\r\n" for name, value in pairs) + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.split(b"\r\n", 1)[0].endswith(b"200 OK"), answer[:300]
    return json.loads(body)


def _ten(i: int) -> str:
    return f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"


FORWARDED_FOR_CASES = [  # (X-Forwarded-For as the trusted proxy at 127.0.0.1 passes it, the client address chosen)
    ("203.0.113.9", "203.0.113.9"),
    ("  203.0.113.9  ", "203.0.113.9"),
    ("198.51.100.1, 203.0.113.9", "203.0.113.9"),  # the left one is the client's claim; the proxy added the right one
    ("198.51.100.1,203.0.113.9, 10.1.2.3", "203.0.113.9"),  # 10.1.2.3: a second trusted proxy, skipped
    ("10.1.2.3, 10.4.5.6", "10.1.2.3"),  # only trusted proxies: the farthest of them
    ("2001:db8::1", "2001:db8::1"),
    ("[2001:db8::2]:8443", "2001:db8::2"),
    ("198.51.100.1, 2001:DB8:0:0::3", "2001:db8::3"),
    ("203.0.113.7:51234", "203.0.113.7"),  # Azure Application Gateway adds the client's port
    ("203.0.113.7:http", "127.0.0.1"),
    ('"203.0.113.8"', "203.0.113.8"),
    ("garbage", "127.0.0.1"),  # not an address: the nearest one known, the proxy's own
    ("203.0.113.9, garbage", "127.0.0.1"),  # the proxy did not add 203.0.113.9: never chosen
    ("garbage, 203.0.113.9", "203.0.113.9"),
    ("203.0.113.9,", "127.0.0.1"),
    ("unknown", "127.0.0.1"),
    ("203.0.113.9 198.51.100.1", "127.0.0.1"),
    ("999.1.1.1", "127.0.0.1"),
    ("203.0.113.9/24", "127.0.0.1"),
    ("10.1.2.3, garbage", "127.0.0.1"),
    ("1.1.1.1%eth0, fe80::1%eth0", "fe80::1%eth0"),
    (",,,,", "127.0.0.1"),
    ("\u0661\u0662\u0663.1.1.1", "127.0.0.1"),  # Arabic-Indic digits: int() reads them, an address has none
    # 10,000 trusted proxies: read no further than MAX_FORWARDED_HOPS from the right; the farthest read is chosen
    (", ".join(_ten(i) for i in range(10_000)), _ten(10_000 - MAX_FORWARDED_HOPS)),
    (", ".join(f"198.51.{i // 256 % 256}.{i % 256}" for i in range(10_000)) + ", 203.0.113.9", "203.0.113.9"),
]


@pytest.mark.parametrize("forwarded_for, expected", FORWARDED_FOR_CASES,
                         ids=[c[0][:40] for c in FORWARDED_FOR_CASES])
def test_the_client_address_from_a_trusted_proxy(forwarded_for, expected):
    """Hostile and odd values never crash and never choose an address the trusted proxy did not add; every
    forwarded header is gone before the app runs."""
    with running(_echo_site(), threads=1, idle_timeout_s=30, trusted_proxies=["127.0.0.1", "10.0.0.0/8"]) as port:
        seen = _seen(port, {"X-Forwarded-For": forwarded_for, "X-Forwarded-Host": "evil.example",
                            "Forwarded": "for=192.0.2.1;proto=https"})
    assert seen == {"addr": expected, "scheme": "http", "forwarded": []}


def test_forwarded_for_given_twice_is_read_as_one_list():
    """A second header line (a proxy that adds its own instead of appending) is the right-most entry."""
    with running(_echo_site(), threads=1, idle_timeout_s=30, trusted_proxies=["127.0.0.1"]) as port:
        seen = _seen(port, [("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-For", "203.0.113.9")])
    assert seen["addr"] == "203.0.113.9"


@pytest.mark.parametrize("proto, scheme", [("https", "https"), ("HTTPS ", "https"), ("http", "http"),
                                           ("http, https", "https"), ("gopher", "http"), ("", "http"),
                                           ("https" * 1000, "http")])
def test_the_scheme_from_a_trusted_proxy(proto, scheme):
    with running(_echo_site(), threads=1, idle_timeout_s=30, trusted_proxies=["127.0.0.1"]) as port:
        seen = _seen(port, {"X-Forwarded-Proto": proto, "X-Forwarded-For": "203.0.113.9"})
    assert seen == {"addr": "203.0.113.9", "scheme": scheme, "forwarded": []}


def test_from_a_peer_not_trusted_the_headers_are_removed():
    """The setting names 10.0.0.0/8 only; this client (127.0.0.1) sends what a proxy would."""
    with running(_echo_site(), threads=1, idle_timeout_s=30, trusted_proxies=["10.0.0.0/8"]) as port:
        seen = _seen(port, {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https",
                            "Forwarded": "for=203.0.113.9", "X-Forwarded-Host": "evil.example"})
    assert seen == {"addr": "127.0.0.1", "scheme": "http", "forwarded": []}


@pytest.mark.parametrize("peer, forwarded_for, expected", [
    ("::ffff:127.0.0.1", "203.0.113.9", "203.0.113.9"),  # an IPv4 proxy on a dual-stack socket matches 127.0.0.1
    ("::1", "203.0.113.9", "203.0.113.9"),  # an IPv6 proxy
    ("::2", "203.0.113.9", "::2"),  # not trusted
    ("::1", "::ffff:10.1.2.3, ::ffff:203.0.113.9", "203.0.113.9"),
    ("::1", "203.0.113.9, ::ffff:10.1.2.3", "203.0.113.9"),  # a mapped trusted hop is skipped like 10.1.2.3
])
def test_ipv6_and_mapped_peers_and_hops(peer, forwarded_for, expected):
    """waitress binds IPv6 sockets V6ONLY, so it never hands a mapped peer; a server or a proxy that does is read
    the same."""
    from dashboards.forwarded import from_trusted_proxies, parse_networks

    seen = {}
    app = from_trusted_proxies(lambda environ, start: seen.update(addr=environ["REMOTE_ADDR"]) or [],
                               parse_networks(["127.0.0.1", "::1", "10.0.0.0/8"]))
    app({"REMOTE_ADDR": peer, "HTTP_X_FORWARDED_FOR": forwarded_for}, None)
    assert seen == {"addr": expected}


@pytest.mark.parametrize("proto, secure", [("https", True), ("http", False), (None, False)])
def test_the_session_cookie_is_secure_when_the_proxy_says_https(tmp_path, proto, secure):
    """The real dashboard app on the real server, TOKENMETER_DASHBOARD_SECURE_COOKIES unset: a sign-in that reached
    the proxy over HTTPS gets a Secure cookie (a browser then never sends it over plain HTTP); over HTTP, as before."""
    from dashboards import create_app
    from tokenmeter.settings import load_settings

    users_file = tmp_path / "users.yaml"
    add_user(users_file, "al", "al-pass", "team:alpha")
    settings = load_settings(data_dir=tmp_path, dashboard_users_file=users_file, dashboard_secret_key="k" * 32)
    assert settings.dashboard_secure_cookies is False
    app = create_app(settings)
    headers = {"X-Forwarded-For": CLIENT_A} | ({"X-Forwarded-Proto": proto} if proto else {})
    with running(app.server, threads=2, idle_timeout_s=30, trusted_proxies=["127.0.0.1"]) as port:
        answer = httpx.post(f"http://127.0.0.1:{port}/login", data={"username": "al", "password": "al-pass"},
                            headers=headers, timeout=30)
    assert answer.status_code == 302
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and ("Secure" in cookie) is secure, cookie
