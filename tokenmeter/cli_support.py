"""What every command line wrapper needs, written once: the invocation's Settings, and running a service until
SIGINT/SIGTERM. Stage CLIs (collectors, streams, warehouse, dashboards) and the app shell all use it.

Settings are loaded once per invocation and kept on the root click context, so a command reads the environment
and the YAML file once and reports every invalid value together. Long-running services configure logging from
them (`configure_logging`); one-shot commands keep stderr quiet.
"""

from __future__ import annotations

import gc
import logging
import signal
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import click

from tokenmeter.heartbeat import beat, heartbeat_path
from tokenmeter.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:  # asyncio (with ssl, subprocess, concurrent.futures: ~0.04 CPU-s) is imported by `run_service`, its
    import asyncio  # only user here: a one-shot command (`report`, `close`, `status`) runs no event loop (floor28)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def cli_settings(**overrides: Any) -> Settings:
    """The invocation's Settings (a clear click error when invalid). With `overrides` (command options that
    change a setting), a fresh Settings validated with them."""
    try:
        if overrides:
            return load_settings(**overrides)
        ctx = click.get_current_context(silent=True)
        root = ctx.find_root() if ctx is not None else None
        if root is not None and isinstance(root.obj, Settings):
            return root.obj
        settings = load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    if root is not None and root.obj is None:
        root.obj = settings
    return settings


# Young objects are collected every YOUNG_GC_THRESHOLD net allocations instead of CPython's 700. A process that builds
# much (a month of demo history, the loader's batches, the detector's state) ran a young collection every 700
# allocations and, while its heap grew, a full one (which walks every object, the imported libraries included) every
# few seconds: `up --demo`'s demo-history spent 0.76 of 5.2 CPU-s in the collector, the loader 0.69 of 4.1
# (docs/rounds/testing.md, eleventh round). The worker sets its own once it owns budgets (7,000, measured for the
# admission latency: streams/budgets/reservations.freeze_startup_heap); the test processes use this one (tests/module_gc.py).
YOUNG_GC_THRESHOLD = 10_000


def collect_young_objects_less_often() -> None:
    if gc.get_threshold()[0] < YOUNG_GC_THRESHOLD:
        gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


def quiet_library_logs() -> None:
    """A one-shot command configures no logging, so a library's warning or error (aiokafka's `Unable connect to
    ...` when Kafka is down) reached stderr through logging's last-resort handler, before the command's own clear
    error. A NullHandler on the library's logger ends that; the records still propagate, so a service's handlers
    (`configure_logging`) and pytest's capture see them as before."""
    for name in ("aiokafka",):
        library = logging.getLogger(name)
        if not any(isinstance(h, logging.NullHandler) for h in library.handlers):
            library.addHandler(logging.NullHandler())


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)


def run_service(make: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `make(stop)` until it returns; SIGINT and SIGTERM set `stop`, so the service ends cleanly (flushes,
    commits) instead of dying mid-batch. Under `tokenmeter up` the loop also touches its heartbeat file
    (tokenmeter/heartbeat.py)."""
    import asyncio

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        path = heartbeat_path()  # set by `tokenmeter up`: its liveness probe sees a loop that stopped turning
        beating = asyncio.create_task(beat(path)) if path is not None else None
        try:
            await make(stop)
        finally:
            if beating is not None:
                beating.cancel()

    asyncio.run(main())


def time_option(value: str | None, option: str) -> datetime | None:
    """A command line time: ISO 8601 / RFC 3339 (`Z` and offsets as Python 3.11 reads them; a date alone is its
    midnight; no offset means UTC). None when not given; a clear click error naming `option` when unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 / RFC 3339 time (e.g. 2026-11-01 or "
                                 "2026-11-01T08:00Z)", param_hint=option) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
