"""ISO-8601 text for the moments tokenmeter writes: one formatter, so the same moment is the same text in the budget
ledger's JSON, the price references of priced events, the warehouse's price history and the finance exports (which
must stay reproducible byte for byte).

    iso_utc(datetime(2026, 3, 1, 13, 30, tzinfo=timezone(timedelta(hours=1))))  -> "2026-03-01T12:30:00Z"
    iso_utc(moment, "seconds")                                                  -> whole seconds, "...:00Z"
    iso_effective(datetime(2024, 10, 2, tzinfo=timezone.utc))                   -> "2024-10-02"
    iso_effective(datetime(2024, 10, 2, 12, tzinfo=timezone.utc))               -> "2024-10-02T12:00:00+00:00"

Parsing needs no helper: on Python 3.11 `datetime.fromisoformat` reads the "Z" suffix itself.

For people (alert summaries, Slack fields), not for machine fields:

    people_utc("2026-11-26T04:00:07.512345Z")                                   -> "2026-11-26 04:00 UTC"
    people_utc("2026-11-26T04:00:07.512345Z", seconds=True)                     -> "2026-11-26 04:00:07 UTC"
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, overload


@overload
def iso_utc(moment: datetime, timespec: str = "auto") -> str: ...
@overload
def iso_utc(moment: None, timespec: str = "auto") -> None: ...


def iso_utc(moment: datetime | None, timespec: str = "auto") -> str | None:
    """The moment in UTC with a "Z" suffix (None stays None). `timespec` as in `datetime.isoformat`: "auto" writes
    microseconds only when there are some, "seconds" drops them. A naive moment is taken as local time (as
    `datetime.astimezone` does)."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


def iso_effective(moment: Any) -> str | None:
    """When a price version takes effect, as priced events store it in `price.effective_from`: the day alone
    when it starts at midnight (catalogs give most as dates), else the full moment with its own offset. None
    stays None; anything but a datetime (a stored text) is returned as text."""
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        return str(moment)
    return moment.date().isoformat() if moment.time() == datetime.min.time() else moment.isoformat()


def people_utc(moment: datetime | str | None, seconds: bool = False) -> str | None:
    """A moment as on-call people read it in a text, to the minute in UTC ("2026-11-26 04:00 UTC"), as the dashboard
    writes times; records keep the ISO text. An ISO text is read first; text that is not a moment is returned as it
    is (a hand-written record), None stays None."""
    if moment is None or moment == "":
        return None
    if not isinstance(moment, datetime):
        try:
            moment = datetime.fromisoformat(str(moment))
        except ValueError:
            return str(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    # seconds for "is it still sending?" views (a source's last event), where a minute hides a short silence
    return f"{moment.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC" if seconds \
        else f"{moment.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC"
