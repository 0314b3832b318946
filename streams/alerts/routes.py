"""Notification routes (`slack=URL`, `pagerduty=ROUTING_KEY`, `webhook=URL`) and how they appear in logs and
delivery records: a Slack webhook URL's path and a PagerDuty routing key are credentials, so they are masked."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

ROUTE_KINDS = ("slack", "pagerduty", "webhook")


class RouteError(ValueError):
    """A notify entry cannot be delivered to (unknown kind, empty target, not an http(s) URL)."""


@dataclass(frozen=True)
class Route:
    kind: str  # "slack" | "pagerduty" | "webhook"
    target: str  # URL or routing key (a secret: never log it, use `masked`)
    route_id: str  # unique within one alert: the kind, plus a target hash when a kind appears twice

    @property
    def masked(self) -> str:
        return mask_target(self.kind, self.target)


def _check(kind: str, target: str) -> None:
    if kind not in ROUTE_KINDS:
        raise RouteError(f"unknown route {kind!r} (expected one of {', '.join(ROUTE_KINDS)})")
    if not target:
        raise RouteError(f"route {kind!r} has an empty target")
    if kind in ("slack", "webhook"):
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RouteError(f"{kind} target must be an http(s) URL, got {mask_target(kind, target)!r}")


def parse_routes(notify: list[str]) -> tuple[list[Route], list[tuple[str, str]]]:
    """Routes of a notify list in order, and the entries that cannot be delivered as (entry label, reason).

    Duplicate entries collapse into one route (one delivery per alert and route). The delivery record key is
    `<alert id>|<route_id>`; route_id is the plain kind unless the same kind appears with several targets."""
    pairs: list[tuple[str, str]] = []
    bad: list[tuple[str, str]] = []
    for entry in notify:
        kind, _, target = str(entry).partition("=")
        kind, target = kind.strip().lower(), target.strip()
        try:
            _check(kind, target)
        except RouteError as exc:
            bad.append((kind or "unknown", str(exc)))
            continue
        if (kind, target) not in pairs:
            pairs.append((kind, target))
    counts: dict[str, int] = {}
    for kind, _ in pairs:
        counts[kind] = counts.get(kind, 0) + 1
    routes = []
    for kind, target in pairs:
        route_id = kind if counts[kind] == 1 else f"{kind}:{hashlib.sha256(target.encode()).hexdigest()[:8]}"
        routes.append(Route(kind, target, route_id))
    return routes, bad


def mask_target(kind: str, target: str) -> str:
    """Slack: host and first path segment only; PagerDuty: last 4 characters of the key; webhooks: no userinfo,
    no query values (tokens often hide there), path kept (it tells receivers apart)."""
    if kind == "pagerduty":
        return "****" + target[-4:] if len(target) > 8 else "****"
    try:
        parts = urlsplit(target)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid url>"
    netloc = f"{host}:{port}" if port else host
    if kind == "slack":
        first = parts.path.strip("/").split("/")[0] if parts.path.strip("/") else ""
        return urlunsplit((parts.scheme, netloc, f"/{first}/***" if first else "/***", "", ""))
    query = "&".join(f"{kv.partition('=')[0]}=***" for kv in parts.query.split("&") if kv) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact(text: str, routes: list[Route] | tuple[Route, ...]) -> str:
    """Replace any route target found in a message (e.g. an exception text naming the URL) by its mask."""
    for route in routes:
        if route.target and route.target in text:
            text = text.replace(route.target, route.masked)
    return text


def mask_notify(notify: list[str]) -> list[str]:
    """A notify list safe to show or to send to a third party (webhook bodies, `alerts list`)."""
    out = []
    for entry in notify:
        kind, sep, target = str(entry).partition("=")
        out.append(f"{kind}={mask_target(kind.strip().lower(), target.strip())}" if sep else "***")
    return out
