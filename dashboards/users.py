"""Dashboard users: a YAML file of names, password hashes (werkzeug: scrypt) and roles.

    users:
      alice: {password_hash: "scrypt:...", role: finance}
      bob:   {password_hash: "scrypt:...", role: "team:search"}

Roles: `finance` sees everything; `team:<name>` sees only that team's numbers (enforced in the data layer,
see dashboards/access.py). Hashes and passwords never go to logs; only user names do.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from werkzeug.security import check_password_hash, generate_password_hash

log = logging.getLogger(__name__)

USERS_FILE_NAME = "dashboard-users.yaml"
DEMO_PASSWORD = "demo"
DEMO_TEAM = "search"  # one of the demo generator's teams


@functools.cache
def _dummy_hash() -> str:
    """A hash to compare against when the user does not exist, so a wrong name costs as long as a wrong password.
    Made when the dashboard's UserStore is created (before any login), not at import: a scrypt hash is ~0.1 CPU-s,
    which `tokenmeter up` and `tokenmeter users` paid for nothing."""
    return generate_password_hash(secrets.token_hex(8))


class UsersFileError(ValueError):
    """The users file is unreadable or malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class Principal:
    """Who is asking. `team` is None for finance (everything), else the only team they may see."""

    name: str
    role: str

    @property
    def team(self) -> str | None:
        return self.role.split(":", 1)[1] if self.role.startswith("team:") else None

    @property
    def is_finance(self) -> bool:
        return self.role == "finance"


def check_role(role: str) -> str:
    role = str(role).strip()
    if role == "finance" or (role.startswith("team:") and role[5:].strip()):
        return role
    raise UsersFileError(f"role must be 'finance' or 'team:<name>', got {role!r}")


def users_file_path(settings: Any) -> Path:
    return Path(settings.dashboard_users_file or (settings.data_dir.resolve() / USERS_FILE_NAME))


def read_users(path: Path) -> dict[str, dict[str, str]]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsersFileError(f"{path}: cannot read users file: {exc}") from exc
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict):
        raise UsersFileError(f"{path}: expected a mapping 'users: {{name: {{password_hash, role}}}}'")
    checked = {}
    for name, entry in users.items():
        if not isinstance(entry, dict) or not entry.get("password_hash") or not entry.get("role"):
            raise UsersFileError(f"{path}: user {name!r} needs password_hash and role")
        try:
            role = check_role(entry["role"])
        except UsersFileError as exc:
            raise UsersFileError(f"{path}: user {name!r}: {exc}") from None
        checked[str(name)] = {"password_hash": str(entry["password_hash"]), "role": role}
    return checked


def write_users(path: Path, users: dict[str, dict[str, str]], demo: bool = False) -> None:
    """Atomic write, readable by the owner only (the file holds password hashes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body: dict[str, Any] = {"users": users}
    if demo:
        body = {"demo": True, **body}
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(body, out, sort_keys=True)
    os.replace(tmp, path)


def add_user(path: Path, name: str, password: str, role: str) -> None:
    users = read_users(path) if path.exists() else {}
    users[name] = {"password_hash": generate_password_hash(password), "role": check_role(role)}
    demo = path.exists() and bool((yaml.safe_load(path.read_text()) or {}).get("demo"))
    write_users(path, users, demo=demo)


def is_demo_file(path: Path) -> bool:
    try:
        return bool((yaml.safe_load(path.read_text()) or {}).get("demo"))
    except (OSError, yaml.YAMLError):
        return False


def ensure_users_file(settings: Any, demo: bool) -> list[str]:
    """Make sure the dashboard has users; returns lines to print once (the only place a password is shown).

    demo: finance `finance`/`demo` and team user `search`/`demo` (re-printed on every demo start).
    otherwise, with no file: an `admin` finance user with a random password, printed once."""
    path = users_file_path(settings)
    if path.exists():
        if demo and is_demo_file(path):
            return [f"dashboard login: finance / {DEMO_PASSWORD} (all teams), "
                    f"{DEMO_TEAM} / {DEMO_PASSWORD} (team {DEMO_TEAM} only)"]
        return [f"dashboard users: {path}"]
    if settings.dashboard_users_file:
        raise UsersFileError(f"{path}: TOKENMETER_DASHBOARD_USERS_FILE names a file that does not exist")
    if demo:
        write_users(path, {
            "finance": {"password_hash": generate_password_hash(DEMO_PASSWORD), "role": "finance"},
            DEMO_TEAM: {"password_hash": generate_password_hash(DEMO_PASSWORD), "role": f"team:{DEMO_TEAM}"},
        }, demo=True)
        return [f"dashboard login: finance / {DEMO_PASSWORD} (all teams), "
                f"{DEMO_TEAM} / {DEMO_PASSWORD} (team {DEMO_TEAM} only)"]
    password = secrets.token_urlsafe(12)
    write_users(path, {"admin": {"password_hash": generate_password_hash(password), "role": "finance"}})
    return [f"dashboard login: admin / {password}  (generated once, hash in {path}; "
            "add users with `tokenmeter users add`)"]


class UserStore:
    """The users file, re-read when it changes, so `tokenmeter users add` applies without a restart."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._users: dict[str, dict[str, str]] = {}
        _dummy_hash()  # before the first login: an unknown name then costs one hash check, like a known one

    def _current(self) -> dict[str, dict[str, str]]:
        with self._lock:
            try:
                mtime = self.path.stat().st_mtime
            except OSError:
                return {}
            if mtime != self._mtime:
                try:
                    self._users = read_users(self.path)
                except UsersFileError as exc:
                    log.error("%s", exc)  # the message names the file and user, never a hash
                    self._users = {}
                self._mtime = mtime
            return self._users

    def principal(self, name: str | None) -> Principal | None:
        entry = self._current().get(name or "")
        return Principal(name, entry["role"]) if entry and name else None

    def authenticate(self, name: str, password: str) -> Principal | None:
        entry = self._current().get(name)
        if entry is None:
            check_password_hash(_dummy_hash(), password)
            return None
        return Principal(name, entry["role"]) if check_password_hash(entry["password_hash"], password) else None
