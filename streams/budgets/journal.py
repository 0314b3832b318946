"""The hold journal: each hold's log record (holds.hold_log_record) appended to a local file before the
reservation is answered, beside its copy on `tokenmeter.budget-hold-log` that the loader stores in the warehouse.

Why a file as well: the loader stores a hold's log record about a second after the admission, and the embedded
broker keeps everything in memory, so a broker loss takes the log records of the last second or two with it, the
very holds whose usage it took too (measured in the chaos soak: usage acknowledged then lost let the bill pass a
hard limit). A line written to the data dir survives a SIGKILL of any process (the page cache is the kernel's);
`tokenmeter budget rebuild` reads the journal of the last hours together with the warehouse's `budget_holds`.
Files are per UTC hour (`<data_dir>/hold-journal/<YYYYmmddHH>-<pid>.jsonl`); those older than KEEP_HOURS go when
a new hour starts. With a replicated Kafka cluster the journal is only a second copy.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any, Iterable

import orjson

log = logging.getLogger("tokenmeter.reservations")
KEEP_HOURS = 3  # the loader stores hold log records within seconds; hours cover a loader that was down a while
DIRECTORY = "hold-journal"


def _hour(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y%m%d%H")


class HoldJournal:
    def __init__(self, data_dir: Path | str):
        self.directory = Path(data_dir) / DIRECTORY
        self._file: IO[bytes] | None = None
        self._hour = ""
        self._hour_number = -1
        self.failed = 0

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """One line per record, written through to the kernel (no fsync: a process kill must not lose it, a power
        loss may). A failure is logged and counted, never raised: the broker copy is still written."""
        try:
            hour = int(time.time()) // 3600  # the hour's number: no date formatting per line
            if hour != self._hour_number:
                self._rotate(datetime.fromtimestamp(hour * 3600, timezone.utc))
                self._hour_number = hour
            assert self._file is not None
            self._file.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
            self._file.flush()
        except OSError as exc:
            self.failed += 1
            log.warning("hold journal not written (%s): a broker loss could forget these holds", exc)

    def _rotate(self, now: datetime) -> None:
        if self._file is not None:
            self._file.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._hour = _hour(now)
        path = self.directory / f"{self._hour}-{os.getpid()}.jsonl"
        torn = False
        if path.exists() and path.stat().st_size > 0:
            with open(path, "rb") as existing:
                existing.seek(-1, os.SEEK_END)
                torn = existing.read(1) != b"\n"
        self._file = open(path, "ab", buffering=0)
        if torn:  # a process of the same pid killed mid-line: the next record starts on a line of its own
            self._file.write(b"\n")
        oldest = _hour(now - timedelta(hours=KEEP_HOURS))
        for path in self.directory.glob("*.jsonl"):
            if path.name[:10] < oldest:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._hour_number = -1  # an append after close opens the file again


def read_journal(data_dir: Path | str) -> list[dict[str, Any]]:
    """Every record of the journal files (of every worker that wrote to this data dir); torn or foreign lines
    (a process killed mid-write) are skipped."""
    out: list[dict[str, Any]] = []
    directory = Path(data_dir) / DIRECTORY
    for path in sorted(directory.glob("*.jsonl")) if directory.is_dir() else []:
        try:
            lines = path.read_bytes().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict):
                out.append(record)
    return out


__all__ = ["HoldJournal", "read_journal"]
