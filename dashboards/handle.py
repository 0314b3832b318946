"""One warehouse handle per app, opened on first use and shared by every request thread.

chDB sessions are not documented as thread-safe, and the Flask server runs callbacks on several threads,
so every query goes through one lock. Queries here are small aggregates, so serialising them is cheap.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

import flask

CONFIG_KEY = "TOKENMETER_WAREHOUSE_HANDLE"
SETTINGS_KEY = "TOKENMETER_SETTINGS"


class WarehouseUnavailable(RuntimeError):
    """The warehouse could not be opened; the dashboard shows the reason instead of a traceback."""


class WarehouseHandle:
    def __init__(self, settings: Any, warehouse: Any = None):
        self._settings = settings
        self._warehouse = warehouse
        self._owned = warehouse is None  # close only what we opened
        self._lock = threading.RLock()

    @contextmanager
    def use(self) -> Iterator[Any]:
        with self._lock:
            if self._warehouse is None:
                try:
                    from warehouse import open_warehouse  # imported late: chDB costs ~1 s to import

                    self._warehouse = open_warehouse(self._settings, writer=False)
                except Exception as exc:  # noqa: BLE001 - any failure becomes a readable banner
                    raise WarehouseUnavailable(f"cannot open the warehouse: {exc}") from exc
            yield self._warehouse

    def close(self) -> None:
        with self._lock:
            if self._warehouse is not None and self._owned:
                self._warehouse.close()
            self._warehouse = None


def current_handle() -> WarehouseHandle:
    """The handle of the app serving this request (callbacks run inside a Flask request)."""
    return flask.current_app.config[CONFIG_KEY]


def current_settings() -> Any:
    """The Settings the app was built with (bootstrap servers for acks, data dir)."""
    return flask.current_app.config[SETTINGS_KEY]
