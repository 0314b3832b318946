"""Server-side state of dashboard logins: the live sessions (a cookie only names one, so logout really ends it)
and the failed-login throttle (per user name and per client IP, with a temporary lock-out).

Both live in the dashboard process's memory: a restart signs everyone out and forgets failures (documented in
docs/security.md); one dashboard process serves all requests (waitress's threads: dashboards/serving.py)."""

from __future__ import annotations

import ipaddress
import math
import secrets
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Session:
    user: str
    csrf: str
    expires: float  # time.monotonic()


class SessionRegistry:
    """Live sessions by random id; a session ends at logout or after `lifetime_s`, whatever the cookie says."""

    def __init__(self, lifetime_s: float):
        self.lifetime_s = lifetime_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, user: str) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(user, secrets.token_urlsafe(24), time.monotonic() + self.lifetime_s)
        with self._lock:
            now = time.monotonic()
            for old in [k for k, s in self._sessions.items() if s.expires <= now]:
                del self._sessions[old]  # bounded: expired sessions go whenever someone signs in
            self._sessions[sid] = session
        return sid, session

    def get(self, sid: object) -> Session | None:
        if not isinstance(sid, str):
            return None
        with self._lock:
            session = self._sessions.get(sid)
            if session is not None and session.expires <= time.monotonic():
                del self._sessions[sid]
                return None
            return session

    def live(self) -> int:
        """Sessions neither ended nor expired (for /metrics)."""
        now = time.monotonic()
        with self._lock:
            return sum(1 for s in self._sessions.values() if s.expires > now)

    def end(self, sid: object) -> None:
        if isinstance(sid, str):
            with self._lock:
                self._sessions.pop(sid, None)


@dataclass
class _Failures:
    times: list[float] = field(default_factory=list)
    locked_until: float = 0.0


class LoginThrottle:
    """Failed sign-ins counted per user name and per client IP over the last `lockout_s` seconds; reaching the
    limit locks that name (or IP) for `lockout_s`, during which even the right password is refused. A success
    clears the user's count (not the IP's: one good account must not reset a password-spraying client)."""

    def __init__(self, user_limit: int, ip_limit: int, lockout_s: float):
        self.user_limit, self.ip_limit, self.lockout_s = user_limit, ip_limit, lockout_s
        self._entries: dict[str, _Failures] = {}
        self._lock = threading.Lock()

    def _keys(self, user: str, ip: str) -> list[tuple[str, int]]:
        return [(f"user:{user.lower()}", self.user_limit), (f"ip:{client_key(ip)}", self.ip_limit)]

    def retry_after(self, user: str, ip: str) -> int:
        """Seconds until a sign-in for `user` from `ip` is allowed again; 0 if it is allowed now."""
        now = time.monotonic()
        with self._lock:
            wait = max((self._entries[k].locked_until - now for k, _ in self._keys(user, ip) if k in self._entries),
                       default=0.0)
        return max(0, math.ceil(wait))

    def failed(self, user: str, ip: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._entries) > 100_000:  # a flood of names: keep only the locked ones
                self._entries = {k: v for k, v in self._entries.items() if v.locked_until > now}
            for key, limit in self._keys(user, ip):
                entry = self._entries.setdefault(key, _Failures())
                entry.times = [t for t in entry.times if t > now - self.lockout_s] + [now]
                if len(entry.times) >= limit:
                    entry.locked_until = now + self.lockout_s
                    entry.times = []

    def succeeded(self, user: str) -> None:
        with self._lock:
            self._entries.pop(f"user:{user.lower()}", None)


def client_key(ip: str) -> str:
    """What the per-client count is kept by: an IPv4 address as it is (an IPv4-mapped IPv6 one as its IPv4 address),
    an IPv6 address by its /64 (a client is handed a whole /64 and moves within it at will: counted per address, it
    sprayed 19 names from each and was never locked), anything else as given."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])  # a zone (`fe80::1%eth0`) names the link, not the host
    except ValueError:
        return ip
    if address.version == 6 and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def describe_wait(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} seconds"
    return f"{math.ceil(seconds / 60)} minutes"
