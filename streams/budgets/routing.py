"""Worker side of budget evaluation: which budgets each priced event counts toward.

A budget's scope can span every input partition (a per-model budget sees all teams), so the worker that prices
an event cannot own the budget's total. It routes the amount instead: one message per budget per batch on
`tokenmeter.budget-spend`, keyed by budget name, so one worker owns each budget (see `owner.py`).

Each entry carries the usage record it came from (partition, offset). The owner keeps, per budget, the highest
usage offset applied per usage partition: when the worker re-prices a batch after a crash (at-least-once), the
re-sent entries carry offsets already applied and are skipped, exactly, without remembering event ids forever.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

import orjson

from .decisions import header_tag_form
from .model import Budget

MAX_ENTRIES_PER_MESSAGE = 5000  # keeps messages far below Kafka's 1 MB default (~80 bytes per entry)


def _amount_json(value: Any) -> Any:
    return value if isinstance(value, int) else format(value, "f")


class BudgetRouter:
    """Matches priced events to budget definitions; definitions change at run time (`set_budgets`)."""

    def __init__(self, budgets: Iterable[Budget] = ()):
        self.budgets: dict[str, Budget] = {}
        self.set_budgets(budgets)

    def set_budgets(self, budgets: Iterable[Budget] | dict[str, Budget]) -> None:
        self.budgets = dict(budgets) if isinstance(budgets, dict) else {b.name: b for b in budgets}
        self.version = getattr(self, "version", 0) + 1  # caches derived from the definitions compare it
        self.model_scoped = [b for b in self.budgets.values() if "model" in b.scope]
        self.position = {name: i for i, name in enumerate(self.budgets)}  # definition order
        # Index by one plain dimension of the scope (dim -> value -> budgets), so an event costs one dict lookup per
        # indexed dimension whatever the number of budgets; budgets without a plain dimension (empty scope, tags
        # only) are checked for every event. `matches` still checks the whole scope.
        self._index: dict[str, dict[str, list[Budget]]] = defaultdict(lambda: defaultdict(list))
        self._always: list[Budget] = []
        # Scope tag keys by the form a header carries them in (decisions.header_tag_form): `tag:cost_center` and
        # `tag:Env` must be found from `x-tokenmeter-tag-cost-center` / `...-tag-env` (hostile32).
        self.header_tag_keys: dict[str, set[str]] = {}
        for budget in self.budgets.values():
            for key in budget.scope:
                if key.startswith("tag:"):
                    self.header_tag_keys.setdefault(header_tag_form(key[4:]), set()).add(key[4:])
        for budget in self.budgets.values():
            plain = sorted((k, v) for k, v in budget.scope.items() if not k.startswith("tag:"))
            if plain:
                dim, value = plain[0]
                self._index[dim][value].append(budget)
            else:
                self._always.append(budget)

    def _candidates(self, event: dict[str, Any]) -> list[Budget]:
        attribution = event.get("attribution") or {}
        out = list(self._always)
        for dim, by_value in self._index.items():
            actual = event.get(dim) if dim in ("model", "provider") else attribution.get(dim)
            if actual is not None:
                out += by_value.get(actual, ())
        return out

    def candidates_for_attributes(self, attributes: dict[str, str]) -> list[Budget]:
        """The budgets whose scope can match a caller's flat attributes (`team`, `model`, `tag:env`, ... as a
        reservation or decision gives them): at most one dict lookup per indexed dimension, not one scope check
        per defined budget. A superset: `matches` still decides."""
        out = list(self._always)
        for dim, by_value in self._index.items():
            actual = attributes.get(dim)
            if actual is not None:
                out += by_value.get(actual, ())
        return out

    def route(self, priced: Iterable[tuple[int, int, dict[str, Any]]]) -> dict[str, list[list[Any]]]:
        """(usage partition, usage offset, priced event) -> {budget name: entries}.

        entry = [partition, offset, event_id, ts, amount, unpriced(, request id)]; amount is a decimal string (USD)
        or an int (tokens); `unpriced` is 1 for events that could not be priced (counted in the alert, never as $0
        silently); the request id only when the event carries one besides its event_id (`settlement_id`).
        """
        out: dict[str, list[list[Any]]] = defaultdict(list)
        if not self.budgets:
            return out
        for partition, offset, event in priced:
            # Failed calls count what they cost (usually nothing; tokens billed before a failure are real spend),
            # exactly as the warehouse totals that rebuild a budget do.
            for budget in self._candidates(event):
                if budget.matches(event):
                    unpriced = int(event.get("pricing_status") == "unpriced")
                    entry = [partition, offset, event["event_id"], event["ts"], _amount_json(budget.amount(event)),
                             unpriced]
                    request_id = settlement_id(event)
                    if request_id:
                        entry.append(request_id)
                    out[budget.name].append(entry)
        return out


def settlement_id(event: dict[str, Any]) -> str | None:
    """A gateway request id the event carries besides its event_id (which the Kong, APISIX and LiteLLM dialects
    already take from the request id): the tag `request_id`, for sources whose event ids are their own. The owner
    settles a reservation whose request id equals either (owner.py, docs/budgets.md)."""
    tags = (event.get("attribution") or {}).get("tags") or {}
    value = tags.get("request_id") if isinstance(tags, dict) else None
    return value if isinstance(value, str) and value and value != event.get("event_id") else None


def spend_messages(routed: dict[str, list[list[Any]]]) -> list[tuple[bytes, bytes]]:
    """Kafka (key, value) pairs for `tokenmeter.budget-spend`. Chunks are cut only between usage records: the
    owner's dedupe treats an offset it has applied as done, so one record's entries must travel together, and a
    budget's chunks must be stored in order, none after one that was refused (service.send_spend sends each after
    the one before it is acknowledged)."""
    messages = []
    for name, entries in routed.items():
        chunk: list[list[Any]] = []
        for entry in entries:
            if len(chunk) >= MAX_ENTRIES_PER_MESSAGE and (chunk[-1][0], chunk[-1][1]) != (entry[0], entry[1]):
                messages.append((name.encode(), orjson.dumps({"budget": name, "entries": chunk})))
                chunk = []
            chunk.append(entry)
        if chunk:
            messages.append((name.encode(), orjson.dumps({"budget": name, "entries": chunk})))
    return messages
