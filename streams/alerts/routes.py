"""Notification routes (`slack=URL`, `pagerduty=ROUTING_KEY`, `webhook=URL`) and how they appear in logs and
delivery records: a Slack webhook URL's path and a PagerDuty routing key are credentials, so they are masked."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

ROUTE_KINDS = ("slack", "pagerduty", "webhook")
# A notify entry whose secret lives in the route store (streams.alerts.route_secrets):
# `<kind>=<masked target>#secret=r-<16 hex>`. It is safe to show as it is.
REF_MARK = "#secret="
REF_PATTERN = re.compile(r"^r-[0-9a-f]{16}$")
# A route kind as a person types one (`sms`, `slak`); anything else before the `=` may be the secret itself (a
# URL or routing key typed without its kind) and is never echoed.
_SHOWN_KIND = re.compile(r"^[a-z][a-z0-9_-]{0,19}$")
NOT_A_ROUTE = "is not slack=URL, pagerduty=ROUTING_KEY or webhook=URL"


def shown_kind(kind: str) -> str:
    """The kind part of a notify entry as safe to show: itself when it reads as a kind, else `***`."""
    return kind if _SHOWN_KIND.match(kind) else "***"


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
        raise RouteError(f"unknown route {shown_kind(kind)!r} (expected one of {', '.join(ROUTE_KINDS)})")
    if not target:
        raise RouteError(f"route {kind!r} has an empty target")
    if kind in ("slack", "webhook"):
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RouteError(f"{kind} target must be an http(s) URL, got {mask_target(kind, target)!r}")


def split_reference(entry: str) -> tuple[str, str, str] | None:
    """(kind, masked target, ref) of a reference entry; None for a plain `kind=target` entry."""
    head, mark, ref = str(entry).rpartition(REF_MARK)
    if not mark or not REF_PATTERN.match(ref):
        return None
    kind, sep, masked = head.partition("=")
    kind = kind.strip().lower()
    if not sep or kind not in ROUTE_KINDS:
        return None
    return kind, masked, ref


def parse_routes(notify: list[str], resolve: Callable[[str], str] | None = None
                 ) -> tuple[list[Route], list[tuple[str, str]]]:
    """Routes of a notify list in order, and the entries that cannot be delivered as (entry label, reason).
    `resolve` turns a reference entry into its real `kind=target` (the dispatcher reads the route store);
    without it, or when it raises ValueError, a reference is an entry that cannot be delivered.

    Duplicate entries collapse into one route (one delivery per alert and route). The delivery record key is
    `<alert id>|<route_id>`; route_id is the plain kind unless the same kind appears with several targets."""
    pairs: list[tuple[str, str]] = []
    bad: list[tuple[str, str]] = []
    for entry in notify:
        reference = split_reference(entry)
        if reference is not None:
            try:
                if resolve is None:
                    raise ValueError(f"{reference[0]} route {reference[2]} needs the route secret store")
                entry = resolve(entry)
            except ValueError as exc:
                bad.append((reference[0], str(exc)))
                continue
        kind, sep, target = str(entry).partition("=")
        kind, target = kind.strip().lower(), target.strip()
        if not sep:  # `slack:https://…`, a bare URL or key: the whole entry may be the secret (walk32)
            bad.append(("unknown", f"'***' {NOT_A_ROUTE}"))
            continue
        try:
            _check(kind, target)
        except RouteError as exc:
            bad.append((shown_kind(kind) if kind else "unknown", str(exc)))
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
    """Slack and webhooks: host and, when more segments follow it, the first path segment only (tokens hide in paths:
    Slack, Discord, Teams, webhook.site, ntfy.sh), no userinfo, query names without values; PagerDuty: last 4
    characters of the key."""
    if kind == "pagerduty":
        return "****" + target[-4:] if len(target) > 8 else "****"
    try:
        parts = urlsplit(target)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid url>"
    netloc = f"{host}:{port}" if port else host
    segments = [p for p in parts.path.split("/") if p]
    # The first segment names the route (`/services/`, `/hook/`) only when more follow; alone it is the token
    # (webhook.site's id, an ntfy.sh topic): walk31 saw such URLs whole in budget lists and validation errors.
    path = f"/{segments[0]}/***" if len(segments) > 1 else "/***" if segments else ""
    if kind == "slack":
        return urlunsplit((parts.scheme, netloc, path or "/***", "", ""))
    query = "&".join(f"{kv.partition('=')[0]}=***" for kv in parts.query.split("&") if kv) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, path, query, ""))


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
        if split_reference(entry) is not None:  # masked already; the ref is no secret
            out.append(str(entry))
            continue
        kind, sep, target = str(entry).partition("=")
        kind = kind.strip().lower()
        out.append(f"{shown_kind(kind)}={mask_target(kind, target.strip())}" if sep else "***")
    return out
