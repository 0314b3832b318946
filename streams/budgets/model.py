"""Budget definitions: who is covered (scope), what is counted (metric), over which period, the limit, the
thresholds that alert, the action at 100% and where notifications go.

`validate_budget` checks a raw mapping and returns EVERY problem (so `budget apply` of a 20-budget file
reports all mistakes at once); `parse_budget` raises `BudgetError` carrying that list.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any, Literal
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, PlainSerializer
from typing_extensions import Annotated

from streams.alerts.routes import mask_notify, mask_target, split_reference

SCOPE_DIMENSIONS = ("org", "team", "project", "user", "api_key", "feature", "model", "provider")
ATTRIBUTION_SCOPE = ("org", "team", "project", "user", "api_key", "feature")
METRICS = ("cost_usd", "tokens")
ACTIONS = ("alert", "throttle", "block")
CALENDAR_PERIODS = ("day", "week", "month")
NOTIFY_KINDS = ("slack", "pagerduty", "webhook")
DEFAULT_THRESHOLDS = (50, 80, 100)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
ROLLING_PATTERN = re.compile(r"^rolling:([0-9]+)([hd])$")
ROLLING_MAX_HOURS = 90 * 24  # hourly buckets are kept for the window: bound the state
# PagerDuty Events API v2 routing (integration) keys are 32 characters.
PAGERDUTY_KEY = re.compile(r"^[A-Za-z0-9]{32}$")

# Decimal limit travels as a string in JSON so no parser turns it into a float.
Limit = Annotated[
    Decimal | int, PlainSerializer(lambda v: format(v, "f") if isinstance(v, Decimal) else v, when_used="json")
]


class BudgetError(ValueError):
    """A budget definition with one or more problems; `problems` lists each, naming the field."""

    def __init__(self, problems: list[str], name: str | None = None):
        self.problems = problems
        label = f"budget {name!r}" if name else "budget"
        super().__init__(f"{label} is invalid:\n  " + "\n  ".join(problems))


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    scope: dict[str, str]  # e.g. {"team": "search", "tag:env": "prod"}; empty = all traffic
    metric: Literal["cost_usd", "tokens"] = "cost_usd"
    period: str = "month"  # day | week | month | rolling:<N>h | rolling:<N>d
    tz: str = "UTC"  # IANA zone of calendar periods
    limit: Limit
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS
    action: Literal["alert", "throttle", "block"] = "alert"
    notify: tuple[str, ...] = ()

    # Derived views ---------------------------------------------------------------------------------
    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @property
    def rolling_hours(self) -> int | None:
        match = ROLLING_PATTERN.match(self.period)
        if not match:
            return None
        return int(match.group(1)) * (24 if match.group(2) == "d" else 1)

    @property
    def routes(self) -> list[tuple[str, str]]:
        return [tuple(item.split("=", 1)) for item in self.notify]  # type: ignore[misc]

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def matches(self, event: Any) -> bool:
        """Does a priced event (dict or model) or a scope mapping fall under this budget?

        Every scope entry must match; an event lacking a scoped dimension does not match.
        """
        values = scope_values(event)
        tags = values.get("tags") or {}
        for key, wanted in self.scope.items():
            if key.startswith("tag:"):
                if tags.get(key[4:]) != wanted:
                    return False
            elif values.get(key) != wanted:
                return False
        return True

    def amount(self, event: Any) -> Decimal | int:
        """What this event adds to the budget: cost in USD (Decimal) or total tokens (int)."""
        if self.metric == "tokens":
            usage = _get(event, "usage") or {}
            return int(_get(usage, "input_tokens") or 0) + int(_get(usage, "output_tokens") or 0)
        cost = _get(event, "cost_usd")
        return Decimal(str(cost)) if cost is not None else Decimal(0)


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def scope_values(event: Any) -> dict[str, Any]:
    """Flatten an event (priced or canonical, dict or model) or a scope mapping into dimension -> value.

    A scope mapping may use the flat form (`{"team": "x", "tag:env": "prod"}`) or carry `tags` as a map.
    """
    attribution = _get(event, "attribution")
    if attribution is None:  # a scope mapping, e.g. from the decision endpoint
        flat = dict(event) if isinstance(event, dict) else {}
        tags = dict(flat.pop("tags", None) or {})
        for key in [k for k in flat if k.startswith("tag:")]:
            tags[key[4:]] = flat.pop(key)
        flat["tags"] = tags
        return flat
    values = {dim: _get(attribution, dim) for dim in ATTRIBUTION_SCOPE}
    values["tags"] = _get(attribution, "tags") or {}
    values["model"] = _get(event, "model")
    values["provider"] = _get(event, "provider")
    return values


def _problems_scope(scope: Any) -> list[str]:
    if not isinstance(scope, dict):
        return [f"scope: expected a mapping of dimension to value, got {type(scope).__name__}"]
    problems = []
    for key, value in scope.items():
        if not isinstance(key, str) or not (key in SCOPE_DIMENSIONS or (key.startswith("tag:") and len(key) > 4)):
            problems.append(f"scope: unknown dimension {key!r} (use {', '.join(SCOPE_DIMENSIONS)} or tag:<key>)")
        if not isinstance(value, str) or not value:
            problems.append(f"scope.{key}: value must be a non-empty string, got {value!r}")
    return problems


def _problems_period(period: Any, tz: Any) -> list[str]:
    problems = []
    if not isinstance(period, str):
        return [f"period: expected a string, got {period!r}"]
    rolling = ROLLING_PATTERN.match(period)
    if period not in CALENDAR_PERIODS and not rolling:
        problems.append(f"period: {period!r} is not day, week, month, rolling:<N>h or rolling:<N>d")
    if rolling:
        hours = int(rolling.group(1)) * (24 if rolling.group(2) == "d" else 1)
        if not 1 <= hours <= ROLLING_MAX_HOURS:
            problems.append(f"period: rolling window must be 1h..{ROLLING_MAX_HOURS // 24}d, got {period!r}")
    if not isinstance(tz, str) or not tz:
        problems.append(f"tz: expected an IANA time zone name, got {tz!r}")
    else:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"tz: unknown IANA time zone {tz!r} (e.g. UTC, Europe/Berlin)")
    return problems


# Every enforcement record carries the limit to the warehouse's `budget_status.limit_amount`, Decimal(38, 12): a
# limit it cannot store made each record of the budget a dead letter at the loader (walk30), so it is refused here.
LIMIT_BELOW = Decimal(10) ** 26
LIMIT_DECIMALS = 12


def _problems_limit(limit: Any, metric: Any) -> list[str]:
    if limit is None:
        return ["limit: required (USD for cost_usd, a token count for tokens)"]
    if isinstance(limit, float):  # money never passes through a float
        return [f"limit: give {limit!r} as a decimal string (e.g. \"100.50\"), not a float"]
    if metric == "tokens":
        if isinstance(limit, bool) or not (isinstance(limit, int) or (isinstance(limit, str) and limit.isdigit())):
            return [f"limit: token limit must be a whole number, got {limit!r}"]
        if int(limit) <= 0:
            return ["limit: must be > 0"]
        return [] if int(limit) < LIMIT_BELOW else [f"limit: must be below 10^26 tokens, got {str(limit)[:40]}..."]
    try:
        value = Decimal(str(limit))
    except InvalidOperation:
        return [f"limit: {limit!r} is not a decimal amount of USD"]
    if not value.is_finite() or value <= 0:
        return [f"limit: must be a positive USD amount, got {limit!r}"]
    if value >= LIMIT_BELOW:
        return [f"limit: must be below 10^26 USD, got {str(limit)[:40]!r}"]
    with localcontext() as context:  # 38 digits: the default 28 cannot quantize a limit near 10^26 to 12 places
        context.prec = 40
        exact = value == value.quantize(Decimal(1).scaleb(-LIMIT_DECIMALS))
    if not exact:
        return [f"limit: at most {LIMIT_DECIMALS} decimal places of USD, got {limit!r}"]
    return []


def _problems_thresholds(thresholds: Any) -> list[str]:
    if not isinstance(thresholds, (list, tuple)) or not thresholds:
        return ["thresholds: expected a non-empty list of percentages"]
    problems = []
    for item in thresholds:
        if isinstance(item, bool) or not isinstance(item, int) and not (isinstance(item, str) and item.isdigit()):
            problems.append(f"thresholds: {item!r} is not a whole percentage")
        elif not 1 <= int(item) <= 1000:
            problems.append(f"thresholds: {item} is outside 1..1000")
    return problems


def _normalized_notify(notify: Any) -> Any:
    """`kind=target` entries as the dispatcher reads them (streams/alerts/routes.py: kind stripped and lower-cased,
    target stripped), so validation judges the route that will be used (walk32: `slack= https://…` was refused
    with a message naming what looked like a valid route)."""
    if not isinstance(notify, (list, tuple)):
        return notify
    out = []
    for entry in notify:
        if isinstance(entry, str) and "=" in entry and split_reference(entry) is None:
            kind, _, target = entry.partition("=")
            entry = f"{kind.strip().lower()}={target.strip()}"
        out.append(entry)
    return out


def _problems_notify(notify: Any) -> list[str]:
    if not isinstance(notify, (list, tuple)):
        return ["notify: expected a list of kind=target routes"]
    problems = []
    for route in notify:
        kind, _, target = route.partition("=") if isinstance(route, str) else ("", "", "")
        if kind in NOTIFY_KINDS and split_reference(route) is not None:
            continue  # a reference to the route secret store (streams.alerts.route_secrets): checked when stored
        if kind not in NOTIFY_KINDS or not target:
            shown = mask_notify([route])[0] if isinstance(route, str) else repr(route)  # never echo a secret
            problems.append(f"notify: {shown!r} is not slack=URL, pagerduty=ROUTING_KEY or webhook=URL")
        elif kind in ("slack", "webhook"):
            url = urlparse(target)
            if url.scheme not in ("http", "https") or not url.netloc:
                problems.append(f"notify: {kind} target {mask_target(kind, target)!r} is not an http(s) URL")
        elif not PAGERDUTY_KEY.match(target):
            problems.append(f"notify: pagerduty routing key must be 32 letters/digits, got {len(target)} characters")
    return problems


def validate_budget(data: Any) -> list[str]:
    """Every problem of a raw budget mapping, each naming its field; [] when valid."""
    if not isinstance(data, dict):
        return [f"expected a mapping, got {type(data).__name__}"]
    problems = []
    known = set(Budget.model_fields)
    problems += [f"{key}: unknown field (known: {', '.join(sorted(known))})" for key in data if key not in known]
    name = data.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        problems.append(f"name: {name!r} must be 1-128 letters, digits, '.', '_', ':' or '-'")
    problems += _problems_scope(data.get("scope", {}))
    metric = data.get("metric", "cost_usd")
    if metric not in METRICS:
        problems.append(f"metric: {metric!r} is not cost_usd or tokens")
    problems += _problems_period(data.get("period", "month"), data.get("tz", "UTC"))
    problems += _problems_limit(data.get("limit"), metric)
    problems += _problems_thresholds(data.get("thresholds", list(DEFAULT_THRESHOLDS)))
    action = data.get("action", "alert")
    if action not in ACTIONS:
        problems.append(f"action: {action!r} is not alert, throttle or block")
    problems += _problems_notify(_normalized_notify(data.get("notify", [])))
    return problems


def parse_budget(data: Any) -> Budget:
    """A valid `Budget` from a raw mapping (JSON/YAML), or `BudgetError` listing every problem."""
    problems = validate_budget(data)
    if problems:
        raise BudgetError(problems, data.get("name") if isinstance(data, dict) else None)
    metric = data.get("metric", "cost_usd")
    limit = int(data["limit"]) if metric == "tokens" else Decimal(str(data["limit"]))
    thresholds = tuple(sorted({int(t) for t in data.get("thresholds", DEFAULT_THRESHOLDS)}))
    return Budget(**{**data, "limit": limit, "thresholds": thresholds,
                     "notify": tuple(_normalized_notify(data.get("notify", ())))})


__all__ = [
    "Budget",
    "BudgetError",
    "SCOPE_DIMENSIONS",
    "parse_budget",
    "scope_values",
    "validate_budget",
]
