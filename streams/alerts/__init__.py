"""Alert delivery: the dispatcher reads the outbox `tokenmeter.alerts` and delivers to Slack, PagerDuty and
signed webhooks, exactly once per alert and route (state in `tokenmeter.alert-deliveries`).

Imports are lazy: the CLI registers `tokenmeter alerts` at every start and must not pay for aiokafka then."""

from __future__ import annotations

from typing import Any

# What `tokenmeter up` spawns for the dispatcher role (arguments after the `tokenmeter` executable).
DISPATCH_ARGS = ["alerts", "dispatch"]

__all__ = ["DISPATCH_ARGS", "Dispatcher", "parse_alert", "run_dispatcher"]


def __getattr__(name: str) -> Any:
    if name in ("Dispatcher", "parse_alert", "run_dispatcher"):
        from . import dispatcher

        return getattr(dispatcher, name)
    raise AttributeError(name)
