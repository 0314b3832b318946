"""When a worker may answer `/v1/decision`, and which budgets it owns.

A decision is only as good as the state it comes from. After a start (the embedded broker may have lost every
topic; `tokenmeter budget rebuild` republished the budgets' state from the warehouse) or a rebalance (another worker
may have advanced a budget this worker now owns), the decisions are derived again from the budget state topic
before the worker answers, and until then it answers 503 with `Retry-After` (docs/budgets.md): a gateway chooses to
fail closed or open. Ready means, in this order:
1. the budget definitions were read to the end of `tokenmeter.budgets`;
2. the enforcement decisions were read to the end of `tokenmeter.enforcement`;
3. the consumer group assigned this worker its `tokenmeter.budget-spend` partitions (possibly none);
4. the budgets of those partitions were restored from `tokenmeter.budget-state` and their decisions published;
5. at start, every defined budget has a decision (budgets owned by other workers included). A budget defined later
   has no spend yet: until its owner publishes, it allows, which is what its empty state would say.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=65_536)  # pure; asked for on every reservation and decision of ownership
def spend_partition(budget: str, partitions: int) -> int:
    """The `tokenmeter.budget-spend` partition a budget's messages land in: they are keyed by budget name and
    sent through Faust's producer, which uses aiokafka's default partitioner (murmur2 of the key)."""
    return (murmur2(budget.encode()) & 0x7FFFFFFF) % partitions


class Readiness:
    def __init__(self, partitions: int):
        self.partitions = partitions
        self.definitions_read = False
        self.enforcement_read = False
        self.assigned: set[int] | None = None  # budget-spend partitions of the current assignment
        self.generation = 0  # bumped at each assignment
        self.loaded_generation = -1  # the assignment whose owned budgets are loaded and published
        self.all_decided = False  # condition 5, checked until it holds once

    def assign(self, partitions: Iterable[int]) -> None:
        self.assigned = set(partitions)
        self.generation += 1

    def owns(self, budget: str) -> bool:
        return self.assigned is not None and spend_partition(budget, self.partitions) in self.assigned

    def why_not(self, budgets: Iterable[str], decided: Iterable[str]) -> str | None:
        """None when ready; otherwise what the worker is waiting for, for people."""
        if not self.definitions_read:
            return "reading budget definitions"
        if not self.enforcement_read:
            return "reading enforcement decisions"
        if self.assigned is None:
            return "waiting for the consumer group to assign partitions"
        if self.loaded_generation != self.generation:
            return "deriving decisions of the budgets this worker owns from their state"
        if not self.all_decided:
            missing = sorted(set(budgets) - set(decided))
            if missing:
                return f"waiting for the decisions of {len(missing)} budget(s) from their owners: " + \
                    ", ".join(missing[:5])
            self.all_decided = True
        return None


__all__ = ["Readiness", "spend_partition"]
