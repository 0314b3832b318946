"""The finance files a month was closed with, kept beside its snapshot.

Cost centers and allocation rules are applied when a month is read, not when its charges are frozen, so a re-org
after a close (a team moved to another cost center, a shared cost split another way) rewrote the closed month's
FOCUS file, CSV and showback: "byte for byte the same forever" held only while nobody edited the finance files.
`tokenmeter close` now copies the files in force (`TOKENMETER_COST_CENTERS_FILE`, `TOKENMETER_ALLOCATION_FILE`)
into the month's directory and records their sha256 in close.json (`finance`); every read of the closed month
uses those copies. A month closed without finance files is closed unmapped and unallocated, as its exports were
then. Closes written before this kept no record (no `finance` in close.json) and read today's files, as before.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from warehouse.backends import WarehouseError

KINDS = ("cost_centers", "allocation")
COPIES = {"cost_centers": "cost_centers.yaml", "allocation": "allocation.yaml"}


def freeze_finance_files(target: Path, files: tuple[Any, Any]) -> tuple[dict[str, Any], tuple[Path | None, ...]]:
    """Copy the finance files (cost centers, allocation; either may be None) into `target`: (the close.json record,
    the copies' paths). Each file is read once, so the copy and its sha256 are the same bytes."""
    record: dict[str, Any] = {}
    copies: list[Path | None] = []
    for kind, source in zip(KINDS, files):
        if source is None or str(source) == "":
            record[f"{kind}_file"], record[f"{kind}_sha256"] = None, None
            copies.append(None)
            continue
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise WarehouseError(f"cannot read the {kind.replace('_', '-')} file {source}: {exc.strerror}; the month "
                                 f"is not closed") from None
        copy = target / COPIES[kind]
        temporary = copy.with_suffix(".tmp")
        temporary.write_bytes(data)
        os.replace(temporary, copy)
        record[f"{kind}_file"], record[f"{kind}_sha256"] = str(source), hashlib.sha256(data).hexdigest()
        copies.append(copy)
    return record, tuple(copies)


def remove_copies(target: Path) -> None:
    for name in COPIES.values():
        (target / name).unlink(missing_ok=True)


def changed_since_the_close(file: str, digest: str, recorded: Any, advice: str) -> str:
    """The one wording of a closed month's file (current or archived close) whose bytes no longer hash to what its
    close.json recorded: the file first, both hashes, then what to do. The server's state, not a request's (the
    API answers it 500)."""
    return (f"{file} changed since the close (sha256 {digest[:12]}..., its close.json recorded "
            f"{str(recorded)[:12]}...): {advice}")


def frozen_finance_files(month_dir: Path, record: dict[str, Any]) -> tuple[Path | None, ...]:
    """The copies a close recorded, checked against their sha256: a changed copy is refused, not read."""
    copies: list[Path | None] = []
    for kind in KINDS:
        if not record.get(f"{kind}_file"):
            copies.append(None)
            continue
        copy = month_dir / COPIES[kind]
        try:
            digest = hashlib.sha256(copy.read_bytes()).hexdigest()
        except OSError as exc:
            raise WarehouseError(f"cannot read {copy.name}, the {kind.replace('_', '-')} file {month_dir.name} was "
                                 f"closed with: {exc.strerror}") from None
        if digest != record.get(f"{kind}_sha256"):
            raise WarehouseError(changed_since_the_close(
                f"{copy.name}, the {kind.replace('_', '-')} file {month_dir.name} was closed with,", digest,
                record.get(f"{kind}_sha256"), "re-open and close the month to use other finance files"))
        copies.append(copy)
    return tuple(copies)
