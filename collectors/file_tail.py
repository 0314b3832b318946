"""`tokenmeter collect file`: follow a JSON-lines log (Kong file-log, LiteLLM, APISIX file-logger, ...).

Progress is a checkpoint {inode, offset, line} written atomically (temp file + fsync + os.replace) only AFTER
Kafka acknowledged the batch's events and dead letters, so a crash (even kill -9) never loses a line. Before a
batch is produced, the checkpoint also records it as *pending* (its byte range and the output topics' positions,
see collectors.delivery). A restart that finds a pending batch reads exactly that byte range again, reads the
topics back from the recorded positions and sends only what the killed run had not written: nothing is sent
twice either. A clean stop (SIGTERM/SIGINT) finishes the batch in flight and checkpoints it.

Rotation: when PATH gets a new inode (logrotate's rename + create), the old file is read to its end first,
then the new one from 0. If we were down during a rotation, the checkpointed inode is looked up among the
files next to PATH (app.log.1, ...) and finished first. Truncation (copytruncate) restarts at 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from collectors import AttributionMapping, DialectError, parse_record
from collectors.batch import collection_paused
from collectors.delivery import (
    DeliveryGuard,
    Positions,
    deliver,
    fault_point,
    positions_from_json,
    write_json_atomically,
)
from collectors.sink import KafkaSink, log_counters_every
from tokenmeter.events import UsageEvent

log = logging.getLogger("tokenmeter.collect.file")

# Longest line read. readline() had no limit: a 2 GB line without its newline was read whole into memory at every
# poll (hostile24). Longer lines are skipped to their newline, never held, and dead-lettered with their length.
MAX_LINE_BYTES = 16 * 1024 * 1024
_SCAN_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class OverlongLine:
    """A line longer than the limit, in place of its text: its first bytes (for the dead letter) and its length."""

    head: bytes
    length: int


@dataclass
class Checkpoint:
    inode: int | None = None
    offset: int = 0
    line: int = 0  # lines consumed in this inode, so dead letters can name the line number
    # The batch being produced: {inode, start, end (byte offsets), positions {topic: {partition: offset}}}.
    pending: dict[str, Any] | None = None

    @classmethod
    def load(cls, path: Path) -> "Checkpoint":
        try:
            data = json.loads(path.read_text())
            pending = data.get("pending")
            if pending is not None:
                pending = {"inode": int(pending["inode"]), "start": int(pending["start"]), "end": int(pending["end"]),
                           "positions": positions_from_json(pending["positions"])}
            return cls(int(data["inode"]), int(data["offset"]), int(data.get("line", 0)), pending)
        except FileNotFoundError:
            return cls()
        except (ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"checkpoint {path} is unreadable ({exc}); fix or delete it to start over") from None

    def save(self, path: Path, source: Path) -> None:
        record: dict[str, Any] = {"path": str(source), "inode": self.inode, "offset": self.offset, "line": self.line}
        if self.pending is not None:
            record["pending"] = self.pending
        write_json_atomically(path, record)


@dataclass
class OpenFile:
    handle: IO[bytes]
    name: Path
    inode: int
    offset: int
    line: int
    finishing: bool = False  # a rotated-away file: read to its end, then move on
    scanned: int = 0  # an overlong line at `offset` has no newline before this offset (not scanned again)


class FileTailer:
    def __init__(self, path: Path, dialect: str | None, checkpoint_path: Path, sink: KafkaSink, *,
                 mapping: AttributionMapping | None = None, batch_lines: int = 2000, poll_interval: float = 0.25,
                 exit_at_eof: bool = False, log_every_s: float = 30.0, fetch_wait: dict[str, int] | None = None,
                 max_line_bytes: int = MAX_LINE_BYTES):
        self.path = path
        self.max_line_bytes = max_line_bytes
        self.dialect = dialect
        self.label = dialect or "auto"
        self.checkpoint_path = checkpoint_path
        self.sink = sink
        self.mapping = mapping
        self.batch_lines = batch_lines
        self.poll_interval = poll_interval
        self.exit_at_eof = exit_at_eof
        self.log_every_s = log_every_s
        self.checkpoint = Checkpoint.load(checkpoint_path)
        self.guard = DeliveryGuard(sink, fetch_wait=fetch_wait)  # Settings.fetch_wait; None: the environment's

    async def run(self, stop: asyncio.Event) -> None:
        reporter = asyncio.create_task(log_counters_every(self.sink, stop, self.log_every_s))
        current: OpenFile | None = self._open_rotated_leftover()
        said_waiting = False  # a path typed wrong would otherwise wait without a word
        try:
            while not stop.is_set():
                if current is None:
                    current = self._open_current()
                    if current is None:
                        if self.exit_at_eof:
                            break
                        if not said_waiting and not self.path.exists():
                            log.info("%s does not exist (yet); waiting for it to appear (check the path; "
                                     "--exit-at-eof reads only a file that is there)", self.path)
                            said_waiting = True
                        await _sleep(stop, self.poll_interval)
                        continue
                lines = self._read_lines(current, final=False, until=self._pending_end(current))
                if lines:
                    if not await self._ship(current, lines, stop):
                        break
                    continue
                # At the end of the file: rotated, truncated, or just nothing new yet?
                if current.finishing or self._rotated(current):
                    lines = self._read_lines(current, final=True)  # the writer may have added a last line
                    if lines:
                        if not await self._ship(current, lines, stop):
                            break
                        continue
                    log.info("finished %s (inode %s) at line %s", current.name, current.inode, current.line)
                    current.handle.close()
                    current = None
                    continue
                if self._truncated(current):
                    log.warning("%s was truncated; reading it again from the start", self.path)
                    current.offset = current.line = current.scanned = 0
                    current.handle.seek(0)
                    continue
                if self.exit_at_eof:
                    break
                await _sleep(stop, self.poll_interval)
        finally:
            if current is not None:
                current.handle.close()
            stop.set()
            await reporter
            await self.guard.stop()
            await self.sink.stop()

    # Files -------------------------------------------------------------------------------------------
    def _open_rotated_leftover(self) -> OpenFile | None:
        """After downtime spanning a rotation, the checkpointed inode lives on under another name."""
        cp = self.checkpoint
        if cp.inode is None or _inode(self.path) == cp.inode:
            return None
        for entry in os.scandir(self.path.parent):
            try:
                if entry.is_file() and entry.inode() == cp.inode and entry.stat().st_size >= cp.offset:
                    log.info("resuming rotated file %s at offset %s", entry.path, cp.offset)
                    handle = open(entry.path, "rb")
                    handle.seek(cp.offset)
                    return OpenFile(handle, Path(entry.path), cp.inode, cp.offset, cp.line, finishing=True)
            except OSError:
                continue
        log.warning("checkpointed inode %s of %s is gone; starting the current file at 0", cp.inode, self.path)
        return None

    def _open_current(self) -> OpenFile | None:
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            return None
        stat = os.fstat(handle.fileno())
        cp = self.checkpoint
        if cp.inode == stat.st_ino and stat.st_size >= cp.offset:
            offset, line = cp.offset, cp.line
        else:
            offset = line = 0
        handle.seek(offset)
        log.info("reading %s (inode %s) from offset %s", self.path, stat.st_ino, offset)
        return OpenFile(handle, self.path, stat.st_ino, offset, line)

    def _rotated(self, current: OpenFile) -> bool:
        return _inode(self.path) != current.inode

    def _truncated(self, current: OpenFile) -> bool:
        return os.fstat(current.handle.fileno()).st_size < current.offset

    def _pending_end(self, current: OpenFile) -> int | None:
        """The end of the pending batch of a killed run when `current` is where it started, else None."""
        pending = self.checkpoint.pending
        if pending and pending["inode"] == current.inode and pending["start"] == current.offset:
            return pending["end"]
        return None

    def _read_lines(self, current: OpenFile, final: bool, until: int | None = None
                    ) -> list[tuple[int, bytes | OverlongLine, int]]:
        """Up to batch_lines complete lines as (line number, text, end offset); a partial last line waits
        for its newline unless the file is final (rotated away). With `until`, exactly the lines up to that
        offset (the pending batch of a killed run, whatever batch_lines is now). A line longer than
        max_line_bytes comes as an OverlongLine once its end is known."""
        out: list[tuple[int, bytes | OverlongLine, int]] = []
        position, number = current.offset, current.line
        current.handle.seek(position)
        while (len(out) < self.batch_lines) if until is None else (position < until):
            raw: bytes | OverlongLine = current.handle.readline(self.max_line_bytes + 1)
            if len(raw) > self.max_line_bytes and not raw.endswith(b"\n"):
                end = self._overlong_end(current, position, final or until is not None)
                if end is None:
                    break  # its newline has not been written yet
                raw = OverlongLine(raw[:1024], end - position)
                size = end - position
                current.handle.seek(end)
            else:
                if not raw or (not raw.endswith(b"\n") and not final and until is None):
                    break
                size = len(raw)
            position += size
            number += 1
            out.append((number, raw, position))
        return out

    def _overlong_end(self, current: OpenFile, start: int, final: bool) -> int | None:
        """The offset after the newline of the overlong line at `start` (the file's end when final), reading in
        chunks from where an earlier poll stopped; None while its newline is still to come."""
        position = max(start + self.max_line_bytes + 1, current.scanned if current.offset == start else 0)
        current.handle.seek(position)
        while chunk := current.handle.read(_SCAN_CHUNK):
            newline = chunk.find(b"\n")
            if newline >= 0:
                return position + newline + 1
            position += len(chunk)
        if final:
            return position
        if current.offset == start:
            current.scanned = position
        return None

    def _convert(self, current: OpenFile, lines: list[tuple[int, bytes | OverlongLine, int]], events: list[UsageEvent],
                 letters: list[dict[str, Any]]) -> None:
        counters = self.sink.counters
        for number, raw, _ in lines:
            if isinstance(raw, OverlongLine):
                counters.count(self.label, "read")
                letters.append(self._letter(f"line {number}: {raw.length} bytes, longer than the "
                                            f"{self.max_line_bytes} byte limit: not read", raw.head, current, number))
                continue
            if not raw.strip():
                continue
            counters.count(self.label, "read")
            try:
                found = parse_record(raw.decode("utf-8"), self.dialect, self.mapping, encoded=True)
            except UnicodeDecodeError as exc:
                letters.append(self._letter(f"line {number}: not UTF-8 text: {exc}", raw, current, number))
                continue
            except DialectError as exc:
                letters.append(self._letter(f"line {number}: {exc}", raw, current, number))
                events.extend(exc.partial)  # the good entries of a partly bad batch line still count
                continue
            if not found:
                counters.count(self.label, "skipped")
            events.extend(found)

    # Shipping ----------------------------------------------------------------------------------------
    async def _ship(self, current: OpenFile, lines: list[tuple[int, bytes | OverlongLine, int]], stop: asyncio.Event) -> bool:
        """Parse, publish, dead-letter, then checkpoint. False when stopped before Kafka acknowledged."""
        events: list[UsageEvent] = []
        letters: list[dict[str, Any]] = []
        with collection_paused():
            self._convert(current, lines, events, letters)
        if events or letters:
            pending = self.checkpoint.pending
            resumed = (pending is not None and pending["inode"] == current.inode
                       and pending["start"] == current.offset and pending["end"] == lines[-1][2])

            def record_pending(positions: Positions) -> None:
                self.checkpoint = Checkpoint(current.inode, current.offset, current.line, {
                    "inode": current.inode, "start": current.offset, "end": lines[-1][2], "positions": positions})
                self.checkpoint.save(self.checkpoint_path, current.name)

            if resumed:
                log.info("resuming the batch a previous run was producing (%s bytes %s-%s)",
                         current.name, current.offset, lines[-1][2])
            if not await deliver(self.sink, self.guard, events, letters, label=self.label, letter_key=_letter_key,
                                 record_pending=record_pending, stopped=lambda s: _sleep(stop, s),
                                 positions=pending["positions"] if resumed else None):
                return False
            fault_point("after-ack")
        self.sink.counters.count(self.label, "rejected", len(letters))
        current.offset, current.line = lines[-1][2], lines[-1][0]
        self.checkpoint = Checkpoint(current.inode, current.offset, current.line)
        self.checkpoint.save(self.checkpoint_path, current.name)
        fault_point("after-checkpoint")
        return True

    def _letter(self, reason: str, raw: bytes, current: OpenFile, number: int) -> dict[str, Any]:
        return self.sink.letter(reason, raw.rstrip(b"\r\n"), file=str(current.name), inode=current.inode,
                                line=number, dialect=self.label)


def _letter_key(letter: dict[str, Any]) -> tuple[Any, Any]:
    return letter.get("inode"), letter.get("line")


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


async def _sleep(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep unless stopped; True when stop was requested."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
        return True
    except asyncio.TimeoutError:
        return False
