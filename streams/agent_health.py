"""Agents that never lose a batch to an error, and say when they are failing.

Faust acks every event of a `take_events` batch when the batch's generator is closed, including when the agent body
raised: an exception in the body (a dead letter the broker refused, a broker read that timed out) used to commit
the input offsets past outputs that were never stored. So every step of a batch that talks to the broker runs
under `retry_until_done`: on an error it is logged, the agent is reported failing on `/health` (503), and the step
is retried with back-off (0.5 s doubling to 30 s) until it succeeds; only then does the body return and Faust ack.
Bad input never reaches this path (it becomes a dead letter in `process_batch`); what does is a broker problem or a
bug, and both must stop the batch rather than drop it. Re-sent outputs are harmless: priced events are deduplicated
on event_id downstream, budget spend on its usage offsets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, TypeVar

log = logging.getLogger("tokenmeter.worker")
T = TypeVar("T")
FIRST_DELAY, MAX_DELAY = 0.5, 30.0


class AgentHealth:
    """Which agents are failing right now, since when, and why (served on /health)."""

    def __init__(self) -> None:
        self.failing: dict[str, dict[str, Any]] = {}
        self.errors_total = 0

    def failed(self, agent: str, exc: BaseException, attempt: int) -> None:
        self.errors_total += 1
        since = self.failing.get(agent, {}).get("since", time.time())
        self.failing[agent] = {"error": f"{type(exc).__name__}: {exc}"[:500], "since": since, "attempts": attempt}

    def recovered(self, agent: str) -> None:
        if self.failing.pop(agent, None) is not None:
            log.warning("agent %s recovered", agent)

    @property
    def ok(self) -> bool:
        return not self.failing


async def retry_until_done(agent: str, health: AgentHealth, step: Callable[[], Awaitable[T]],
                           what: str = "batch") -> T:
    """Run `step` until it succeeds; each failure is logged, reported on `health` and retried after a back-off."""
    attempt = 0
    while True:
        try:
            result = await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - anything: the batch must not be acked half-done
            attempt += 1
            health.failed(agent, exc, attempt)
            delay = min(MAX_DELAY, FIRST_DELAY * 2 ** (attempt - 1))
            log.error("%s: %s failed (attempt %d), not acked, retrying in %.1f s: %r", agent, what, attempt, delay,
                      exc, exc_info=attempt == 1)
            await asyncio.sleep(delay)
            continue
        health.recovered(agent)
        return result


__all__ = ["AgentHealth", "retry_until_done"]
