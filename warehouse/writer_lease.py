"""One writer per ClickHouse server: a lease the server holds (left23).

Why: a writer heals the hours a crashed insert or re-price left marked (`heal_pending_hours`: the hours' rollup rows
deleted and rebuilt from raw, the markers truncated) under a lock of its own process. A second writer on the same
server (a second loader, or `reprice` / `dedup reapply` while the loader runs) healed the loader's hours while its
INSERT was under way: an INSERT landing between the rebuild's DELETE and its INSERT ... SELECT was counted twice in
the rollups (tests/warehouse/test_writer_lease.py), and the loader's crash markers were truncated under it.

How: ClickHouse has no compare-and-set, so the lease is a claim row in `writer_lease` (migration 0021), written and
read back on the server's clock. A writer
1. reads the live claims (a heartbeat within LEASE_SECONDS, not released); another owner's: it waits for it to
   lapse or be released, up to its `wait_seconds`, then refuses naming the holder;
2. writes its claim, waits SETTLE_SECONDS and reads the claims again: the earliest live claim (claimed_at, then
   owner) holds the lease, so two writers claiming at once agree on one, which the other sees and withdraws;
3. renews it every LEASE_SECONDS / 3 from a thread; a renewal that finds another holder, or comes later than
   LEASE_SECONDS after the last (a paused process whose claim may have lapsed), marks the lease lost, and the
   writer's next insert or heal refuses (`check`).
Sound as long as a one-row INSERT becomes visible within SETTLE_SECONDS and a live holder renews within
LEASE_SECONDS: a lease, not a consensus protocol. chDB needs none (one process per path, a file lock).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any

from warehouse.backends import WarehouseError

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0  # a writer that stopped renewing (killed) frees the server after this
SETTLE_SECONDS = 1.0  # longer than a one-row INSERT takes to be visible: two claims at once see each other

_LIVE = """SELECT owner, toString(min(claimed_at)) AS claimed, toString(max(heartbeat)) AS beat,
       dateDiff('millisecond', max(heartbeat), now64(6)) / 1000 AS age_seconds
FROM writer_lease GROUP BY owner
HAVING max(released) = 0 AND max(heartbeat) > now64(6) - toIntervalMillisecond({lease_ms:UInt32})
ORDER BY min(claimed_at), owner LIMIT 1"""
_CLAIM = ("INSERT INTO writer_lease (owner, claimed_at, heartbeat, released)"
          " SELECT {owner:String}, now64(6), now64(6), 0")
# A renewal or release repeats the claim's claimed_at: a merge keeps only the owner's latest row.
_RENEW = ("INSERT INTO writer_lease (owner, claimed_at, heartbeat, released)"
          " SELECT {owner:String}, min(claimed_at), now64(6), {released:UInt8} FROM writer_lease"
          " WHERE owner = {owner:String}")


class WriterBusy(WarehouseError):
    """Another writer holds the server's writer lease."""


def describe_writer() -> str:
    """This process as a lease owner: unique, and telling an operator which process it is."""
    command = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    args = " ".join(sys.argv[1:3])
    return f"{uuid.uuid4().hex[:12]} host {socket.gethostname()} pid {os.getpid()} ({command} {args})".strip()


class WriterLease:
    def __init__(self, backend: Any, owner: str | None = None, seconds: float | None = None):
        self.backend = backend
        self.owner = owner or describe_writer()
        self.seconds = seconds or LEASE_SECONDS
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_renewal = 0.0

    def holder(self) -> dict[str, Any] | None:
        rows = self.backend.query_arrow(_LIVE, {"lease_ms": int(self.seconds * 1000)}).to_pylist()
        return rows[0] if rows else None

    def acquire(self, wait_seconds: float = 0.0) -> "WriterLease":
        deadline = time.monotonic() + max(wait_seconds, 0.0)
        warned = False
        while True:
            holder = self.holder()
            if holder is None or holder["owner"] == self.owner:
                self.backend.command(_CLAIM, {"owner": self.owner})
                time.sleep(SETTLE_SECONDS)  # a claim written at the same moment becomes visible
                holder = self.holder()
                if holder is not None and holder["owner"] == self.owner:
                    self._last_renewal = time.monotonic()
                    self._thread = threading.Thread(target=self._renew_loop, name="writer-lease", daemon=True)
                    self._thread.start()
                    return self
                self._write(released=1)  # an earlier claim won: withdraw ours
            if holder is not None and time.monotonic() >= deadline:
                raise WriterBusy(
                    f"another writer holds this ClickHouse server: {holder['owner']}, since {holder['claimed']} "
                    f"UTC, last heartbeat {holder['age_seconds']:.1f} s ago. One writer at a time (the loader; stop "
                    f"it for `reprice` and `dedup reapply`); a killed writer's lease lapses {self.seconds:.0f} s "
                    "after its last heartbeat")
            if holder is not None and not warned:
                log.warning("waiting for the writer lease held by %s (heartbeat %.1f s ago)", holder["owner"],
                            holder["age_seconds"])
                warned = True
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0.05)))

    def check(self) -> None:
        """Refuse to write once the lease is lost (no query: the renewal thread found out), or may be: a holder
        paused past LEASE_SECONDS since its last renewal may have been replaced, and its renewal thread only finds
        out at its next wake-up, after the paused thread may have written (load24)."""
        if self.lost is None and self._thread is not None and time.monotonic() - self._last_renewal > self.seconds:
            self.lost = f"no renewal for over {self.seconds:.0f} s: another writer may have taken over"
        if self.lost is not None:
            raise WarehouseError(f"this writer lost the server's writer lease ({self.lost}); restart it")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.lost is None:
            try:
                self._write(released=1)
            except WarehouseError as exc:  # the lease lapses by itself
                log.warning("could not release the writer lease: %s", exc)
        self.lost = self.lost or "released"

    def _write(self, released: int) -> None:
        self.backend.command(_RENEW, {"owner": self.owner, "released": released})

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            if time.monotonic() - self._last_renewal > self.seconds:
                self.lost = f"no renewal for over {self.seconds:.0f} s: another writer may have taken over"
                return
            try:
                self._write(released=0)
                holder = self.holder()
            except WarehouseError as exc:
                log.warning("writer lease renewal failed: %s", exc)
                continue  # tried again; after LEASE_SECONDS without one the lease is lost
            if holder is None or holder["owner"] != self.owner:
                self.lost = f"held by {holder['owner'] if holder else 'no one'}"
                return
            self._last_renewal = time.monotonic()
