"""The owner's query endpoint: chDB lets one process open a path, so that process serves reads to the others.

The owner (the loader, or whoever opened the path directly) runs a small HTTP server on 127.0.0.1 in a
daemon thread and writes `<data_dir>/warehouse.endpoint` = {"url", "pid"} and, next to it,
`<data_dir>/warehouse.endpoint.secret` (a fresh random token per owner start); both files are mode 0600, so
only the data dir's owner can use the endpoint. Every request must carry `Authorization: Bearer <secret>`
(401 otherwise). The documented operations, and nothing else:

- GET /health -> {"pid", "path"}.
- POST /query {"sql", "params"} -> an Arrow IPC stream. This is the owner's own read path (the dashboard and
  the CLI of the same user): one SELECT statement, run with readonly=1, so even a crafted SELECT cannot change
  anything. A holder of the secret can read the data dir's files anyway; team scoping is applied above this
  (dashboard users never reach the endpoint themselves).
- POST /reprice {"events": [{"event_id", "ts"}, ...]} -> {"applied": n}. The caller only NAMES stored events;
  the owner prices them again itself, with the current catalog of its own settings (never a cost, a price or
  a priced event from the caller), and replaces those whose pricing changed, under the owner's insert lock.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import orjson
import pyarrow as pa

from warehouse.backends import MAX_BODY_BYTES, Backend, WarehouseError

log = logging.getLogger(__name__)

ENDPOINT_FILE = "warehouse.endpoint"
SECRET_SUFFIX = ".secret"
REPRICE_KEYS = {"event_id", "ts"}
STOP_POLL_SECONDS = 0.05  # how often the serving thread looks for a stop request (an idle wake-up costs microseconds)
_READ_ONLY_START = re.compile(r"^\s*(SELECT|WITH)\b", re.IGNORECASE)
_TRAILING = re.compile(r"[\s;]+$")


def check_select_only(sql: str) -> str:
    """Accept one SELECT (or WITH ... SELECT) statement; returns it with readonly=1 enforced by ClickHouse."""
    text = _TRAILING.sub("", sql)
    if not _READ_ONLY_START.match(text):
        raise WarehouseError("only SELECT statements are allowed on the warehouse endpoint")
    if ";" in text:  # ';' inside a string literal is rejected too: our query layer never needs it
        raise WarehouseError("only one statement per request is allowed on the warehouse endpoint")
    if re.search(r"\bSETTINGS\b", text, re.IGNORECASE) or re.search(r"\bFORMAT\b", text, re.IGNORECASE):
        raise WarehouseError("SETTINGS and FORMAT clauses are not allowed on the warehouse endpoint")
    return f"{text}\nSETTINGS readonly = 1"


def endpoint_path(data_dir: Path) -> Path:
    return Path(data_dir).resolve() / ENDPOINT_FILE


def secret_path(data_dir: Path) -> Path:
    return endpoint_path(data_dir).with_name(ENDPOINT_FILE + SECRET_SUFFIX)


def read_endpoint_secret(data_dir: Path) -> str | None:
    """The live owner's secret (None if the file is missing or unreadable: e.g. another user's data dir)."""
    try:
        return secret_path(data_dir).read_text().strip() or None
    except OSError:
        return None


def _write_private(path: Path, data: bytes) -> None:
    """Atomic write, mode 0600 from the first byte (a reader never sees half a file, nor a readable one)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)
    temporary.replace(path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_live_endpoint(data_dir: Path) -> str | None:
    """URL of a live owner of this data dir, or None (no file, unreadable, dead pid, or our own pid)."""
    path = endpoint_path(data_dir)
    try:
        info = orjson.loads(path.read_bytes())
        url, pid = str(info["url"]), int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid == os.getpid() or not pid_alive(pid):
        return None  # stale: written by a process that is gone (or by an earlier life of this pid)
    return url


class _Handler(BaseHTTPRequestHandler):
    server: "_EndpointHTTPServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("endpoint: " + format, *args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, orjson.dumps({"error": message}), "application/json")

    def _authorized(self) -> bool:
        header = self.headers.get("authorization", "")
        given = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if given and hmac.compare_digest(given.encode(), self.server.secret.encode()):
            return True
        self.close_connection = True  # the body (if any) was not read
        self._send(401, orjson.dumps({"error": "send 'Authorization: Bearer <secret>' (the secret is in the file "
                                               f"{ENDPOINT_FILE}{SECRET_SUFFIX} of the data directory)"}),
                   "application/json")
        return False

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if not self._authorized():
            return
        if self.path == "/health":
            self._send(200, orjson.dumps({"pid": os.getpid(), "path": self.server.label}), "application/json")
        else:
            self._error(404, "not found: use POST /query or GET /health")

    def _read_body(self) -> bytes | None:
        try:
            length = int(self.headers.get("content-length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self._error(400, f"body must have a content-length of at most {MAX_BODY_BYTES} bytes")
            return None
        return self.rfile.read(length)

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if not self._authorized():
            return
        if self.path == "/reprice":
            self._reprice()
            return
        if self.path != "/query":
            self._error(404, "not found: use POST /query or POST /reprice")
            return
        body = self._read_body()
        if body is None:
            return
        try:
            request = orjson.loads(body)
            sql, params = request["sql"], request.get("params") or {}
            if not isinstance(sql, str) or not isinstance(params, dict):
                raise TypeError("sql must be a string and params an object")
        except (ValueError, KeyError, TypeError) as exc:
            self._error(400, f"expected JSON {{sql, params}}: {exc}")
            return
        try:
            table = self.server.backend.query_arrow(check_select_only(sql), params)
        except WarehouseError as exc:
            self._error(400, str(exc))
            return
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        self._send(200, sink.getvalue().to_pybytes(), "application/vnd.apache.arrow.stream")

    def _reprice(self) -> None:
        apply = self.server.apply_repriced
        if apply is None:
            self._error(404, "this warehouse owner does not accept re-priced events")
            return
        body = self._read_body()
        if body is None:
            return
        try:
            events = orjson.loads(body)["events"]
            if not isinstance(events, list):
                raise TypeError("events must be a list")
            for item in events:
                if not isinstance(item, dict) or set(item) != REPRICE_KEYS or not all(
                        isinstance(item[k], str) and item[k] for k in REPRICE_KEYS):
                    raise TypeError("each event is {event_id, ts} and nothing else: the owner prices stored events "
                                    "itself, costs and prices are never taken from a caller")
        except (ValueError, KeyError, TypeError) as exc:
            self._error(400, f"expected JSON {{events: [{{event_id, ts}}, ...]}}: {exc}")
            return
        try:
            applied = apply(events)
        except WarehouseError as exc:
            self._error(409, str(exc))
            return
        self._send(200, orjson.dumps({"applied": applied}), "application/json")


class _EndpointHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], backend: Backend, label: str,
                 apply_repriced: Callable[[list[Any]], int] | None = None):
        super().__init__(address, _Handler)
        self.backend = backend
        self.label = label
        self.apply_repriced = apply_repriced
        self.secret = secrets.token_urlsafe(32)


class QueryEndpoint:
    """Serve `backend` read-only on 127.0.0.1:<free port> and advertise it in the data dir (URL and secret files,
    both 0600). `apply_repriced(keys)` re-prices the named stored events with the owner's own catalog."""

    def __init__(self, backend: Backend, data_dir: Path, host: str = "127.0.0.1",
                 apply_repriced: Callable[[list[dict[str, str]]], int] | None = None):
        self._file = endpoint_path(data_dir)
        self._secret_file = secret_path(data_dir)
        self._server = _EndpointHTTPServer((host, 0), backend, str(getattr(backend, "path", "")), apply_repriced)
        port = self._server.server_address[1]
        self.url = f"http://{host}:{port}"
        # serve_forever checks for a stop request between select() timeouts: at its default 0.5 s every close of
        # the warehouse (each loader stop, each test's warehouse) waited up to half a second for the serving thread.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": STOP_POLL_SECONDS},
                                        name="warehouse-endpoint", daemon=True)

    def start(self) -> "QueryEndpoint":
        self._thread.start()
        self._file.parent.mkdir(parents=True, exist_ok=True)
        _write_private(self._secret_file, self._server.secret.encode())  # before the URL: readers need both
        _write_private(self._file, orjson.dumps({"url": self.url, "pid": os.getpid()}))
        log.info("warehouse query endpoint at %s (advertised in %s)", self.url, self._file)
        return self

    def stop(self) -> None:
        try:
            info = orjson.loads(self._file.read_bytes())
            if info.get("pid") == os.getpid():  # never remove a file a newer owner wrote
                self._file.unlink()
                self._secret_file.unlink(missing_ok=True)
        except (OSError, ValueError):
            pass
        self._server.shutdown()
        self._server.server_close()


def live_team_totals(data_dir: Path) -> dict[str, tuple[int, Any]] | None:
    """(events, cost as Decimal) per team, as `tokenmeter report --group-by team` gives them while a loader runs:
    asked of the loader, which owns the warehouse, over its HTTP endpoint, in-process (a `report` child per poll
    costs about a CPU-second of interpreter start-up). None while no loader serves: the caller never opens chDB
    itself, which would take the warehouse from a restarting loader."""
    from decimal import Decimal

    from warehouse.backends import RemoteBackend
    from warehouse.store import Warehouse

    url = read_live_endpoint(data_dir)
    if url is None:
        return None
    wh = Warehouse(RemoteBackend(url, timeout=30, secret=read_endpoint_secret(data_dir)))
    try:
        rows = wh.spend(["team"]).to_dicts()
    except Exception:  # noqa: BLE001 - the loader stopped or restarted mid-question: the caller asks again
        return None
    finally:
        wh.close()
    return {r["team"]: (r["events"], Decimal(str(r["cost_usd"]))) for r in rows}


def live_reader(settings: Any) -> Any:
    """A read handle on the warehouse for a process that must never own it (a worker): the ClickHouse server of
    `clickhouse_url`, or the chDB owner's endpoint (the loader's). None while no owner serves: opening chDB here
    would take the warehouse from the loader. The caller closes it."""
    from warehouse.backends import ClickHouseBackend, RemoteBackend
    from warehouse.store import Warehouse

    if getattr(settings, "clickhouse_url", None):
        return Warehouse(ClickHouseBackend(settings.clickhouse_url))
    data_dir = Path(settings.data_dir).resolve()
    url = read_live_endpoint(data_dir)
    return None if url is None else Warehouse(RemoteBackend(url, timeout=30, secret=read_endpoint_secret(data_dir)))
