"""The one store of notify-route secrets: Slack webhook URLs, PagerDuty routing keys, webhook URLs (their
tokens). Everything else (the budgets topic, the worker API, alert records, the warehouse, the dashboard, the
CLI, logs) carries a *reference* that shows only the masked target:

    slack=https://hooks.slack.com/services/***#secret=r-3f9a0c21d4e5b6a7

The store is `<data_dir>/route-secrets.json`, mode 0600 (its directory is created 0700), written atomically
under an exclusive lock; `{"routes": {"r-<16 hex>": "<kind>=<target>"}}`. The same kind=target keeps one
reference. Only the alert dispatcher reads a target back (`RouteSecrets.resolve`) to deliver.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from .routes import REF_MARK, ROUTE_KINDS, mask_notify, mask_target, split_reference

log = logging.getLogger("tokenmeter.alerts")

STORE_FILE = "route-secrets.json"


class RouteSecretError(ValueError):
    """A reference whose secret is not in the store (or an unreadable store); the message says what to do."""


def store_path(data_dir: Path | str) -> Path:
    return Path(data_dir).resolve() / STORE_FILE


def is_reference(entry: str) -> bool:
    return split_reference(entry) is not None


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, readable by the owner only (0600 from the first byte)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an old tmp file may have had another mode
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class RouteSecrets:
    """Read and add route secrets of one data dir. Reads re-load the file when it changed on disk, so a
    long-running dispatcher sees routes added by `tokenmeter budget set` at once."""

    def __init__(self, data_dir: Path | str):
        self.path = store_path(data_dir)
        self._routes: dict[str, str] = {}
        self._stamp: tuple[int, int] | None = None

    def _read(self) -> dict[str, str]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._routes, self._stamp = {}, None
            return self._routes
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            try:
                data = json.loads(self.path.read_text())
                routes = data.get("routes") if isinstance(data, dict) else None
                if not isinstance(routes, dict):
                    raise ValueError("expected {\"routes\": {...}}")
            except (OSError, ValueError) as exc:
                raise RouteSecretError(f"cannot read the route secrets {self.path}: {exc}") from None
            if stat.st_mode & 0o077:
                log.warning("%s is readable by other users (mode %o); tightening it to 0600", self.path,
                            stat.st_mode & 0o777)
                try:
                    os.chmod(self.path, 0o600)
                except OSError:
                    pass
            self._routes, self._stamp = {str(k): str(v) for k, v in routes.items()}, stamp
        return self._routes

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = os.open(self.path.with_name(f".{STORE_FILE}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
        finally:
            os.close(lock)

    def protect(self, notify: Iterable[str]) -> tuple[str, ...]:
        """The notify list with every plain `kind=target` stored here and replaced by its reference.
        Reference entries pass through; entries that are not routes at all are left for validation to report."""
        notify = [str(entry) for entry in notify]
        plain = [e for e in notify if not is_reference(e) and e.partition("=")[0].strip().lower() in ROUTE_KINDS
                 and e.partition("=")[2].strip()]
        if not plain:
            return tuple(notify)
        with self._locked():
            routes = dict(self._read())
            by_value = {value: ref for ref, value in routes.items()}
            out = []
            for entry in notify:
                if entry not in plain:
                    out.append(entry)
                    continue
                kind, _, target = entry.partition("=")
                kind, target = kind.strip().lower(), target.strip()
                value = f"{kind}={target}"
                ref = by_value.get(value)
                if ref is None:
                    ref = by_value[value] = "r-" + secrets.token_hex(8)
                    routes[ref] = value
                out.append(f"{kind}={mask_target(kind, target)}{REF_MARK}{ref}")
            if routes != self._routes:
                write_private(self.path, json.dumps({"routes": routes}, indent=1, sort_keys=True))
                self._stamp = None
            return tuple(out)

    def resolve(self, entry: str) -> str:
        """The real `kind=target` of a notify entry (a plain entry is returned as it is)."""
        parts = split_reference(entry)
        if parts is None:
            return str(entry)
        kind, _, ref = parts
        value = self._read().get(ref)
        if value is None or value.partition("=")[0] != kind:
            raise RouteSecretError(f"{kind} route secret {ref} is not in {self.path}: re-apply the budget "
                                   "(`tokenmeter budget set/apply`) on a host sharing this data directory")
        return value


def mask_entry(entry: str) -> str:
    """How a notify entry may be shown: a reference as it is (it holds no secret), a plain entry masked."""
    return mask_notify([entry])[0]
