"""The dashboard's filter state, and its round trip through the URL query string (so a view can be shared)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from urllib.parse import urlencode

DEFAULT_DAYS = 7
# Up to this many days an hourly series stays readable; beyond it, one bar per day.
HOURLY_MAX_DAYS = 3
NO_TEAM_LABEL = "(no team)"
# Days a range is clamped to: the warehouse's DateTime64 range. A range reaching year 1 or 9999 was a 500 (the
# day after 9999-12-31 and "the period before" overflowed Python's dates; hostile24). No event is stored outside
# it (events are accepted from 2020 to a day ahead), so the clamped answer is the whole answer.
FIRST_DAY = date(1900, 1, 1)
LAST_DAY = date(2299, 12, 30)


def _parse_date(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(str(text)[:10])  # DatePickerRange may send "2024-05-01T00:00:00"
    except ValueError:
        return None  # a hand-edited URL falls back to the default range instead of a traceback


def _split_teams(value: str | list[str] | None) -> list[str]:
    if not value:
        return []
    items = value if isinstance(value, list) else [value]
    return [team for item in items for team in str(item).split(",") if team]


@dataclass(frozen=True)
class Filters:
    start: date
    end: date  # inclusive: the whole end day is shown
    teams: list[str] = field(default_factory=list)

    @classmethod
    def default(cls, today: date | None = None) -> "Filters":
        # Ends today (UTC) so events of "now" are always in view.
        today = today or datetime.now(timezone.utc).date()
        return cls(start=today - timedelta(days=DEFAULT_DAYS - 1), end=today)

    @classmethod
    def from_inputs(cls, start: str | None, end: str | None, teams: str | list[str] | None,
                    today: date | None = None) -> "Filters":
        default = cls.default(today)
        start_day = _parse_date(start) or default.start
        end_day = _parse_date(end) or default.end
        if end_day < start_day:
            start_day, end_day = end_day, start_day
        start_day, end_day = (min(max(day, FIRST_DAY), LAST_DAY) for day in (start_day, end_day))
        return cls(start=start_day, end=end_day, teams=_split_teams(teams))

    @classmethod
    def from_query(cls, query: dict[str, str | list[str]], today: date | None = None) -> "Filters":
        return cls.from_inputs(query.get("start"), query.get("end"), query.get("team"), today)

    @property
    def since(self) -> datetime:
        return datetime.combine(self.start, time.min, tzinfo=timezone.utc)

    @property
    def until(self) -> datetime:
        return datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=timezone.utc)

    @property
    def bucket(self) -> str:
        return "hour" if (self.end - self.start).days < HOURLY_MAX_DAYS else "day"

    def warehouse_filters(self) -> dict[str, list[str]] | None:
        return {"team": list(self.teams)} if self.teams else None

    def query_string(self) -> str:
        params = {"start": self.start.isoformat(), "end": self.end.isoformat()}
        if self.teams:
            params["team"] = ",".join(self.teams)
        return "?" + urlencode(params)
