"""Month close: `tokenmeter close --month 2026-11` freezes a month's charges; later events, re-prices and
provider corrections for it become correction lines in the first open month after it.

A close writes `<data_dir>/closes/<month>/charges.parquet` (every charge of the month at the finest grain:
day, provider, model, org, team, project, user, api_key, feature, the whole tag map, priced part; plus the
corrections of earlier closed months booked into it) and `close.json` (who, when, totals, the snapshot's
sha256). Files, not warehouse tables, so closing works while `tokenmeter up` owns the warehouse.

Reading a month (`month_charges`):
- a closed month is its snapshot, cut to the asked grouping: its exports are byte-for-byte the same forever;
- an open month is its live charges plus, for every closed month whose first open month it is, a correction
  per charge: live - snapshot - corrections already booked in later closed months (non-zero only). Corrections
  keep their original day (FOCUS ChargeClass "Correction", ChargePeriod in the corrected month).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from warehouse.backends import WarehouseError
from warehouse.charges import charges
from warehouse.closed_finance import changed_since_the_close
from warehouse.showback import TAG_PREFIX, is_tag

GRAIN = ("org", "team", "project", "user", "api_key", "feature")
KEY = ("day", "provider", "model", *GRAIN, "tags_json", "part")
MONEY = pa.decimal128(38, 12)
SCHEMA = pa.schema([("day", pa.timestamp("s", tz="UTC")), ("provider", pa.string()), ("model", pa.string()),
                    *[(d, pa.string()) for d in GRAIN], ("tags_json", pa.string()), ("part", pa.string()),
                    ("quantity", pa.int64()), ("cost", MONEY), ("events", pa.int64()),
                    ("unpriced_events", pa.int64()), ("corrects", pa.string())])


class NotKeptByTheClose(WarehouseError, ValueError):
    """A closed month asked for by a dimension its close did not keep: the caller's choice to change (the dashboard
    API answers 400, hostile32; it answered 500 as if the books were damaged), a WarehouseError for the CLI."""


def closes_dir(settings: Any) -> Path:
    return Path(settings.data_dir).resolve() / "closes"


LOCK = ".lock"  # in the closes directory: `close` and `reopen` hold it while they read and change closed months


@contextmanager
def closes_lock(directory: Path) -> Iterator[None]:
    """One `close`/`reopen` at a time on `directory` (threads and processes alike: flock is per open file, and
    the kernel drops it when the holder dies, so a crash leaves no stale lock). Two closes of one month at once
    both passed the "already closed" check and both reported success (reopen26)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK, "ab") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # waits for the other one: a close takes seconds
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def month_of(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


def next_month(month: str) -> str:
    year, number = int(month[:4]), int(month[5:])
    return f"{year + number // 12:04d}-{number % 12 + 1:02d}"


def closed_months(directory: Path | None) -> dict[str, dict[str, Any]]:
    """month -> its close.json, for every closed month."""
    if directory is None or not directory.is_dir():
        return {}
    found = {}
    for path in sorted(directory.glob("*/close.json")):
        found[path.parent.name] = read_record(path, "close")
    return found


def read_record(path: Path, kind: str) -> dict[str, Any]:
    """A close's (or re-open's) JSON record. One cut short or edited into something else is named with its path:
    every read of the closes goes through here, and orjson's error alone (a traceback) did not say which file."""
    try:
        record = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise WarehouseError(f"{path} is not a {kind} record (not JSON: {exc}); restore it from a backup") from None
    if not isinstance(record, dict):
        raise WarehouseError(f"{path} is not a {kind} record (a JSON {type(record).__name__.replace('list', 'array')}"
                             f", not an object); restore it from a backup")
    return record


def first_open_after(month: str, closed: dict[str, Any]) -> str:
    candidate = next_month(month)
    while candidate in closed:
        candidate = next_month(candidate)
    return candidate


def _snapshot(directory: Path, month: str) -> list[dict[str, Any]]:
    return snapshot_table(directory, month).to_pylist()


def snapshot_table(directory: Path, month: str, columns: list[str] | None = None) -> pa.Table:
    """A closed month's charges.parquet, checked against the sha256 its close.json recorded: a snapshot changed
    after the close is refused (the server's books, as a changed kept finance file), never read as the month's
    books. The bytes are read once, so what is hashed is what is read. Closes that recorded no sha256 are read."""
    path = directory / month / "charges.parquet"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WarehouseError(f"cannot read {path}, the charges {month} was closed with: {exc.strerror}") from None
    recorded = read_record(directory / month / "close.json", "close").get("sha256")
    digest = hashlib.sha256(data).hexdigest()
    if recorded is not None and digest != recorded:
        raise WarehouseError(changed_since_the_close(
            f"charges.parquet of the close of {month}", digest, recorded,
            "restore it from a backup, or re-open and close the month to snapshot it again"))
    return pq.read_table(pa.BufferReader(data), columns=columns)


def _utc(day: datetime) -> datetime:
    return day.astimezone(timezone.utc) if day.tzinfo else day.replace(tzinfo=timezone.utc)


def _key(row: dict[str, Any]) -> tuple:
    day = _utc(row["day"])
    return (day, row["provider"], row["model"], *[str(row.get(d) or "") for d in GRAIN],
            row.get("tags_json") or "{}", row["part"])


def _live(wh, start: datetime, end: datetime) -> list[dict[str, Any]]:
    return charges(wh, list(GRAIN), start, end, by_day=True, with_tags=True)


def _corrections(wh, directory: Path, month: str, closed: dict[str, Any]) -> list[dict[str, Any]]:
    """Pending corrections of closed month `month`: live - snapshot - corrections booked since, per charge."""
    start = datetime(int(month[:4]), int(month[5:]), 1, tzinfo=timezone.utc)
    end = (start + timedelta(days=32)).replace(day=1)
    balance: dict[tuple, list] = {}

    def add(row: dict[str, Any], sign: int) -> None:
        sums = balance.setdefault(_key(row), [0, Decimal(0), 0, 0])
        sums[0] += sign * int(row["quantity"])
        sums[1] += sign * Decimal(row["cost"])
        sums[2] += sign * int(row["events"])
        sums[3] += sign * int(row["unpriced_events"])

    for row in _live(wh, start, end):
        add(row, 1)
    for row in _snapshot(directory, month):
        if not row["corrects"]:
            add(row, -1)
    for later in closed:
        if later > month:
            for row in _snapshot(directory, later):
                if row["corrects"] == month:
                    add(row, -1)
    out = []
    for key, (quantity, cost, events, unpriced) in sorted(balance.items()):
        if quantity or cost or events or unpriced:
            row = dict(zip(KEY, key))
            row.update(quantity=quantity, cost=cost, events=events, unpriced_events=unpriced, corrects=month)
            out.append(row)
    return out


def _frozen_and_corrections(wh, directory: Path | None, month: str, start: datetime,
                            end: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the snapshot if `month` is closed else [], the corrections it carries or will carry)."""
    closed = closed_months(directory)
    if month in closed:
        return _snapshot(directory, month), []
    corrections = []
    for earlier in corrected_months(directory, month):
        corrections += _corrections(wh, directory, earlier, closed)
    return [], corrections


def _month_rows(wh, directory: Path | None, month: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The finest-grain rows of a month: its snapshot if closed, else live charges plus corrections."""
    if month in closed_months(directory):
        return _snapshot(directory, month)
    _, corrections = _frozen_and_corrections(wh, directory, month, start, end)
    return [dict(r, corrects="") for r in _live(wh, start, end)] + corrections


def corrected_months(directory: Path | None, month: str) -> list[str]:
    """The closed months whose corrections `month` carries (it is their first open month); [] if it is closed."""
    closed = closed_months(directory)
    if month in closed:
        return []
    return [m for m in sorted(closed) if m < month and first_open_after(m, closed) == month]


def whole_month(since: datetime, until: datetime) -> str | None:
    if (since.day, since.hour, since.minute, since.second, since.microsecond) != (1, 0, 0, 0, 0):
        return None
    return month_of(since) if (since + timedelta(days=32)).replace(day=1) == until else None


def booked_later(directory: Path | None, month: str) -> list[dict[str, Any]]:
    """The corrections of `month` that later closed months froze (finest grain), while `month` is open: re-opened
    by hand (its directory removed) after a later close booked its late changes. Those are already counted there."""
    closed = closed_months(directory)
    if month in closed:
        return []
    return [dict(row, booked_in=later) for later, info in sorted(closed.items())
            if later > month and month in info.get("corrections_booked", [])
            for row in _snapshot(directory, later) if row["corrects"] == month]


def reopened_note(directory: Path | None, month: str) -> str:
    """What a re-opened month's numbers leave out, in words ('' when nothing): the late changes a later close booked."""
    booked = booked_later(directory, month)
    if not booked:
        return ""
    later = ", ".join(sorted({row["booked_in"] for row in booked}))
    total = sum((Decimal(row["cost"]) for row in booked), Decimal("0E-12"))
    return (f"{month} is open again, but closed month {later} booked {total:f} USD of its late changes as corrections: "
            f"they are counted there, not in {month}'s numbers here; to restate {month}, re-open {later} too "
            f"(`tokenmeter reopen`, latest first) and close {month} first")


def _cut(rows: list[dict[str, Any]], dims: list[str], by_day: bool, sign: int = 1,
         sums: dict[tuple, list] | None = None) -> dict[tuple, list]:
    """Finest-grain rows summed to (day?, provider, model, dims, part, corrects) -> [quantity, cost, events,
    unpriced_events], `sign` times each row, into `sums`."""
    sums = {} if sums is None else sums
    tagged = any(is_tag(d) for d in dims)
    for row in rows:
        tags = orjson.loads(row.get("tags_json") or "{}") if tagged else {}  # parsed only when a tag is asked
        values = tuple((tags.get(d[len(TAG_PREFIX):], "") if is_tag(d) else str(row.get(d) or "")) for d in dims)
        day = _key(row)[0]
        key = ((day,) if by_day else ()) + (row["provider"], row["model"]) + values + (row["part"], row["corrects"])
        _add(sums, key, row, sign)
    return sums


def _add(sums: dict[tuple, list], key: tuple, row: dict[str, Any], sign: int = 1) -> None:
    """`sign` times the row's quantity, cost, events and unpriced events onto `sums[key]`."""
    total = sums.setdefault(key, [0, Decimal(0), 0, 0])
    total[0] += sign * int(row["quantity"])
    total[1] += sign * Decimal(row["cost"])
    total[2] += sign * int(row["events"])
    total[3] += sign * int(row["unpriced_events"])


def _net_of_booked(live: list[dict[str, Any]], booked: list[dict[str, Any]], month: str, dims: list[str],
                   by_day: bool) -> list[dict[str, Any]]:
    """A re-opened month's live charges less the corrections of it that later closes froze, so the month and those
    closes together count each late change once (fin26; `close` refuses such a month until they are re-opened)."""
    unknown = [d for d in dims if not (is_tag(d) or d in GRAIN)]
    if unknown:
        later = sorted({row["booked_in"] for row in booked})
        raise WarehouseError(
            f"closed month {', '.join(later)} booked corrections of {month} (re-opened), and those keep only "
            f"{', '.join(GRAIN)} and tags: cannot group {month} by {', '.join(unknown)} without counting them twice; "
            f"re-open {', '.join(later)} too, or group by {', '.join(GRAIN)} or tags")
    names = (["day"] if by_day else []) + ["provider", "model", *dims, "part", "corrects"]
    sums: dict[tuple, list] = {}
    for row in live:
        key = tuple((_utc(row["day"]) if name == "day" else str(row.get(name) or "")) for name in names)
        _add(sums, key, row)
    _cut([dict(r, corrects="") for r in booked], dims, by_day, -1, sums)
    return [dict(zip(names, key), quantity=q, cost=c, events=e, unpriced_events=u)
            for key, (q, c, e, u) in sums.items() if q or c or e or u]


def month_charges(wh, directory: Path | None, month: str, start: datetime, end: datetime, dims: list[str],
                  by_day: bool = True, corrections: bool = True) -> list[dict[str, Any]]:
    """The month's charges (live or frozen, plus corrections unless `corrections` is false) grouped by day?,
    provider, model, `dims`, part, corrects (the month a correction is for, '' otherwise); the same shape as
    `charges`. An open month that later closes booked corrections of is read net of them (`booked_later`)."""
    if month in closed_months(directory):
        frozen, live = _snapshot(directory, month), []
        if not corrections:
            frozen = [row for row in frozen if not row["corrects"]]
    else:
        frozen = _frozen_and_corrections(wh, directory, month, start, end)[1] if corrections else []
        live = [dict(r, corrects="") for r in charges(wh, dims, start, end, by_day=by_day)]
        booked = booked_later(directory, month)
        if booked:
            live = _net_of_booked(live, booked, month, dims, by_day)
    unknown = [d for d in dims if not (is_tag(d) or d in GRAIN)]
    if frozen and unknown:
        if live or month not in closed_months(directory):  # walk33: an open month read as if it were closed
            corrected = sorted({str(row["corrects"]) for row in frozen if row.get("corrects")})
            plural = "s" if len(corrected) > 1 else ""
            raise NotKeptByTheClose(f"{month} is open but books corrections of closed month{plural} "
                                    f"{', '.join(corrected)}, and closed months keep {', '.join(GRAIN)} and tags: "
                                    f"cannot group or allocate {month} by {', '.join(unknown)}")
        raise NotKeptByTheClose(f"closed months keep {', '.join(GRAIN)} and tags; cannot group or allocate "
                             f"{month} by {', '.join(unknown)}")
    sums = _cut(frozen, dims, by_day)
    names = (["day"] if by_day else []) + ["provider", "model", *dims, "part", "corrects"]
    return live + [dict(zip(names, key), quantity=q, cost=c, events=e, unpriced_events=u)
                   for key, (q, c, e, u) in sorted(sums.items(), key=lambda item: tuple(map(str, item[0])))]


def own_usage(wh, directory: Path | None, month: str, dims: list[str]) -> list[dict[str, Any]]:
    """Month `month`'s own charges (no corrections of earlier months), per provider, model, `dims` and part: the
    usage its shared cost is split by, also for its corrections booked in a later month (fin26)."""
    keys = list(dict.fromkeys(["provider", "model", *dims, "part"]))
    if month in closed_months(directory) and all(k in SCHEMA.names for k in keys):
        # A closed month without tag dimensions: summed by Arrow from the columns needed (reading the whole snapshot
        # into Python added ~0.25 CPU-s a showback of a month correcting a 20,000-event one:
        # docs/rounds/finance.md fin26)
        table = snapshot_table(directory, month,
                               columns=[*keys, "quantity", "cost", "events", "unpriced_events", "corrects"])
        table = table.filter(pc.equal(table["corrects"], ""))
        measures = ("quantity", "cost", "events", "unpriced_events")
        grouped = table.group_by(keys).aggregate([(m, "sum") for m in measures])
        return [dict({k: row[k] for k in keys}, corrects="", **{m: row[f"{m}_sum"] for m in measures})
                for row in grouped.to_pylist()]
    start = datetime(int(month[:4]), int(month[5:]), 1, tzinfo=timezone.utc)
    end = (start + timedelta(days=32)).replace(day=1)
    return month_charges(wh, directory, month, start, end, dims, by_day=False, corrections=False)


MAX_TEXT = 1_000  # --by (close, reopen) and --reason: shown on one line by close --list, the Export page and Showback


def one_line(text: str | None, option: str) -> str:
    """`text` as the record keeps it: white space (newlines, tabs) as single spaces, since every place that shows it
    is one line (a reason with a newline split its `close --list` entry in two); control characters such as a
    terminal escape, or a text longer than MAX_TEXT, refused."""
    text = " ".join((text or "").split())
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text):
        raise WarehouseError(f"{option}: control characters (a terminal escape?) are not kept; write plain text")
    if len(text) > MAX_TEXT:
        raise WarehouseError(f"{option}: {len(text):,} characters; at most {MAX_TEXT:,} (it is shown on one line)")
    return text


def close_month(wh, directory: Path, month: str, *, closed_by: str = "", now: datetime | None = None,
                allow_empty: bool = False, finance_files: tuple[Any, Any] = (None, None)) -> dict[str, Any]:
    """Freeze `month` (its live charges plus the corrections of earlier closed months it is the first open
    month of). Refuses a month that is already closed or has not ended, one whose corrections a later closed
    month booked (re-opened alone by hand; `reopen` refuses that without --cascade), one whose raw events
    retention removed (the snapshot would hold less than was metered), and one with nothing to freeze unless
    `allow_empty` (a typo such as 2026-10 would turn that month's late events into corrections: close25). Holds
    the closes directory's lock throughout (`closes_lock`). `finance_files` (cost centers, allocation; the
    settings' files) are kept with the close and every later read of the month uses them
    (warehouse/closed_finance.py); an invalid one refuses the close."""
    from warehouse.export import month_bounds

    start, end = month_bounds(month)
    month = month.strip()
    closed_by = one_line(closed_by, "--by")
    now = now or datetime.now(timezone.utc)
    if end > now:
        raise WarehouseError(f"month {month} has not ended yet (it ends {end:%Y-%m-%d} UTC); close it after that")
    with closes_lock(directory):  # the checks below and the write are one step against another close or reopen
        return _close_locked(wh, directory, month, start, end, closed_by, now, allow_empty, finance_files)


def _close_locked(wh, directory: Path, month: str, start: datetime, end: datetime, closed_by: str, now: datetime,
                  allow_empty: bool, finance_files: tuple[Any, Any]) -> dict[str, Any]:
    if month in closed_months(directory):
        raise WarehouseError(f"month {month} is already closed; later changes go to "
                             f"{first_open_after(month, closed_months(directory))} as corrections")
    # A month re-opened alone (by hand, its directory removed) whose late changes a later close already froze as
    # corrections: a new snapshot would hold them too, counted twice (walk25). `reopen` refuses this without --cascade.
    booked = sorted(later for later, info in closed_months(directory).items()
                    if later > month and month in info.get("corrections_booked", []))
    if booked:
        raise WarehouseError(
            f"closed month {', '.join(booked)} booked corrections of {month}; closing {month} again would count them "
            f"twice: re-open {', '.join(booked)} too (`tokenmeter reopen --month {booked[-1]} --cascade`, each of them "
            f"latest first) and close {month} first, then {', '.join(booked)}")
    rows = _month_rows(wh, directory, month, start, end)
    # A snapshot is all its exports read from then on: raw events gone (retention) would be frozen as less spend.
    from warehouse.finance import check_complete  # (warehouse.finance reads months through this module)

    check_complete(wh, [r for r in rows if not r["corrects"]], start, end)
    if not rows and not allow_empty:
        raise WarehouseError(
            f"month {month} has no events (and no corrections of a closed month to book): closing it would freeze "
            f"nothing and turn its late events into corrections; check the month, or give --allow-empty to close "
            f"it anyway")
    target = directory / month
    target.mkdir(parents=True, exist_ok=True)
    finance = _freeze_finance(target, finance_files)
    columns = {name: [row.get(name) for row in rows] for name in SCHEMA.names}
    columns["day"] = [_key(row)[0] for row in rows]
    columns["tags_json"] = [row.get("tags_json") or "{}" for row in rows]
    columns["cost"] = [Decimal(c) for c in columns["cost"]]
    table = pa.Table.from_pydict(columns, schema=SCHEMA)
    temporary = target / "charges.parquet.tmp"
    pq.write_table(table, temporary)
    os.replace(temporary, target / "charges.parquet")
    info = {"month": month, "closed_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "closed_by": closed_by,
            "total_usd": format(sum((Decimal(c) for c in columns["cost"]), Decimal("0E-12")), "f"),
            "events": sum(int(e) for e in columns["events"]), "charges": len(rows),
            "corrections_booked": sorted({r["corrects"] for r in rows if r["corrects"]}),
            "sha256": hashlib.sha256((target / "charges.parquet").read_bytes()).hexdigest(), "finance": finance}
    (target / "close.json.tmp").write_bytes(orjson.dumps(info, option=orjson.OPT_INDENT_2))
    os.replace(target / "close.json.tmp", target / "close.json")  # the close exists once this file does
    return info


def _freeze_finance(target: Path, finance_files: tuple[Any, Any]) -> dict[str, Any]:
    """Copies of the finance files into the month's directory, checked the way every read will load them."""
    from warehouse.closed_finance import freeze_finance_files, remove_copies
    from warehouse.finance import load_finance

    try:
        load_finance(*finance_files)  # the user's files, named in the errors
        record, copies = freeze_finance_files(target, finance_files)
        load_finance(*copies)  # (a file edited between the two reads)
    except WarehouseError as exc:
        remove_copies(target)
        raise WarehouseError(f"{exc}\n(the month is not closed: its finance files must be valid)") from None
    return record
