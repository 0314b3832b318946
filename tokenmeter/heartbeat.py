"""A service's event loop says it is turning by touching a file (`tokenmeter up` reads it).

The worker, the dashboard and the demo inbox answer a health URL, so `up` sees them hung when their event loop
blocks (app.child_liveness). The loader, the anomaly detector, the alert dispatcher, the finance watch and the demo
traffic serve nothing over HTTP: a deadlock or a blocking call on their loop left them "running" forever while the
warehouse or the alerts fell behind. `up` gives each child a file in `TOKENMETER_HEARTBEAT_FILE`; every service run
through `tokenmeter.cli_support.run_service` touches it from a task on its loop every `BEAT_EVERY_S`, so a loop that
stops turning stops touching it. A file's modification time, not its content: one `utime` a second costs nothing and
needs no reader of ours in the child.

This is the supervisor's protocol with its children, not a user setting (not in Settings): outside `up` the variable
is unset and nothing beats, except where docker-compose.yml sets it for the roles without an HTTP probe, whose
healthcheck reads the file's age the same way."""

from __future__ import annotations

import os
from pathlib import Path

HEARTBEAT_FILE_ENV = "TOKENMETER_HEARTBEAT_FILE"
BEAT_EVERY_S = 1.0


def touch(path: Path) -> None:
    """Set the file's modification time to now, creating it if needed; an unwritable path is ignored (a read-only
    disk must not stop the service whose liveness it reports: the supervisor then sees no fresh beat, i.e. a child
    that beat before is called hung, one that never could is never called so)."""
    try:
        os.utime(path)
    except FileNotFoundError:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        except OSError:
            pass
    except OSError:
        pass


async def beat(path: Path, every_s: float = BEAT_EVERY_S) -> None:
    """Touch `path` now and every `every_s` until cancelled."""
    import asyncio  # here: `up` and every command line import this module; only a running service's loop beats

    while True:
        touch(path)
        await asyncio.sleep(every_s)


def heartbeat_path() -> Path | None:
    """The file `up` asked this process to touch, or None."""
    value = os.environ.get(HEARTBEAT_FILE_ENV, "").strip()
    return Path(value) if value else None
