"""The soak's wait after the traffic: until the warehouse holds what was acknowledged, or the pipeline is drained,
or its limit. When it gives up, the result says why (soak35): `--json` silences the soak's echo, and a failure
("budget alerts delivered but spend is 0.0 %", soak34) left no word on whether the file tailer lagged, `up` took
no backlog sample, the worker or the loader did not consume, or no loader served the warehouse's totals."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Callable

from app.broker import BACKLOG_STAGES
from tokenmeter import topics

Totals = dict[str, tuple[int, Decimal]]
STAGE_CHILD = {topics.USAGE: "worker", topics.PRICED: "loader"}  # who must commit each drained topic


@dataclass
class Settled:
    stored: Totals  # what the warehouse held at the end of the wait ({} when no loader ever answered)
    outcome: str  # "warehouse matches", "drained" or "gave up"
    waited_s: float
    why: str | None = None  # when it gave up: what was still not done
    evidence: dict = field(default_factory=dict)  # the last tail offset, backlog sample and child states

    def as_json(self) -> dict:
        return {"outcome": self.outcome, "waited_s": round(self.waited_s, 1), "why": self.why,
                "evidence": self.evidence}


def _report(data_dir: Path) -> Totals | None:
    """(events, cost) per soak team while the stack runs (warehouse.endpoint.live_team_totals); None while no loader
    serves it."""
    from warehouse.endpoint import live_team_totals

    totals = live_team_totals(data_dir)
    return None if totals is None else {team: t for team, t in totals.items() if str(team).startswith("soak-")}


def _tail_offset(checkpoint: Path) -> int:
    try:
        return int(json.loads(checkpoint.read_text()).get("offset", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def why_not_drained(status: dict, tail: tuple[int, int], tailed_at: float | None, reports: list[Totals | None],
                    now: float) -> str:
    """Why the pipeline did not drain, from what the soak saw last: the file tailer's (offset, size) and when it
    caught up (None: never), `up`'s status file (supervisor.json: the backlog sample, the children's states) and
    the warehouse's last two live reports. Every cause that held is named, most upstream first."""
    children = {c.get("name"): c for c in status.get("children", []) if isinstance(c, dict)}

    def state(name: str) -> str:
        child = children.get(name)
        if child is None:
            return f"{name} not started by `up`"
        extra = f", last exit {child['last_exit_code']}" if child.get("last_exit_code") is not None else ""
        return f"{name} {child.get('state')}, {child.get('restarts', 0)} restarts{extra}"

    causes = []
    if tailed_at is None:
        causes.append(f"the file collector had not caught up with the gateway log (checkpoint at byte {tail[0]:,} "
                      f"of {tail[1]:,})")
    if not status:
        causes.append("`up` wrote no status file (not running?)")
    sample = status.get("backlog") if isinstance(status.get("backlog"), dict) else None
    if status and (sample is None or not isinstance(sample.get("at"), (int, float))):
        causes.append("`up` has taken no backlog sample (broker unreachable from the supervisor?)")
    elif sample is not None and tailed_at is not None and sample["at"] <= tailed_at:
        causes.append(f"`up`'s last backlog sample is {now - sample['at']:.0f} s old, from before the file collector "
                      f"caught up (the sampler is failing: broker busy or restarting?)")
    if sample is not None and isinstance(sample.get("at"), (int, float)):
        what = {topic: text for topic, _, text in BACKLOG_STAGES}
        for topic, child in STAGE_CHILD.items():
            waiting = (sample.get("backlog") or {}).get(topic)
            if waiting:
                idle = now - (sample.get("progress_at") or {}).get(topic, sample["at"])
                causes.append(f"{waiting:,} {what[topic]} at the last sample (nothing committed for {idle:.0f} s; "
                              f"{state(child)})")
    if not reports or reports[-1] is None:
        causes.append(f"no loader served the warehouse's live totals at the last poll ({state('loader')})")
    elif len(reports) > 1 and reports[-1] != reports[-2]:
        causes.append("the warehouse's totals were still growing at the last poll (loading, not done)")
    return "; ".join(causes) or "the backlog sample said drained only at the last poll"


async def settle(data_dir: Path, expected: Totals, status: Callable[[], dict], gateway_log: Path, checkpoint: Path,
                 echo: Callable[[str], None], limit_s: float = 300) -> Settled:
    """Wait until the warehouse holds exactly `expected`, or until the pipeline is drained: the file tailer at the
    end of its file, then a backlog sample of `up` (taken after that) with nothing acknowledged left uncommitted
    by the worker and the loader, and the report unchanged since the previous poll; at most `limit_s`."""
    started = time.monotonic()
    deadline = started + limit_s
    size = gateway_log.stat().st_size if gateway_log.exists() else 0
    tailed_at: float | None = None
    while time.monotonic() < deadline:
        if _tail_offset(checkpoint) >= size:
            tailed_at = time.time()
            break
        await asyncio.sleep(0.5)
    reports: list[Totals | None] = []
    now_status: dict = {}
    while tailed_at is not None and time.monotonic() < deadline:
        got = await asyncio.to_thread(_report, data_dir)
        reports = [*reports[-1:], got]
        if got == expected:
            return Settled(got, "warehouse matches", time.monotonic() - started)
        now_status = status()
        sample = now_status.get("backlog") or {}
        backlog = sample.get("backlog") or {}
        drained = sample.get("at", 0) > tailed_at and backlog.get(topics.USAGE) == backlog.get(topics.PRICED) == 0
        if drained and got is not None and len(reports) == 2 and got == reports[0]:
            echo("  pipeline drained (nothing acknowledged left uncommitted); checking what the warehouse holds")
            return Settled(got, "drained", time.monotonic() - started)
        await asyncio.sleep(1)
    now_status = status() or now_status
    why = why_not_drained(now_status, (_tail_offset(checkpoint), size), tailed_at, reports, time.time())
    echo(f"  pipeline not drained after {limit_s:.0f} s ({why}); checking what the warehouse holds")
    evidence = {"tail_offset": _tail_offset(checkpoint), "gateway_log_bytes": size,
                "backlog_sample": now_status.get("backlog"),
                "children": {c.get("name"): c.get("state") for c in now_status.get("children", [])}}
    return Settled(next((r for r in reversed(reports) if r is not None), {}), "gave up", time.monotonic() - started,
                   why, evidence)
