"""What gateways ask: may this caller spend now? Answered from the enforcement decisions every worker follows
(`tokenmeter.enforcement`, compacted, one record per budget), in memory, in microseconds.

A caller matches a decision when every dimension of the budget's scope equals the caller's attribute (tags as
`tag:<key>`; one of its values when the request gave several). The most severe matching decision wins
(block > throttle > allow); a decision whose `until` has passed no longer applies (the period ended even if no event
arrived to say so).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping

import orjson

from tokenmeter.events import MAX_ATTRIBUTION_CHARS, MAX_TAG_KEY_CHARS, MAX_TAGS, TEXT_BOUNDS

SEVERITY = {"allow": 0, "throttle": 1, "block": 2}
QUERY_DIMENSIONS = ("org", "team", "project", "user", "api_key", "feature", "model", "provider", "route")


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _given(attribute: str | set[str] | None, value: Any) -> bool:
    return value in attribute if isinstance(attribute, set) else attribute == value


class EnforcementView:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self._until: dict[str, datetime | None] = {}

    def update(self, budget: str, record: dict[str, Any] | None) -> None:
        if record is None:
            self.records.pop(budget, None)
            self._until.pop(budget, None)
            return
        current = self.records.get(budget)
        if current and current.get("updated_at", "") > record.get("updated_at", ""):
            return  # an older record read after a newer local one
        self.records[budget] = record
        self._until[budget] = _parse_time(record.get("until"))

    def update_raw(self, changed: Mapping[str, bytes | None]) -> None:
        for key, value in changed.items():
            budget = key[len("budget:"):] if key.startswith("budget:") else key
            try:
                self.update(budget, orjson.loads(value) if value is not None else None)
            except orjson.JSONDecodeError:
                continue

    def decide(self, attributes: Mapping[str, str | set[str]], now: datetime | None = None) -> dict[str, Any]:
        """The most severe decision of a budget whose scope the caller matches; a dimension given several values
        (`attribute_values`) matches with any of them, so a second value can only make the answer stricter."""
        now = now or datetime.now(timezone.utc)
        best: dict[str, Any] | None = None
        for budget, record in self.records.items():
            action = record.get("action", "allow")
            if action == "allow":
                continue
            until = self._until.get(budget)
            if until is not None and until <= now:
                continue
            scope = record.get("scope") or {}
            if not all(_given(attributes.get(dim), value) for dim, value in scope.items()):
                continue
            if best is None or SEVERITY[action] > SEVERITY[best["action"]] or (
                    action == best["action"] and (record.get("until") or "") > (best.get("until") or "")):
                best = record
        if best is None:
            return {"action": "allow"}
        retry_after = None
        until = self._until.get(best["budget"])
        if until is not None:
            retry_after = max(1, int((until - now).total_seconds()))
        return {"action": best["action"], "reason": best.get("reason", ""), "budget": best["budget"],
                "until": best.get("until"), "retry_after_s": retry_after, "spend": best.get("spend"),
                "limit": best.get("limit"), "metric": best.get("metric")}


def header_tag_form(key: str) -> str:
    """A tag key as a header can carry it: HTTP lower-cases header names and proxies drop names with `_` (nginx by
    default), so the tag `cost_center` arrives as `x-tokenmeter-tag-cost-center`."""
    return key.lower().replace("_", "-")


class AttributeOutOfBounds(ValueError):
    """A caller attribute past the event contract's bounds (tokenmeter/events.py): a 400 naming the header or
    parameter, its size and the limit, never its value (trust34: a 5,000-character team header or 200 `tag:`
    parameters were read and matched against every budget)."""


def _bound_of(dim: str) -> int:
    return TEXT_BOUNDS.get(dim, MAX_ATTRIBUTION_CHARS)  # model and provider as the event's; the rest attribution's


def _check_value(name: str, dim: str, value: str) -> None:
    if len(value) > _bound_of(dim):
        raise AttributeOutOfBounds(f"{name[:64]}: {len(value)} characters, at most {_bound_of(dim)}")


def _check_tag_key(name: str, key: str) -> None:
    if len(key) > MAX_TAG_KEY_CHARS:
        raise AttributeOutOfBounds(f"{name[:64]}: a tag key of {len(key)} characters, at most {MAX_TAG_KEY_CHARS}")


def check_attribute(name: str, dim: str, tag_key: str | None, value: str) -> None:
    """AttributeOutOfBounds when a value (or a tag's key) a request gives is past the event contract's bounds."""
    if tag_key is not None:
        _check_tag_key(name, tag_key)
    _check_value(name, dim, value)


def check_tag_count(keys: Any, where: str) -> None:
    if len(keys) > MAX_TAGS:
        raise AttributeOutOfBounds(f"{len(keys)} tags, at most {MAX_TAGS} ({where})")


def attribute_values(query: Mapping[str, str], headers: Mapping[str, str], header_prefix: str,
                     tag_keys: Mapping[str, set[str]] | None = None) -> dict[str, set[str]]:
    """Every value the request gives each caller attribute, from query parameters (`team=`, `tag:env=`) and headers
    (`x-tokenmeter-team`, `x-tokenmeter-tag-env`; `api-key` and `api_key` are one name); a dimension the query names
    is read from the query only, so a proxy can pin values it knows. Repeated names keep all their values: a
    gateway that overwrites the caller's header cannot know every other spelling or copy a client may add, and
    reading only the last one let a client pick its own identity (hostile32). `tag_keys`: the budgets' scope tag
    keys by `header_tag_form`; a tag header also reads as each of them, or a `tag:Env` / `tag:cost_center` scope could
    never be matched from headers (hostile32). AttributeOutOfBounds past the event contract's bounds (trust34)."""
    from_headers: dict[str, set[str]] = {}
    prefix = header_prefix.lower()
    tags_named: set[str] = set()  # the tags as the request names them (before the scope spellings are added)
    for name, value in headers.items():
        lower = name.lower()
        if not lower.startswith(prefix) or not value:
            continue
        dim = lower[len(prefix):].replace("-", "_")
        if dim.startswith("tag_"):
            key = lower[len(prefix) + 4:]
            _check_tag_key(lower, key)
            _check_value(lower, "tag", value)
            tags_named.add(key)
            for spelling in {key, *(tag_keys or {}).get(header_tag_form(key), ())}:
                from_headers.setdefault("tag:" + spelling, set()).add(value)
        elif dim in QUERY_DIMENSIONS:
            _check_value(lower, dim, value)
            from_headers.setdefault(dim, set()).add(value)
    from_query: dict[str, set[str]] = {}
    for name, value in query.items():
        if value and (name in QUERY_DIMENSIONS or name.startswith("tag:")):
            if name.startswith("tag:"):
                _check_tag_key(name, name[4:])
                tags_named.add(header_tag_form(name[4:]))
            _check_value(name, name if name in QUERY_DIMENSIONS else "tag", value)
            from_query.setdefault(name, set()).add(value)
    check_tag_count(tags_named, f"{prefix}tag-* headers and tag: parameters")
    return {**from_headers, **from_query}


class ConflictingAttributes(ValueError):
    """A request naming one dimension with several values, where one owner is needed (a reservation's hold)."""


def attributes_from_request(query: Mapping[str, str], headers: Mapping[str, str], header_prefix: str,
                            tag_keys: Mapping[str, set[str]] | None = None) -> dict[str, str]:
    """One value per caller attribute (`attribute_values`); ConflictingAttributes naming the dimensions given more
    than one (never their values: an api_key may be a key)."""
    values = attribute_values(query, headers, header_prefix, tag_keys)
    repeated = sorted(dim for dim, given in values.items() if len(given) > 1)
    if repeated:
        raise ConflictingAttributes(f"{', '.join(repeated)} given more than one value (repeated header or query "
                                    "parameter, or the api-key and api_key spellings): one caller, one value each")
    return {dim: next(iter(given)) for dim, given in values.items()}


ANSWER_PARAMETERS = ("throttle_status",)  # how to answer, not who is asking


def ignored_parameters(query: Mapping[str, str]) -> list[str]:
    """Query parameters /v1/decision does not read: a gateway configured with `?tema=search` would otherwise get
    the answer for no team at all (allow) with nothing to say why."""
    return sorted({name for name in query if name not in QUERY_DIMENSIONS and not name.startswith("tag:")
                   and name not in ANSWER_PARAMETERS})


OTHER_HEADERS = ("timing", "reservation", "action")  # <prefix>timing asks for Server-Timing; the others are ours


def ignored_headers(headers: Mapping[str, str], header_prefix: str) -> list[str]:
    """`<prefix>*` request headers that name no dimension (`x-tokenmeter-tema`): said like ignored_parameters, since
    the gateway recipes attribute by headers and a misspelt one was an unexplained allow (walk32). At most 10 names
    of at most 64 characters (a client may add headers through a proxy that forwards the prefix)."""
    prefix = header_prefix.lower()
    out = set()
    for name in headers:
        lower = name.lower()
        if not lower.startswith(prefix):
            continue
        rest = lower[len(prefix):]
        dim = rest.replace("-", "_")
        if dim not in QUERY_DIMENSIONS and not (dim.startswith("tag_") and len(dim) > 4) and rest not in OTHER_HEADERS:
            out.add(lower[:64])
    return sorted(out)[:10]


def http_status(action: str) -> int:
    return {"allow": 200, "throttle": 429, "block": 403}[action]
