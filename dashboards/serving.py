"""The dashboard's HTTP server: waitress (a production WSGI server, pure Python), one process with a pool of threads.

One process because sessions and sign-in lock-outs live in it (dashboards/auth_state.py). waitress reads requests
and writes answers on one I/O thread and hands only complete requests to the pool, so a connection that sends
nothing, or half a request head, holds no thread (Flask's development server held one per connection until its
socket timeout); such a connection is closed after IDLE_TIMEOUT_S and counted for /metrics.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl, quote, urlencode

from dashboards import metrics
from dashboards.forwarded import from_trusted_proxies, parse_networks
from tokenmeter.redaction import is_credential_name

log = logging.getLogger(__name__)
access_log = logging.getLogger("dashboards.access")

# Seconds a connection may sit without sending (its request head, or the next request on a kept-alive one) before
# the server closes it (hostile24: 300 silent sockets held 300 threads of Flask's server, none closed). waitress
# checks every CHECK_EVERY_S, so a close comes between IDLE_TIMEOUT_S and IDLE_TIMEOUT_S + CHECK_EVERY_S.
IDLE_TIMEOUT_S = 30
CHECK_EVERY_S = 2
# Open connections at most; past it waitress accepts no more until one closes (the kernel's backlog holds them). Each
# costs a socket and a buffer, no thread: room for hostile24's 300 silent sockets beside the real users. poll(), not
# select(): select fails on any descriptor numbered 1024 or more, which chDB and Kafka clients can push it past.
CONNECTION_LIMIT = 1000
# Requests running at SIGTERM get this long to finish and have their answers sent before the process exits.
STOP_GRACE_S = 5
LOOP_WAIT_S = 0.5  # the I/O loop's longest wait: a stop signal is acted on within this (one wake-up when idle)
MAX_LOGGED_TARGET = 500  # characters of path and query in an access line
# Answered at DEBUG when they succeed: `tokenmeter up` probes /healthz every 5 s, Prometheus scrapes /metrics (720 and
# more lines an hour that tell nothing); a failing probe is logged at INFO as every other request.
PROBE_PATHS = frozenset({"/healthz", "/metrics"})


def idle_connections_closed() -> int:
    """Connections this process closed for sitting silent past IDLE_TIMEOUT_S (since it started)."""
    return metrics.total("idle_closes")


def _count_idle_close() -> int:
    return metrics.count("idle_closes")


def make_server(wsgi_app: Callable, host: str, port: int, threads: int, idle_timeout_s: float | None = None,
                trusted_proxies: Iterable[str] = ()) -> Any:
    """A waitress server bound to host:port (not yet serving: `serve` or `.run()`), each request access-logged.
    `trusted_proxies` (addresses or CIDR networks, TOKENMETER_DASHBOARD_TRUSTED_PROXIES): from these peers the client
    address and scheme come from X-Forwarded-For and -Proto (dashboards/forwarded.py); none: the TCP peer's."""
    from waitress.adjustments import Adjustments
    from waitress.server import MultiSocketServer, TcpWSGIServer
    from waitress.task import ThreadedTaskDispatcher

    networks = parse_networks(trusted_proxies)

    class IdleCountingServer(TcpWSGIServer):
        def add_task(self, channel: Any) -> None:
            """A probe (PROBE_PATHS) to its own thread: in the pool it waited behind pages whose callbacks wait on
            the warehouse (one query at a time), and `tokenmeter up` restarts a dashboard whose /healthz goes
            unanswered for 30 s, so a busy dashboard was restarted and everyone signed out. A pipelined request
            after it is handed back here by waitress when the probe is answered."""
            request = channel.requests[0]
            if request.path in PROBE_PATHS and request.command in ("GET", "HEAD") and not request.error:
                probes.add_task(channel)
            else:
                super().add_task(channel)

        def maintenance(self, now: float) -> None:
            """waitress's: marks each channel silent past channel_timeout (and not serving a request) for closing.
            Counted here because waitress closes them without a word."""
            cutoff = now - self.adj.channel_timeout
            idle = [c for c in list(self.active_channels.values())
                    if not c.requests and c.last_activity < cutoff and not c.will_close]
            super().maintenance(now)
            for channel in idle:
                total = _count_idle_close()
                log.debug("closed an idle connection from %s after %d s (%d so far)", channel.addr[0],
                          self.adj.channel_timeout, total)

    adj = Adjustments(
        host=host, port=port, threads=threads,
        channel_timeout=max(1, round(IDLE_TIMEOUT_S if idle_timeout_s is None else idle_timeout_s)),
        cleanup_interval=CHECK_EVERY_S, connection_limit=CONNECTION_LIMIT, asyncore_use_poll=True,
        ident="tokenmeter",  # the Server header: no server name and version for a scanner
        # No trusted proxy: waitress removes X-Forwarded-* and Forwarded (the client IP is the TCP peer). With some,
        # from_trusted_proxies reads them from those peers and removes them from every request itself.
        clear_untrusted_proxy_headers=not networks,
    )
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    probes = ThreadedTaskDispatcher()  # /healthz and /metrics: answered in microseconds, never queued behind pages
    probes.set_thread_count(1)
    socket_map: dict = {}
    app = with_access_log(wsgi_app)
    if networks:  # outside the access log: its line names the client, not the proxy
        app = from_trusted_proxies(app, networks)
    servers = [IdleCountingServer(app, socket_map, dispatcher=dispatcher, adj=adj, sockinfo=info)
               for info in adj.listen]  # a host name may stand for more than one address
    server = servers[0] if len(servers) == 1 else MultiSocketServer(socket_map, adj, servers, dispatcher)
    server.probe_dispatcher = probes  # stopped with the pool (`stop`)
    return server


def serve(server: Any) -> None:
    """Serve until SIGINT or SIGTERM (compose's and `tokenmeter up`'s stop; before, SIGTERM killed the process where it
    stood, its cleanup never ran); then `drain`, then `stop`. waitress's own `run()` stops its threads at Ctrl-C
    while answers they wrote still wait for its loop to send them: those were lost."""
    stopping: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: stopping.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        serve_until(server, lambda: stopping, lambda: signal.Signals(stopping[0]).name)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve_until(server: Any, stop_requested: Callable[[], Any], reason: Callable[[], str] = lambda: "request",
                wait_s: float = LOOP_WAIT_S) -> None:
    """Turn the server's I/O loop in this thread until `stop_requested()` is true (looked at every `wait_s` at
    most), then `drain` and `stop`. Another thread asks for a stop only through `stop_requested`, never through
    waitress's trigger: a thunk pulled onto the trigger may run (and close the trigger) before the pulling thread's
    write reaches it, which then fails with EBADF, or writes into whatever reused that descriptor."""
    from waitress import wasyncore

    socket_map = _socket_map(server)
    try:
        while not stop_requested() and socket_map:
            wasyncore.loop(timeout=wait_s, map=socket_map, use_poll=True, count=1)
        if stop_requested():
            log.info("stopping on %s: no new connections, %d s for the requests running", reason(), STOP_GRACE_S)
            drain(socket_map, STOP_GRACE_S)
    finally:
        stop(server)


def drain(socket_map: dict, grace_s: float) -> None:
    """Close the listening sockets (a new connection is refused, not left in the backlog), then keep the loop turning
    until no connection has a request running or an answer unsent, at most `grace_s`. A connection still sending its
    request is not waited for."""
    from waitress import wasyncore
    from waitress.channel import HTTPChannel
    from waitress.server import BaseWSGIServer

    for listener in [d for d in socket_map.values() if isinstance(d, BaseWSGIServer)]:
        wasyncore.dispatcher.close(listener)  # its socket only: BaseWSGIServer.close also closes the shared trigger
    deadline = time.monotonic() + grace_s

    def busy() -> bool:
        return any(c.requests or c.total_outbufs_len for c in list(socket_map.values()) if isinstance(c, HTTPChannel))

    while busy() and time.monotonic() < deadline:
        wasyncore.loop(timeout=0.05, map=socket_map, use_poll=True, count=1)


def stop(server: Any) -> None:
    """Stop `server` (from the thread that ran it, after its loop ended): its threads given STOP_GRACE_S, then every
    socket closed."""
    from waitress import wasyncore

    server.task_dispatcher.shutdown(timeout=STOP_GRACE_S)
    server.probe_dispatcher.shutdown(timeout=1)
    wasyncore.close_all(_socket_map(server))


def _socket_map(server: Any) -> dict:
    return server.map if hasattr(server, "map") else server._map  # noqa: SLF001 - MultiSocketServer / TcpWSGIServer


def with_access_log(wsgi_app: Callable) -> Callable:
    """One INFO line per request on `dashboards.access`, once its answer is sent: client, method, path and query,
    status, bytes, milliseconds (DEBUG for a successful probe or scrape: PROBE_PATHS). No header or cookie is logged; a query value whose name is a credential's (`token`,
    `api_key`, `password`, ... tokenmeter/redaction.py) reads `***`; control characters are escaped."""

    def logged(environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        answer: dict[str, Any] = {}

        def recording_start_response(status: str, headers: list, exc_info: Any = None) -> Callable:
            answer["status"] = status.split(" ", 1)[0]
            answer["length"] = next((v for k, v in headers if k.lower() == "content-length"), "-")
            return start_response(status, headers, exc_info)

        def write_line() -> None:
            status = answer.get("status", "-")
            quiet = status.startswith("2") and environ.get("PATH_INFO") in PROBE_PATHS
            access_log.log(logging.DEBUG if quiet else logging.INFO, '%s "%s %s %s" %s %s %.0fms',
                           environ.get("REMOTE_ADDR", "-"),
                           _printable(environ.get("REQUEST_METHOD", "-"))[:20], logged_target(environ),
                           _printable(environ.get("SERVER_PROTOCOL", "-"))[:20], status, answer.get("length", "-"),
                           (time.perf_counter() - started) * 1000)

        try:
            body = wsgi_app(environ, recording_start_response)
        except BaseException:  # waitress logs the error; the access line still records the request
            answer.setdefault("status", "500")
            write_line()
            raise
        if type(body) is environ.get("wsgi.file_wrapper"):  # a file waitress sends itself: kept as it is
            write_line()
            return body
        return _Closing(body, write_line)

    return logged


def logged_target(environ: dict) -> str:
    path = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), safe="/:@!$&'()*+,;=-._~")
    query = environ.get("QUERY_STRING", "")
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        path += "?" + urlencode([(k, "***" if is_credential_name(k) else v) for k, v in pairs], safe="*,:")
    return path if len(path) <= MAX_LOGGED_TARGET else path[:MAX_LOGGED_TARGET] + "…"


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class _Closing:
    """The answer's iterable, with `on_close` called once after the server closed it (the answer was sent)."""

    def __init__(self, body: Iterable[bytes], on_close: Callable[[], None]):
        self._body = body
        self._on_close = on_close

    def __iter__(self):
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close()
