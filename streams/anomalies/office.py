"""Traffic family "office": an organisation with offices in three time zones (an evaluation family, see evaluate.py).

Built unlike synthetic.py: a *calendar of workloads* evaluated minute by minute. Each workload has a rate function
of its office's local wall time (zoneinfo, so daylight-saving switches move it in UTC) and a call template; a minute's
calls are drawn at once (numpy Poisson), spread over the minute, and the minutes of each 5-minute window form a
batch. Workloads:

    - staff in New York, Berlin and Tokyo: office hours 9-18 local with a lunch dip and a late-afternoon meeting
      dip, quiet weekends, and individual day-to-day moods;
    - a nightly batch job (01:30 Berlin time, ~40 minutes, about one call a second on a cheap model);
    - a weekly reporting run (Mondays 07:00 New York time, 30 minutes of long-document prompts on gpt-4o), and a
      monthly finance close run on the first weekday of the month;
    - benign surprises: a public holiday in one office, an all-hands day with 1.6x traffic, a new hire whose key
      appears mid-month, and the nightly job running an hour late one night.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone
from typing import Iterator
from zoneinfo import ZoneInfo

import numpy as np

from .incidents import BUCKET, Actor, overlay, plan, priced_event

START = datetime(2026, 10, 5, tzinfo=timezone.utc)  # a Monday; Europe leaves summer time on Oct 25, the US on Nov 1
TOUT_SIGMA = 0.6  # spread of ln(output tokens) of a workload's calls
OFFICES = {  # office: (zone, teams with (models, median input, median output) and staff count)
    "nyc": ("America/New_York", {"sales": ({"gpt-4o-mini": 0.7, "gpt-4o": 0.3}, 900, 250, 5),
                                 "legal": ({"claude-sonnet-4": 0.8, "claude-3-5-haiku": 0.2}, 5000, 600, 3)}),
    "berlin": ("Europe/Berlin", {"support": ({"claude-3-5-haiku": 0.7, "claude-sonnet-4": 0.3}, 1500, 350, 6),
                                 "eng": ({"gpt-4o": 0.5, "mistral-large": 0.5}, 3000, 700, 5)}),
    "tokyo": ("Asia/Tokyo", {"research": ({"claude-sonnet-4": 0.6, "gemini-2.0-flash": 0.4}, 4000, 900, 4)}),
}


class Workload:
    """Calls of one API key: `rate(t)` calls per second at epoch second t, and a template for a call."""

    def __init__(self, attribution: dict, zone: str, models: dict, tin: float, tout: float, error_p: float,
                 rate_local, appears: int = 0):
        self.attribution, self.zone, self.models = attribution, ZoneInfo(zone), models
        self.tin, self.tout, self.error_p, self.rate_local, self.appears = tin, tout, error_p, rate_local, appears
        self._local_cache: dict[int, datetime] = {}

    def local(self, t: float) -> datetime:
        hour = int(t) // 3600
        base = self._local_cache.get(hour)
        if base is None:
            base = self._local_cache[hour] = datetime.fromtimestamp(hour * 3600, self.zone)
        return base + timedelta(seconds=int(t) - hour * 3600)

    def rate(self, t: float) -> float:
        return 0.0 if t < self.appears else self.rate_local(self.local(t))


def staff_rate(peak: float, mood: dict, holidays: set, busy_days: set):
    def rate(local: datetime) -> float:
        if local.weekday() >= 5 or local.date() in holidays:
            return peak * 0.01
        h = local.hour + local.minute / 60
        day = 1 / (1 + math.exp(-(h - 9) * 3)) * 1 / (1 + math.exp((h - 18) * 2.5))
        day *= 1 - 0.45 * math.exp(-((h - 12.5) / 0.6) ** 2) - 0.3 * math.exp(-((h - 16) / 0.4) ** 2)
        return peak * (0.01 + day) * mood.get(local.date(), 1.0) * (1.6 if local.date() in busy_days else 1.0)
    return rate


def first_weekday_of_month(local: datetime) -> bool:
    return local.weekday() < 5 and (local.day == 1 or (local.weekday() == 0 and local.day <= 3))


def window_rate(rps: float, when) -> callable:
    """A job: `rps` while when(local) is true."""
    return lambda local: rps if when(local) else 0.0


def build(rng: random.Random, start: int, days: int) -> list[Workload]:
    first = datetime.fromtimestamp(start, timezone.utc).date()
    dates = [first + timedelta(days=d) for d in range(days + 2)]
    weekdays = [d for d in dates if d.weekday() < 5]
    workloads = []
    for office, (zone, teams) in OFFICES.items():
        holidays = {rng.choice(weekdays[5:])} if len(weekdays) > 6 and office == "berlin" else set()
        busy = {rng.choice(weekdays[3:])} if len(weekdays) > 4 and office == "nyc" else set()
        for team, (models, tin, tout, staff) in teams.items():
            for i in range(staff):
                user = f"{office}-{team}-{i}"
                mood = {d: math.exp(rng.gauss(0, 0.25)) for d in dates}
                attribution = {"org": "office", "team": team, "project": f"{team}-{office}", "user": user,
                               "api_key": f"sk-{user}", "feature": f"{team}-assistant", "tags": {}}
                workloads.append(Workload(attribution, zone, models, tin * rng.uniform(0.6, 1.5), tout, 0.015,
                                          staff_rate(rng.uniform(0.01, 0.05), mood, holidays, busy)))
    late = rng.choice(dates[7:]) if days > 8 else None
    etl = {"org": "office", "team": "data", "project": "warehouse-etl", "user": "svc-etl", "api_key": "sk-etl-nightly",
           "feature": "nightly-enrichment", "tags": {}}
    workloads.append(Workload(etl, "Europe/Berlin", {"gpt-4o-mini": 1.0}, 1200, 150, 0.005, window_rate(
        1.0, lambda local: (90 + (60 if local.date() == late else 0)) <= local.hour * 60 + local.minute
        < (130 + (60 if local.date() == late else 0)))))
    report = {"org": "office", "team": "finance", "project": "reporting", "user": "svc-report",
              "api_key": "sk-weekly-report", "feature": "weekly-report", "tags": {}}
    workloads.append(Workload(report, "America/New_York", {"gpt-4o": 1.0}, 30_000, 1500, 0.01, window_rate(
        0.2, lambda local: (local.weekday() == 0 and local.hour == 7 and local.minute < 30)
        or (first_weekday_of_month(local) and local.hour == 15 and local.minute < 20))))
    hire = {"org": "office", "team": "sales", "project": "sales-nyc", "user": "nyc-sales-newhire",
            "api_key": "sk-nyc-sales-newhire", "feature": "sales-assistant", "tags": {}}
    workloads.append(Workload(hire, "America/New_York", {"gpt-4o-mini": 0.7, "gpt-4o": 0.3}, 900, 250, 0.015,
                              staff_rate(0.03, {}, set(), set()), appears=start + min(days // 2, 12) * 86400))
    return workloads


def generate(seed: int = 1, days: int = 30, per_kind: int = 10) -> tuple[Iterator[list[dict]], list[dict], dict]:
    """(batches of priced events in time order, labels, facts) for evaluate.py."""
    rng = random.Random(seed * 104729 + 3)
    nprng = np.random.default_rng(seed)
    start = int(START.timestamp())
    end = start + days * 86400
    workloads = build(rng, start, days)
    actors = [Actor(w.attribution, w.models, w.tin, w.tout, w.rate, TOUT_SIGMA) for w in workloads if not w.appears]
    incidents = plan(rng, actors, start, days, per_kind) if per_kind else []
    facts = {"start": start, "end": end, "clients": len(workloads), "injections": len(incidents), "fresh": []}

    def batches() -> Iterator[list[dict]]:
        counter, n = [0], 0
        for bucket in range(start, end, BUCKET):
            batch = []
            for minute in range(bucket, bucket + BUCKET, 60):
                rates = np.array([w.rate(minute) for w in workloads]) * 60
                counts = nprng.poisson(rates)
                for w, count in zip(workloads, counts):
                    if not count:
                        continue
                    names, weights = list(w.models), list(w.models.values())
                    for _ in range(int(count)):
                        n += 1
                        t = minute + rng.randrange(60)
                        tin = min(int(rng.lognormvariate(math.log(w.tin), 0.7)), 120_000)
                        tout = int(rng.lognormvariate(math.log(w.tout), TOUT_SIGMA))
                        batch.append(priced_event(f"of-{seed}-{n}", t, w.attribution, rng.choices(names, weights)[0],
                                                  tin, tout, rng.random() < w.error_p))
            yield overlay(batch, bucket, incidents, rng, counter)
        for inc in incidents:
            inc.finish()

    return batches(), [inc.record for inc in incidents], facts
