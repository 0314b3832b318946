"""`tokenmeter reopen --month M --by WHO --reason WHY`: the month close's other half, restating a closed month.

Nothing is deleted: the month's directory (`charges.parquet`, `close.json`, untouched) moves to
`<closes>/.reopened/<M>-<UTC stamp>/` with a `reopen.json` beside them (who, when, why, and which re-open took it
along), so every earlier close of M stays readable and listed (`reopen_history`, `tokenmeter close --list`).

A later closed month that booked corrections of M holds M's late changes; re-opening M alone would read M net of
them (fin26) and `close` would refuse M until that month is re-opened too (walk25). So `reopen` refuses, naming
those months, unless `cascade`: then it re-opens them as well, latest first, each archived and recorded the same
way, and the way back is to close them again oldest first. Re-opening reads no warehouse: files only, under the
closes directory's lock, so it works while `tokenmeter up` runs and never interleaves with a `close`.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from warehouse.backends import WarehouseError
from warehouse.month_close import closed_months, closes_lock, one_line, read_record

ARCHIVE = ".reopened"  # not a month name, so `closed_months` (<closes>/*/close.json) never reads what is in it
RECORD = "reopen.json"


def booking_later(closed: dict[str, dict[str, Any]], month: str) -> list[str]:
    """The closed months after `month` that booked corrections of it, or of a month in that list (re-opening one of
    them alone would leave the same problem one month on), oldest first."""
    chosen = {month}
    while True:
        more = {later for later, info in closed.items() if later not in chosen
                and chosen & set(info.get("corrections_booked", []))}
        if not more:
            return sorted(chosen - {month})
        chosen |= more


def reopen_month(directory: Path, month: str, *, reopened_by: str, reason: str, cascade: bool = False,
                 now: datetime | None = None) -> list[dict[str, Any]]:
    """Re-open closed month `month` (and with `cascade` the later closed months that booked its corrections);
    returns what was re-opened, latest first: the archived close.json plus who, when, why and where it is kept."""
    from warehouse.export import month_bounds

    _, end = month_bounds(month)
    month = month.strip()
    reopened_by, reason = one_line(reopened_by, "--by"), one_line(reason, "--reason")
    if not reopened_by:
        raise WarehouseError("give --by: who re-opens the month (it is kept in the close's record)")
    if not reason:
        raise WarehouseError("give --reason: why the month is re-opened (it is kept in the close's record)")
    now = now or datetime.now(timezone.utc)
    if end > now:
        raise WarehouseError(f"month {month} has not ended yet (it ends {end:%Y-%m-%d} UTC): it cannot be closed, "
                             f"so there is nothing to re-open")
    with closes_lock(directory):
        closed = closed_months(directory)
        if month not in closed:
            earlier = [r for r in reopen_history(directory) if r["month"] == month]
            last = (f"; it was re-opened {earlier[-1]['reopened_at']} by {earlier[-1]['reopened_by']}"
                    if earlier else "")
            booked = booking_later(closed, month)  # re-opened by hand (its directory removed) after they booked it
            hint = (f"; closed month {', '.join(booked)} booked corrections of it: re-open {booked[-1]} (latest "
                    f"first) before closing {month} again" if booked else "")
            raise WarehouseError(f"month {month} is not closed{last} (closed months: "
                                 f"{', '.join(sorted(closed)) or 'none'}){hint}")
        later = booking_later(closed, month)
        if later and not cascade:
            raise WarehouseError(
                f"closed month {', '.join(later)} booked corrections of {month} (its late changes are counted "
                f"there): re-opened alone, {month} could not be closed again without counting them twice; give "
                f"--cascade to re-open {', '.join(later)} too (latest first), then close {month} and "
                f"{', '.join(later)} again, oldest first")
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        record = {"reopened_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "reopened_by": reopened_by, "reason": reason}
        return [_archive(directory, m, closed[m], stamp, dict(record, month=m, reopened_with=month if m != month
                                                                   else ""))
                for m in sorted([month, *later], reverse=True)]


def _archive(directory: Path, month: str, close: dict[str, Any], stamp: str,
             record: dict[str, Any]) -> dict[str, Any]:
    """Move `month`'s close aside with its re-open record; the month is open once the rename is done."""
    archive = directory / ARCHIVE
    archive.mkdir(exist_ok=True)
    target, n = archive / f"{month}-{stamp}", 1
    while target.exists():  # re-opened twice within a second (a close in between)
        n += 1
        target = archive / f"{month}-{stamp}-{n}"
    source = directory / month
    # The record first, inside the still-closed month: a crash before the rename leaves the month closed (a stray
    # reopen.json that the next re-open overwrites), never an archived close without who and why.
    (source / f"{RECORD}.tmp").write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    os.replace(source / f"{RECORD}.tmp", source / RECORD)
    os.rename(source, target)
    return dict(record, close=close, archived=str(target.relative_to(directory)))


def reopen_history(directory: Path | None) -> list[dict[str, Any]]:
    """Every re-opened close, by month then time: its re-open record with the close it undid (`close`) and the
    archive (`archived`, relative to `directory`)."""
    if directory is None or not (directory / ARCHIVE).is_dir():
        return []
    found = []
    for path in (directory / ARCHIVE).glob(f"*/{RECORD}"):
        close = path.parent / "close.json"
        found.append(dict(read_record(path, "re-open"), archived=str(path.parent.relative_to(directory)),
                          close=read_record(close, "close") if close.exists() else {}))
    return sorted(found, key=lambda r: (r["month"], r["reopened_at"], r["archived"]))
