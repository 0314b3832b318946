"""Completeness: is every source still sending? Per source (a gateway or collector dialect as events name it in
`source`, a stage that dead-letters, a provider usage/cost poller): the last event, events in the last hour
against its usual level, and dead letters in the last hour.

- usual level: the median of the same rolling hour on each of the previous 7 days on which the source already
  existed and which are of today's kind (weekday or weekend, UTC), so a source that is quiet every night is not
  "dropping" at night, nor a business source on Saturdays (hour-of-day and weekday/weekend seasonality).
- stale: no event for `completeness_stale_minutes` while the source usually sends at least one event in this
  hour of the day; a poller is stale when it has not fetched for `completeness_poller_stale_hours`.
- dropping: usually at least `completeness_min_per_hour` events in this hour, now fewer than
  `completeness_drop_ratio` of that.
- rejecting: at least REJECT_MIN dead letters in the last hour and REJECT_SHARE of what the source sent.
- learning: less than a day of history; no judgement yet.
Times are event times (`ts`), so a back-filled history is judged as it happened.
"""

from __future__ import annotations

import hashlib
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

LOOKBACK_DAYS = 7
REJECT_MIN = 5
REJECT_SHARE = Decimal("0.05")
PROBLEMS = {
    "stale": "no events for longer than usual: the source stopped sending or its collector is down",
    "dropping": "far fewer events than usual for this hour: part of the traffic is not collected",
    "rejecting": "many records of this source are dead-lettered: its format changed or it sends bad data",
}

_DAY_COUNTS = ", ".join(
    f"countIf(ts >= {{now:DateTime64(3, 'UTC')}} - INTERVAL {d} DAY - INTERVAL 1 HOUR"
    f" AND ts < {{now:DateTime64(3, 'UTC')}} - INTERVAL {d} DAY) AS d{d}" for d in range(1, LOOKBACK_DAYS + 1))
EVENTS_SQL = (
    "SELECT toString(source) AS source, max(ts) AS last_event, min(ts) AS first_seen,"
    " countIf(ts >= {now:DateTime64(3, 'UTC')} - INTERVAL 1 HOUR) AS last_hour, " + _DAY_COUNTS +
    " FROM priced_events WHERE ts >= {since:DateTime64(3, 'UTC')} AND ts < {now:DateTime64(3, 'UTC')}"
    " GROUP BY source"
)
# A record a stage read again after a crash (at-least-once) is lettered again with a new `at`, which the table's
# key holds: a letter at a Kafka position (topic, partition, offset, payload hash) counts once, at its first `at`.
# Letters without a position (HTTP ingest, files) count by their own time: two requests are two rejections.
# A letter about a record `deadletters replay` re-sent (`replayed_from`) is not counted: the record's rejection was,
# when it was first lettered (the re-sent record is at a new position, so the key above cannot tell).
DEAD_SQL = (
    "SELECT source, countIf(first_at >= {now:DateTime64(3, 'UTC')} - INTERVAL 1 HOUR) AS last_hour,"
    " max(first_at) AS last_at FROM (SELECT toString(source) AS source, min(at) AS first_at FROM dead_letters FINAL"
    " WHERE at >= {since:DateTime64(3, 'UTC')} AND at < {now:DateTime64(3, 'UTC')} AND replayed_from = ''"
    " GROUP BY source, stage, topic, partition, offset, payload_sha256,"
    " if(topic != '' AND offset >= 0, toDateTime64(0, 3, 'UTC'), at)) GROUP BY source"
)
POLLERS_SQL = (
    "SELECT toString(provider) AS provider, max(fetched_at) AS last_fetch,"
    " countIf(fetched_at >= {now:DateTime64(3, 'UTC')} - INTERVAL 1 HOUR) AS last_hour"
    " FROM provider_usage WHERE fetched_at >= {since:DateTime64(3, 'UTC')} AND fetched_at < {now:DateTime64(3, 'UTC')}"
    " GROUP BY provider"
)


@dataclass(frozen=True)
class Limits:
    stale_minutes: int = 60
    drop_ratio: Decimal = Decimal("0.5")
    min_per_hour: int = 10
    poller_stale_hours: float = 26.0

    @classmethod
    def from_settings(cls, settings: Any) -> "Limits":
        return cls(settings.completeness_stale_minutes, Decimal(str(settings.completeness_drop_ratio)),
                   settings.completeness_min_per_hour, settings.completeness_poller_stale_hours)


@dataclass(frozen=True)
class SourceHealth:
    source: str  # event source (dialect), a dead-lettering stage, or "poller:<provider>"
    kind: str  # "events" | "poller"
    last_event: datetime | None
    last_hour: int  # events (pollers: rows fetched) in the last hour
    usual: Decimal | None  # usual events in this hour of the day; None while learning (pollers: None)
    deadletters_last_hour: int
    status: str  # "ok" | "learning" | "stale" | "dropping" | "rejecting"

    @property
    def problem(self) -> bool:
        return self.status in PROBLEMS


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _status(last: datetime | None, last_hour: int, usual: Decimal | None, dead: int, now: datetime,
            limits: Limits) -> str:
    if dead >= REJECT_MIN and dead >= REJECT_SHARE * (dead + last_hour):
        return "rejecting"
    if usual is None:
        return "learning"
    if usual >= 1 and (last is None or now - last > timedelta(minutes=limits.stale_minutes)):
        return "stale"
    if usual >= limits.min_per_hour and last_hour < usual * limits.drop_ratio:
        return "dropping"
    return "ok"


def _weekend(moment: datetime) -> bool:
    return moment.weekday() >= 5  # Saturday, Sunday (UTC)


def _usual(days: list[tuple[int, int]], now: datetime) -> Decimal | None:
    """The median of this hour on the previous days of the same kind as today (weekend or weekday): business
    traffic is lower on weekends, and against all seven days (five of them weekdays) every weekend hour of it
    looked "dropping". All the days when none of the same kind is known yet."""
    same = [count for n, count in days if _weekend(now - timedelta(days=n)) == _weekend(now)]
    counts = same or [count for _, count in days]
    return Decimal(str(statistics.median(counts))) if counts else None


def source_health(wh: Any, now: datetime | None = None, limits: Limits | None = None) -> list[SourceHealth]:
    """Every source seen in the last LOOKBACK_DAYS + 1 days, problems first, then by name."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    limits = limits or Limits()
    params = {"now": now, "since": now - timedelta(days=LOOKBACK_DAYS + 1)}
    events = {r["source"]: r for r in wh.query(EVENTS_SQL, params).iter_rows(named=True)}
    try:
        dead = {r["source"]: r for r in wh.query(DEAD_SQL, params).iter_rows(named=True)}
    except Exception as exc:  # noqa: BLE001 - a warehouse from before migration 0012: no dead-letter counts
        if "UNKNOWN_TABLE" not in str(exc):  # any other failure is not "no dead letters" (it hid a broken query)
            raise
        dead = {}
    out: list[SourceHealth] = []
    for source in sorted(set(events) | set(dead)):
        e, d = events.get(source), dead.get(source)
        first = _utc(e["first_seen"]) if e else None
        days = [(n, int(e[f"d{n}"])) for n in range(1, LOOKBACK_DAYS + 1)
                if first is not None and first <= now - timedelta(days=n, hours=1)] if e else []
        usual = _usual(days, now)
        last = _utc(e["last_event"]) if e else None
        last_hour, dead_hour = int(e["last_hour"]) if e else 0, int(d["last_hour"]) if d else 0
        out.append(SourceHealth(source, "events", last, last_hour, usual, dead_hour,
                                _status(last, last_hour, usual, dead_hour, now, limits)))
    for r in wh.query(POLLERS_SQL, params).iter_rows(named=True):
        last = _utc(r["last_fetch"])
        stale = now - last > timedelta(hours=limits.poller_stale_hours)
        out.append(SourceHealth(f"poller:{r['provider']}", "poller", last, int(r["last_hour"]), None, 0,
                                "stale" if stale else "ok"))
    out.sort(key=lambda h: (not h.problem, h.source))
    return out


def completeness_alert(health: SourceHealth, now: datetime, *, dashboard_url: str = "") -> dict:
    """The alert of a source with a problem. Its id is stable per outage (stale: the last event's time) or per
    day (dropping, rejecting), so a check every few minutes alerts once. No routes in it: the dispatcher delivers
    it to its own TOKENMETER_FINANCE_NOTIFY (routes are secrets; every client of tokenmeter.alerts reads it)."""
    from tokenmeter.measures import count_of
    from tokenmeter.records import alert_record
    from tokenmeter.timefmt import people_utc

    onset = health.last_event.isoformat() if health.status == "stale" and health.last_event else now.date().isoformat()
    key = f"tokenmeter:completeness:{health.source}:{health.status}:{onset}"
    last = health.last_event.isoformat() if health.last_event else None
    usual = f"{health.usual.normalize():f}" if health.usual is not None else None
    summary = (f"Source {health.source} is {health.status}: {PROBLEMS[health.status]}. Last event "
               f"{people_utc(health.last_event) or 'never'}; {count_of(health.last_hour, 'event')} in the last hour"
               + (f" (usually {usual})" if usual is not None else "")
               + f"; {count_of(health.deadletters_last_hour, 'dead letter')} in the last hour.")
    return alert_record(
        id="completeness-" + hashlib.sha256(key.encode()).hexdigest()[:24], source="completeness",
        kind=f"source_{health.status}", action="trigger", severity="error" if health.status == "stale" else "warning",
        dedup_key=key, title=f"Source {health.source} is {health.status}", summary=summary, at=now,
        scope={"source": health.source}, notify=[],
        details={"source": health.source, "source_kind": health.kind, "problem": health.status,
                 "problem_detail": PROBLEMS[health.status], "last_event_at": last,
                 "events_last_hour": health.last_hour, "usual_per_hour": usual,
                 "deadletters_last_hour": health.deadletters_last_hour},
        dashboard_url=dashboard_url)


def as_dicts(rows: list[SourceHealth], for_people: bool = False) -> list[dict[str, Any]]:
    """Rows for the CLI's formats: JSON and CSV keep the exact ISO moment (machines read them); the table
    (`for_people`) writes it as people read times, to the second in UTC."""
    from tokenmeter.timefmt import people_utc

    def last(h: SourceHealth) -> str:
        if h.last_event is None:
            return ""
        return (people_utc(h.last_event, seconds=True) or "") if for_people else h.last_event.isoformat()

    return [{"source": h.source, "kind": h.kind, "status": h.status, "last_event": last(h),
             "events_last_hour": h.last_hour, "usual_per_hour": "" if h.usual is None else f"{h.usual.normalize():f}",
             "deadletters_last_hour": h.deadletters_last_hour} for h in rows]
