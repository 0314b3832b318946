"""The Kafka bridge's pending-batch records, one per source partition, in a directory its group's members share.

Why per partition: the consumer group moves partitions between members (a kill, a join, a leave). The member given
a partition must find the in-doubt batch the partition's previous owner was writing, whoever that was, so the record
lives with the partition, not with the process (a file per process was the limit docs/rounds/collectors.md "Judged, not
built" described: a survivor given a killed member's partition wrote its batch twice).

Why a lock per partition (fcntl.flock on `<topic>@<partition>.lock`): a partition's record is read and written only by
the member holding its lock. The group moves a partition when its owner is dead (the kernel released the lock) or
has given it up (the bridge releases it after its in-flight batch is acknowledged and committed). A member that is
slow to give it up (hung past the group's rebalance timeout, still producing) keeps the lock, and the new owner waits
for it rather than read back a batch still being written, or overwrite the record the other is using.

A batch's record, written before anything of it is produced (collectors.delivery): per source partition its offset
range [start, end) and the output positions (lower bounds of where the batch's messages land). The same positions
are written to each partition of the batch; recovering several partitions reads back from the lowest of them.

The single-process layout before this (one `state_path` JSON file holding every partition's range) is migrated into
the directory at start, under the directory's own lock, and removed.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Any

import orjson

from collectors.delivery import Positions, positions_from_json, write_json_atomically

log = logging.getLogger("tokenmeter.collect.kafka")

Partition = tuple[str, int]  # (topic, partition)
Ranges = dict[Partition, tuple[int, int]]
LOCK_POLL_S = 0.05  # while another member finishes its batch of a partition given to us
WAIT_WARNING_S = 5.0


def directory_for(state_path: Path) -> Path:
    """`<data_dir>/collect-kafka/<group>.<topic>.json` (the old per-process file) -> `...<group>.<topic>.pending/`."""
    return state_path.with_name(state_path.stem + ".pending")


class PendingRecords:
    def __init__(self, state_path: Path):
        self.legacy = state_path
        self.directory = directory_for(state_path)
        self._locks: dict[Partition, int] = {}  # partitions this member holds -> lock file descriptor

    # Ownership -------------------------------------------------------------------------------------------------
    def held(self) -> set[Partition]:
        return set(self._locks)

    async def take(self, partitions: set[Partition]) -> tuple[Ranges, dict[Partition, Positions]]:
        """Lock `partitions` (waiting while a previous owner still holds one) and read their records."""
        self.directory.mkdir(parents=True, exist_ok=True)
        ranges: Ranges = {}
        positions: dict[Partition, Positions] = {}
        for key in sorted(partitions - set(self._locks)):
            self._locks[key] = await self._lock(key)
            found = self._read(key)
            if found is not None:
                ranges[key], positions[key] = found
        return ranges, positions

    def release(self, partitions: set[Partition]) -> None:
        for key in partitions:
            fd = self._locks.pop(key, None)
            if fd is not None:
                os.close(fd)  # closing drops the flock

    def release_all(self) -> None:
        self.release(set(self._locks))

    async def _lock(self, key: Partition) -> int:
        fd = os.open(self.directory / f"{_name(key)}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        started = time.monotonic()
        warned = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:
                    pass
                if not warned and time.monotonic() - started > WAIT_WARNING_S:
                    log.warning("partition %s@%d is still held by another member finishing its batch; waiting", *key)
                    warned = True
                await asyncio.sleep(LOCK_POLL_S)
        except BaseException:
            os.close(fd)
            raise

    # Records ---------------------------------------------------------------------------------------------------
    def save(self, ranges: Ranges, positions: Positions) -> None:
        """The batch's record, before any of it is produced: one file per source partition of the batch."""
        for key in ranges:
            if key not in self._locks:  # only the holder writes (a bug here would be a silent duplicate later)
                raise RuntimeError(f"pending record of {key} written without holding its lock")
        if len(ranges) == 1:
            [(key, (start, end))] = ranges.items()
            write_json_atomically(self.directory / f"{_name(key)}.json", {
                "topic": key[0], "partition": key[1], "start": start, "end": end, "positions": positions})
            return
        # Several partitions: each file written and fsynced, renamed, then ONE fsync of the directory for all the
        # renames (a crash leaves each file old or new; the directory's fsync makes them durable before any send).
        for key, (start, end) in ranges.items():
            tmp = self.directory / f"{_name(key)}.json.tmp"
            with open(tmp, "wb") as handle:
                handle.write(orjson.dumps({"topic": key[0], "partition": key[1], "start": start, "end": end,
                                           "positions": positions}, option=orjson.OPT_NON_STR_KEYS))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.directory / f"{_name(key)}.json")
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _read(self, key: Partition) -> tuple[tuple[int, int], Positions] | None:
        path = self.directory / f"{_name(key)}.json"
        try:
            raw = orjson.loads(path.read_bytes())
            return (int(raw["start"]), int(raw["end"])), positions_from_json(raw["positions"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"pending record {path} is unreadable ({exc}); fix or delete it") from None

    def migrate_legacy(self) -> None:
        """Split the single-process state file (every partition's range, one set of positions) into the directory.
        Under the directory's lock, so members starting together do it once; the file is removed afterwards."""
        if not self.legacy.exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / ".migrate.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # at start, before the event loop serves anything: blocking is fine
            try:
                raw: Any = orjson.loads(self.legacy.read_bytes())
            except FileNotFoundError:
                return  # another member migrated it
            try:
                ranges = {(r["topic"], int(r["partition"])): (int(r["start"]), int(r["end"])) for r in raw["ranges"]}
                positions = positions_from_json(raw["positions"])
            except (ValueError, KeyError, TypeError) as exc:
                raise SystemExit(f"state file {self.legacy} is unreadable ({exc}); fix or delete it") from None
            for key, (start, end) in ranges.items():
                write_json_atomically(self.directory / f"{_name(key)}.json", {
                    "topic": key[0], "partition": key[1], "start": start, "end": end, "positions": positions})
            self.legacy.unlink()
            log.info("pending record %s moved to %s (one file per partition)", self.legacy, self.directory)
        finally:
            os.close(fd)


def lowest(positions: list[Positions]) -> Positions:
    """Per output partition the lowest recorded position: reading back from there covers every batch in doubt."""
    out: Positions = {}
    for found in positions:
        for topic, parts in found.items():
            mine = out.setdefault(topic, {})
            for partition, offset in parts.items():
                mine[partition] = min(offset, mine.get(partition, offset))
    return out


def _name(key: Partition) -> str:
    return f"{key[0]}@{key[1]}"  # Kafka topic names are [A-Za-z0-9._-]: safe in a file name
