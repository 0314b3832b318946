"""Three ways to run the same SQL: embedded chDB, a ClickHouse server, or the chDB owner over HTTP.

Each backend offers `query_arrow(sql, params) -> pyarrow.Table`, `command(sql, params)`,
`insert_arrow(table_name, arrow_table)` and `close()`. Parameters are always bound server-side with
ClickHouse's `{name:Type}` syntax; nothing from a caller is ever formatted into SQL text.
"""

from __future__ import annotations

import logging
import re
import threading
from datetime import date, datetime, timezone
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Protocol

import pyarrow as pa

from tokenmeter.redaction import redact_url

if TYPE_CHECKING:
    import ssl


MAX_BODY_BYTES = 1 << 20  # largest request the owner's endpoint accepts


class WarehouseError(RuntimeError):
    """A warehouse operation failed; the message says what to do."""


class WarehouseLocked(WarehouseError):
    """Another live process owns the embedded warehouse path."""


class Backend(Protocol):
    kind: str
    writable: bool

    def query_arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table: ...

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None: ...

    def insert_arrow(self, table_name: str, table: pa.Table, settings: dict[str, int] | None = None) -> None: ...

    def close(self) -> None: ...


def param_text(value: Any) -> Any:
    """Python value -> the text ClickHouse parses for a `{name:Type}` parameter (times in UTC, ms)."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        # isoformat, not strftime: "%Y" writes year 1 as "1", which ClickHouse refused (a 500 on the dashboard API)
        return value.isoformat(" ", "milliseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "1" if value else "0"
    return value


def normalize_params(params: dict[str, Any] | None) -> dict[str, Any]:
    return {k: param_text(v) for k, v in (params or {}).items()}


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise WarehouseError(f"invalid table name {name!r}")
    return name


# chDB ------------------------------------------------------------------------------------------------

# chDB's params are read in ClickHouse's escaped text format without escaping: do it here, so a value
# with a backslash or tab arrives unchanged (clickhouse-connect does the same for the server backend).
_CHDB_ESCAPES = str.maketrans(
    {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0", "\b": "\\b", "\f": "\\f", "'": "\\'"}
)
_LOCKED_MARKERS = ("Cannot lock file", "Another server instance", "Error initializing EmbeddedServer")


def _chdb_params(params: dict[str, Any] | None) -> dict[str, str]:
    return {k: str(v).translate(_CHDB_ESCAPES) for k, v in normalize_params(params).items()}


# Statements that may add dedupe keys: an INSERT into priced_events (its view writes priced_event_ids) or into
# priced_event_ids itself. Each backend counts them (`key_writes`), so the loader's in-process filter of the keys
# (warehouse/stored_ids.py) knows when a write it did not make may have added one, and is built again.
_KEY_WRITE = re.compile(r"\s*INSERT\s+INTO\s+`?priced_event(s|_ids)`?[\s(]", re.IGNORECASE)
KEY_TABLES = ("priced_events", "priced_event_ids")


def writes_keys(sql: str) -> bool:
    return _KEY_WRITE.match(sql) is not None


def _settings_clause(settings: dict[str, int] | None) -> str:
    """` SETTINGS name=value, ...` of an INSERT's query-level settings (integers only: they go into the SQL text)."""
    if not settings:
        return ""
    return " SETTINGS " + ", ".join(f"{check_identifier(name)}={int(value)}" for name, value in settings.items())


class ChdbBackend:
    """Embedded ClickHouse at a directory. chDB allows one open path per process and one process per path:
    open it through `warehouse.open_warehouse`, which shares one instance per process."""

    kind = "chdb"
    writable = True

    def __init__(self, path: Path | str):
        from chdb import session  # imported lazily: ~1 s, and readers over HTTP never need it

        self.path = Path(path).resolve()
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # one chDB session, used by the loader and the endpoint's threads
        self.insert_lock = self._lock  # the staging-table sequence of Warehouse.insert_rows runs under it too
        self.key_writes = 0  # statements that may have added dedupe keys (warehouse/stored_ids.py)
        self.stored_id_filter: Any = None
        try:
            self._session = session.Session(str(self.path))
        except Exception as exc:
            text = str(exc)
            if any(marker in text for marker in _LOCKED_MARKERS):
                raise WarehouseLocked(f"warehouse {self.path} is open in another process ({text.strip()})") from None
            raise WarehouseError(f"cannot open chDB at {self.path}: {text}") from None

    def query_arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        with self._lock:
            try:
                result = self._session.query(sql, "ArrowStream", params=_chdb_params(params))
            except Exception as exc:
                raise WarehouseError(f"query failed: {exc}") from None
            data = result.bytes()
        return pa.ipc.open_stream(pa.py_buffer(data)).read_all()

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        with self._lock:
            if writes_keys(sql):
                self.key_writes += 1
            try:
                self._session.query(sql, "CSV", params=_chdb_params(params))
            except Exception as exc:
                raise WarehouseError(f"statement failed: {exc}") from None

    def insert_arrow(self, table_name: str, table: pa.Table, settings: dict[str, int] | None = None) -> None:
        columns = ", ".join(f"`{check_identifier(name)}`" for name in table.column_names)
        arrow_rows = table  # chDB's Python() table function finds the Arrow table by this variable name
        sql = (f"INSERT INTO {check_identifier(table_name)} ({columns}) SELECT {columns} FROM Python(arrow_rows)"
               + _settings_clause(settings))
        with self._lock:
            if table_name in KEY_TABLES:
                self.key_writes += 1
            try:
                self._session.query(sql)
            except Exception as exc:
                raise WarehouseError(f"insert into {table_name} failed: {exc}") from None
        del arrow_rows

    def scan_arrow(self, sql: str) -> Iterator[pa.Table]:
        """A query's result in Arrow chunks as chDB streams them (a scan too large to hold as one table)."""
        with self._lock:
            try:
                for chunk in self._session.send_query(sql, "ArrowStream"):
                    yield pa.ipc.open_stream(pa.py_buffer(chunk.bytes())).read_all()
            except Exception as exc:
                raise WarehouseError(f"query failed: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._session.close()


# ClickHouse server -------------------------------------------------------------------------------------


class ClickHouseBackend:
    """A ClickHouse server through clickhouse-connect (HTTP). Same SQL as chDB; kept thin on purpose."""

    kind = "clickhouse"
    writable = True

    def __init__(self, url: str, connect_timeout: float = 10.0):
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import ClickHouseError

        # ops34: the driver logs a bare WARNING "Unexpected Http Driver Exception" before raising the error that
        # carries the cause, which we report (URL password masked); on its own it only preceded every such error.
        logging.getLogger("clickhouse_connect.driver._backend.http_sync").setLevel(logging.ERROR)
        self.url = url
        self._lock = threading.Lock()  # one HTTP session id: clickhouse-connect refuses concurrent queries on it
        self.key_writes = 0  # statements that may have added dedupe keys (warehouse/stored_ids.py)
        self.stored_id_filter: Any = None
        try:
            self._client = clickhouse_connect.get_client(dsn=url, connect_timeout=connect_timeout)
        except ClickHouseError as exc:
            raise WarehouseError(
                f"cannot connect to ClickHouse at {redact_url(url)} (TOKENMETER_CLICKHOUSE_URL): {exc}"
            ) from None

    def query_arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        with self._lock:
            try:
                return self._client.query_arrow(sql, parameters=normalize_params(params))
            except Exception as exc:
                raise WarehouseError(f"query failed: {exc}") from None

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        with self._lock:
            if writes_keys(sql):
                self.key_writes += 1
            try:
                self._client.command(sql, parameters=normalize_params(params) or None)
            except Exception as exc:
                raise WarehouseError(f"statement failed: {exc}") from None

    def insert_arrow(self, table_name: str, table: pa.Table, settings: dict[str, int] | None = None) -> None:
        with self._lock:
            if table_name in KEY_TABLES:
                self.key_writes += 1
            try:
                self._client.insert_arrow(check_identifier(table_name), table, settings=settings)
            except Exception as exc:
                raise WarehouseError(f"insert into {table_name} failed: {exc}") from None

    def scan_arrow(self, sql: str) -> Iterator[pa.Table]:
        """A query's result in Arrow blocks as the server streams them (a scan too large to hold as one table)."""
        with self._lock:
            try:
                with self._client.query_arrow_stream(sql) as blocks:
                    for block in blocks:
                        yield pa.Table.from_batches([block]) if isinstance(block, pa.RecordBatch) else block
            except Exception as exc:
                raise WarehouseError(f"query failed: {exc}") from None

    def close(self) -> None:
        self._client.close()


# The owner's HTTP endpoint ------------------------------------------------------------------------------


@cache
def tls_context() -> ssl.SSLContext:
    """The verified SSL context httpx would build for a Client by default (certifi, or SSL_CERT_FILE / SSL_CERT_DIR),
    built once per process and shared: httpx builds one per Client, loading the CA bundle each time (~45 CPU-ms here),
    and a backend is made per poll of `live_team_totals` and per `live_reader` (suite34). A context may be shared
    by clients; https is verified as before."""
    import httpx

    return httpx.create_ssl_context()


class RemoteBackend:
    """Read-only client of the process that owns the chDB path (see warehouse.endpoint)."""

    kind = "remote"
    writable = False

    def __init__(self, url: str, timeout: float = 60.0, secret: str | None = None):
        import httpx

        self.url = url.rstrip("/")
        # The owner's secret (warehouse.endpoint.secret, 0600): without it every request gets 401.
        headers = {"authorization": f"Bearer {secret}"} if secret else {}
        self._client = httpx.Client(timeout=timeout, headers=headers, verify=tls_context())

    def _post(self, path: str, payload: dict[str, Any], what: str) -> Any:
        import httpx
        import orjson

        try:
            response = self._client.post(
                f"{self.url}{path}", content=orjson.dumps(payload), headers={"content-type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise WarehouseError(f"warehouse owner at {self.url} did not answer: {exc}") from None
        if response.status_code != 200:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise WarehouseError(f"warehouse owner refused the {what} ({response.status_code}): {message}")
        return response

    def query_arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        response = self._post("/query", {"sql": sql, "params": normalize_params(params)}, "query")
        return pa.ipc.open_stream(pa.py_buffer(response.content)).read_all()

    def apply_repriced_events(self, events: list[dict[str, Any]]) -> int:
        """Ask the owner to re-price these stored events (POST /reprice). Only their keys (event_id, ts) are
        sent: the owner prices them with its own catalog and replaces those that changed, under its insert lock;
        it never takes a cost from us. Split in halves until each request fits the endpoint's body limit."""
        import orjson

        keys = [{"event_id": str(e["event_id"]), "ts": str(e["ts"])} for e in events]
        if len(keys) > 1 and len(orjson.dumps({"events": keys})) > MAX_BODY_BYTES:
            half = len(events) // 2
            return self.apply_repriced_events(events[:half]) + self.apply_repriced_events(events[half:])
        return int(self._post("/reprice", {"events": keys}, "re-priced events").json()["applied"])

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        raise WarehouseError("the warehouse is owned by another process: this reader cannot change it")

    def insert_arrow(self, table_name: str, table: pa.Table, settings: dict[str, int] | None = None) -> None:
        raise WarehouseError("the warehouse is owned by another process (the loader): inserts go through it")

    def close(self) -> None:
        self._client.close()
