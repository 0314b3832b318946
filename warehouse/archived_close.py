"""Export a month as a close that was later re-opened gave it: `tokenmeter export --month M --archived NAME`.

`tokenmeter reopen` moves a close aside (`<closes>/.reopened/<M>-<stamp>/`, warehouse/month_reopen.py), never
deletes it, and `close --list` names it; an auditor asking "what did we send finance for November before the
restatement?" needs that file again, in the formats `export` writes. A closed month's export reads only its frozen
snapshot (charges.parquet: its charges plus the corrections of earlier months it booked) and, for a shared cost
split by an earlier month's usage, that month's close. So the archived close is exported through a closes directory
of links: M as the archived close, every other month as it is closed now. Nothing is copied or written in the closes
directory. The snapshot's sha256 must still be the one its close recorded: a changed archive is refused, not exported.
"""

from __future__ import annotations

import hashlib
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from warehouse.backends import WarehouseError
from warehouse.closed_finance import changed_since_the_close
from warehouse.month_reopen import ARCHIVE, reopen_history


class NoSuchArchivedClose(WarehouseError):
    """The name asked for is not one of the month's archived closes (the request's fault, not the books')."""


def find_archived_close(directory: Path | None, month: str, name: str) -> dict[str, Any]:
    """The re-open record of `month`'s archived close called `name`: as `close --list` shows it
    (`.reopened/2026-11-20261206T203000Z`, with or without `closes/`) or its last part. Only names listed by
    `reopen_history` match (no path from the command line is ever opened)."""
    from warehouse.export import month_bounds, shown_argument

    month_bounds(month)  # a month that is not YYYY-MM gets export's own error, before any file is read
    month, wanted = month.strip(), name.strip().rstrip("/")
    records = [r for r in reopen_history(directory) if r["month"] == month]
    for record in records:
        if wanted in (record["archived"], f"closes/{record['archived']}", record["archived"].rsplit("/", 1)[-1]):
            return record
    listed = ", ".join(r["archived"] for r in records) or "none (tokenmeter close --list shows every archived close)"
    raise NoSuchArchivedClose(f"no archived close {shown_argument(name)} of {month}; archived closes of {month}: "
                              f"{listed}")


def check_snapshot(directory: Path, record: dict[str, Any]) -> None:
    """The archived snapshot is the one its close recorded (sha256 in close.json)."""
    snapshot = directory / record["archived"] / "charges.parquet"
    try:
        digest = hashlib.sha256(snapshot.read_bytes()).hexdigest()
    except OSError as exc:
        raise WarehouseError(f"cannot read the archived close {record['archived']}: {exc.strerror}") from None
    recorded = (record.get("close") or {}).get("sha256")
    if digest != recorded:
        raise WarehouseError(changed_since_the_close(f"charges.parquet of the archived close {record['archived']}",
                                                     digest, recorded, "not exported"))
    _check_finance_copies(directory / record["archived"], record)


def _check_finance_copies(archive: Path, record: dict[str, Any]) -> None:
    """The finance files kept with the archived close are the ones it recorded. Checked here, by the archive's own
    name: the read through the view would name the month (whose current close is another) and advise a re-close."""
    from warehouse.closed_finance import COPIES, KINDS

    finance = (record.get("close") or {}).get("finance")
    if not isinstance(finance, dict):  # closed before closes kept finance files (or damaged: the read says so)
        return
    for kind in KINDS:
        if not finance.get(f"{kind}_file"):
            continue
        try:
            digest = hashlib.sha256((archive / COPIES[kind]).read_bytes()).hexdigest()
        except OSError as exc:
            raise WarehouseError(f"cannot read {COPIES[kind]} of the archived close {record['archived']}: "
                                 f"{exc.strerror}") from None
        recorded = finance.get(f"{kind}_sha256")
        if digest != recorded:
            raise WarehouseError(changed_since_the_close(f"{COPIES[kind]} of the archived close {record['archived']}",
                                                         digest, recorded, "not exported"))


@contextmanager
def archived_close_view(directory: Path, month: str, name: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A closes directory (temporary, links only) in which `month` is closed as the archived close `name` closed it
    and every other month as it is closed now; yields it with the close's re-open record."""
    record = find_archived_close(directory, month, name)
    check_snapshot(directory, record)
    with tempfile.TemporaryDirectory(prefix="tokenmeter-archived-close-") as tmp:
        view = Path(tmp)
        for other in directory.iterdir():
            if other.name not in (ARCHIVE, record["month"]) and (other / "close.json").is_file():
                (view / other.name).symlink_to(other.resolve(), target_is_directory=True)
        (view / record["month"]).symlink_to((directory / record["archived"]).resolve(), target_is_directory=True)
        yield view, record


def archived_note(record: dict[str, Any]) -> str:
    """What the exported file is, for stderr: not the month's current books."""
    close = record.get("close") or {}
    return (f"exported {record['month']} as closed {close.get('closed_at', '?')} by {close.get('closed_by') or '?'} "
            f"({close.get('total_usd', '?')} USD), the close re-opened {record['reopened_at']} by "
            f"{record['reopened_by']}: {record['reason']}. Not the month's current books: "
            f"`tokenmeter export --month {record['month']}` gives those.")
