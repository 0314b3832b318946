"""The soak's verdicts: each check says whether it held and, when not, by how much."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from app.soak.receiver import ROUTES, Delivery

TWELVE = Decimal("0.000000000001")


@dataclass
class Check:
    name: str
    ok: bool
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


def totals_check(expected: dict[str, tuple[int, Decimal]], stored: dict[str, tuple[int, Decimal]],
                 lost: list[str], explained: list[str], duplicated: dict[str, int], extra: list[str],
                 reported_at_risk: int | None) -> Check:
    """Warehouse count and cost per team equal what was acknowledged, minus only the losses that a reported
    broker loss explains; no event stored twice, none stored that was never acknowledged."""
    diffs = {}
    for team in sorted(set(expected) | set(stored)):
        want, got = expected.get(team, (0, Decimal(0))), stored.get(team, (0, Decimal(0)))
        if want[0] != got[0] or want[1].quantize(TWELVE) != got[1].quantize(TWELVE):
            diffs[team] = {"expected_events": want[0], "stored_events": got[0],
                           "expected_cost": str(want[1].quantize(TWELVE)), "stored_cost": str(got[1].quantize(TWELVE)),
                           "cost_diff": str((got[1] - want[1]).quantize(TWELVE))}
    unexplained = sorted(set(lost) - set(explained))
    ok = not diffs and not unexplained and not duplicated and not extra
    events = sum(c for c, _ in expected.values())
    cost = sum((c for _, c in expected.values()), Decimal(0)).quantize(TWELVE)
    summary = (f"{events} events / ${cost} expected (acknowledged minus {len(explained)} lost with a reported broker "
               f"loss, reported at risk: {reported_at_risk if reported_at_risk is not None else 'n/a'} records)")
    if not ok:
        summary += (f"; MISMATCH: {len(diffs)} team(s) differ, {len(unexplained)} acknowledged events missing without "
                    f"a broker loss, {len(duplicated)} stored more than once (+{sum(duplicated.values())}), "
                    f"{len(extra)} stored but never acknowledged")
    return Check("warehouse totals", ok, summary, {"by_team": diffs, "unexplained_lost": unexplained[:20],
                                                     "duplicated": dict(list(duplicated.items())[:20]),
                                                     "extra": extra[:20], "lost_explained": len(explained)})


def alerts_check(limits: dict[str, Decimal], thresholds: tuple[int, ...], spend: dict[str, Decimal],
                 deliveries: list[Delivery], lost: dict[str, Decimal] | None = None) -> Check:
    """Every threshold the final spend reached was delivered once per route (one alert id; a redelivery with the
    same id is what the id is for), and no threshold that was not reached. `lost`: per budget, the cost of usage
    lost with a broker loss; the live budget counted it before the loss, so a threshold between the stored spend and
    the stored spend plus that may have been delivered (it is not required)."""
    lost = lost or {}
    ids: dict[tuple[str, int, str], set[str]] = defaultdict(set)
    raw = Counter()
    for d in deliveries:
        if d.kind == "threshold" and d.action == "trigger" and d.budget in limits and d.threshold is not None:
            ids[(d.budget, d.threshold, d.route)].add(d.alert_id)
            raw[(d.budget, d.threshold, d.route)] += 1
    problems = []
    expected = 0
    for budget, limit in limits.items():
        reached = spend.get(budget, Decimal(0)) / limit * 100 if limit else Decimal(0)
        for t in thresholds:
            for route in ROUTES:
                got = len(ids.get((budget, t, route), ()))
                if reached >= t:
                    expected += 1
                    if got != 1:
                        problems.append(f"{budget} {t}% via {route}: {got} alert ids (spend at {reached:.1f}%)")
                elif got and (spend.get(budget, Decimal(0)) + lost.get(budget, Decimal(0))) / limit * 100 < t:
                    problems.append(f"{budget} {t}% via {route}: delivered but spend is {reached:.1f}%"
                                    f" (with usage lost with the broker: {lost.get(budget, Decimal(0))} more)")
    redeliveries = sum(raw.values()) - sum(len(v) for v in ids.values())
    summary = f"{expected} threshold deliveries expected over {len(ROUTES)} routes, redeliveries of the same id: {redeliveries}"
    if problems:
        summary += f"; WRONG: {len(problems)}: " + "; ".join(problems[:6])
    return Check("alerts once per route", not problems, summary, {"problems": problems, "redeliveries": redeliveries})


def decisions_check(answers: dict[str, list[str]]) -> Check:
    """After recovery, a budget past its limit never answers allow."""
    allowed = {b: a.count("allow") for b, a in answers.items() if "allow" in a}
    summary = f"{len(answers)} budget(s) past their limit asked {sum(len(a) for a in answers.values())} times"
    if allowed:
        summary += f"; ALLOW answered: {allowed}"
    return Check("no allow past the limit", not allowed, summary, {"answers": answers})


def children_check(orphans_after_up_kill: list[str], left_after_stop: list[str]) -> Check:
    ok = not orphans_after_up_kill and not left_after_stop
    summary = "no child outlived a killed `up` (3 s) or the final stop"
    if not ok:
        summary = (f"LEFT RUNNING: {len(orphans_after_up_kill)} after `up` kills {orphans_after_up_kill[:5]}, "
                   f"{len(left_after_stop)} after stop {left_after_stop[:5]}")
    return Check("no child left running", ok, summary)


def loss_reports_check(broker_kills: int, up_kills: int, up_log: str) -> Check:
    """Each broker loss (a broker kill, or `up` killed with its broker) was reported loudly."""
    crashes, unclean = up_log.count("BROKER CRASHED"), up_log.count("did not stop cleanly")
    ok = crashes >= broker_kills and unclean >= up_kills
    return Check("broker losses reported", ok, f"{broker_kills} broker kill(s): {crashes} reported; {up_kills} `up` "
                 f"kill(s): {unclean} reported on the next start")


def reservation_check(limit: Decimal, real_spend: Decimal, committed: Decimal | None, counts: dict[str, int],
                      in_flight_at_losses: Decimal, lost_usage: Decimal, losses: int, holds: dict | None,
                      bad_answers: list[str]) -> Check:
    """A gateway that reserves never pushes its budget past the limit: what the provider would bill for every call
    it made stays within the limit, and so does the spend committed in the warehouse. The one allowance is what
    the memory-only broker takes when it dies (a `broker` or `up` kill, docs/budgets.md "Limits of the guarantee"):
    the holds of the calls in flight across it, and the usage it had acknowledged and lost (which never reaches
    the warehouse); with no such kill the allowance is 0. No hold may outlive the TTL."""
    allowance = in_flight_at_losses + lost_usage
    percent = (real_spend * 100 / limit).quantize(Decimal("0.1")) if limit else Decimal(0)
    summary = (f"{counts.get('admitted', 0)} calls admitted ({counts.get('billed', 0)} billed, "
               f"{counts.get('released', 0)} released, {counts.get('abandoned', 0)} abandoned), "
               f"{counts.get('refused', 0)} refused, {counts.get('unavailable', 0)} unavailable; real spend "
               f"${real_spend.quantize(TWELVE):f} = {percent}% of the ${limit} limit, committed in the warehouse "
               f"${format(committed.quantize(TWELVE), 'f') if committed is not None else 'n/a'}")
    problems = []
    if real_spend > limit:
        over = real_spend - limit
        if over <= allowance:
            summary += (f"; past the limit by ${over.quantize(TWELVE):f}, within what {losses} broker loss(es) explain "
                        f"(${in_flight_at_losses.quantize(TWELVE):f} of calls in flight across them, "
                        f"${lost_usage.quantize(TWELVE):f} of usage lost with the broker)")
        else:
            problems.append(f"PAST THE LIMIT by ${over.quantize(TWELVE):f}, more than the "
                            f"${allowance.quantize(TWELVE):f} broker losses explain")
    elif losses:
        summary += f" (never past it, across {losses} broker loss(es))"
    else:
        summary += " (never past it)"
    if committed is not None and committed > limit + in_flight_at_losses:  # lost usage never reaches the warehouse
        problems.append(f"COMMITTED PAST THE LIMIT by ${(committed - limit).quantize(TWELVE):f}")
    if holds is None:
        problems.append("the worker's reservation state could not be read after the TTL")
    else:
        # carried: held again by the rebuild after a broker loss (their usage never reached the warehouse); they
        # hold until their usage settles them or the period ends, by design (docs/budgets.md), so they are no leak
        carried = int(holds.get("carried") or 0)
        leaked = int(holds.get("open_reservations") or 0) - carried
        summary += (f"; after the TTL: {holds.get('open_reservations')} open holds ({carried} carried across a broker "
                    f"loss), {holds.get('expired', 0)} expired, {holds.get('settled', 0)} settled")
        if leaked > 0:
            problems.append(f"{leaked} hold(s) still open after the TTL (leaked)")
    if bad_answers:
        problems.append(f"{len(bad_answers)} unexpected answers: {bad_answers[:3]}")
    if problems:
        summary += "; " + "; ".join(problems)
    return Check("reserving gateway never past its limit", not problems, summary,
                 {"problems": problems, "allowance": str(allowance), "holds": holds})
