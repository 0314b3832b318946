"""incidents.plan keeps its promise for template changes (issue 17): a tokens-per-request change starts where its
feature's expected calls in the first 15 minutes reach what the optimal sequential test (evaluate's own arithmetic)
needs, or its label says loudly that no feature of the family can host one. Engine-free: plan alone."""

from __future__ import annotations

import math
import random

from streams.anomalies import sparse
from streams.anomalies.evaluate import BUDGET_DAYS, optimal_cusum_calls
from streams.anomalies.incidents import Actor, plan

DAYS = 30
MULT = 2.5  # a template change multiplies output tokens by this (incidents.py)


def _expected(actors: list[Actor], t0: float, span: int = 900, step: int = 30) -> float:
    return sum(a.rate(t0 + s + step / 2) for a in actors for s in range(0, span, step)) * step


def _needed(actors: list[Actor], sigma: float, start: int) -> int:
    per_day = _expected(actors, start, DAYS * 86400, 600) / DAYS
    return math.ceil(optimal_cusum_calls(math.log(MULT) / sigma, max(per_day * BUDGET_DAYS, 2.0)))


def _template_changes(actors: list[Actor], start: int, seed: int):
    by_feature: dict[str, list[Actor]] = {}
    for a in actors:
        by_feature.setdefault(a.attribution["feature"], []).append(a)
    for inc in plan(random.Random(seed), actors, start, DAYS, 10):
        if inc.kind == "tokens_per_request":
            feature = inc.description.split("feature ")[1].split(" ")[0]
            yield inc, feature, by_feature[feature]


def _actor(i: int, feature: str, calls_per_15m: float) -> Actor:
    attribution = {"team": f"t{i}", "project": f"p{i}", "user": f"u{i}", "api_key": f"k{i}", "feature": feature}
    actor = Actor(attribution, {"gpt-4o-mini": 1.0}, 500, 200, lambda t, r=calls_per_15m / 900: r)
    actor.tout_sigma = 0.8
    return actor


def test_a_template_change_goes_to_a_feature_busy_enough_to_show_it():
    """Ten quiet features (one expected call per 15 minutes: no test finds a 2.5x change there in 15 minutes) and one
    busy one: every template change lands on the busy one, unlabelled (the old plan chose any feature)."""
    start = int(sparse.START.timestamp())
    actors = [_actor(i, f"quiet-{i}", 1.0) for i in range(10)] + [_actor(10, "busy", 60.0)]
    busy_needed = _needed([actors[-1]], 0.8, start)
    assert 60.0 >= 1.5 * busy_needed  # the busy feature can host one, with margin
    for inc, feature, group in _template_changes(actors, start, seed=3):
        assert feature == "busy", inc.description
        assert "can host" not in inc.description and "moved" not in inc.description


def test_sparse_template_changes_are_hostable_or_say_they_are_not():
    """The sparse family's keys (seed 8): every template change expects the optimal test's calls in its first 15
    minutes, or says that no feature can host one; and such a change sits among the family's busiest starts (at least
    0.8 of the best expected / needed ratio any feature reaches), not anywhere (the old plan: 5-7 changed calls, and
    0.7-1.1 expected, where 11-15 are needed)."""
    rng = random.Random(8 * 7919 + 17)  # as sparse.generate draws its keys
    start = int(sparse.START.timestamp())
    keys = [sparse.Key(rng, i) for i in range(60)]
    actors = [Actor(k.attribution, k.models, k.tin, k.tout, k.rate) for k in keys]
    for a in actors:
        a.tout_sigma = 0.8
    by_feature: dict[str, list[Actor]] = {}
    for a in actors:
        by_feature.setdefault(a.attribution["feature"], []).append(a)
    needed = {f: _needed(g, 0.8, start) for f, g in by_feature.items()}
    lo, hi = start + 3 * 86400, start + DAYS * 86400 - 6 * 3600
    best = max(_expected(g, t, step=300) / needed[f] for f, g in by_feature.items() for t in range(lo, hi, 1800))
    changes = list(_template_changes(actors, start, seed=8))
    assert len(changes) == 10
    for inc, feature, group in changes:
        ratio = _expected(group, inc.start) / needed[feature]
        if "no feature of this family can host" not in inc.description:
            assert ratio >= 1.0, (inc.description, ratio)
        else:
            assert best < 1.5 and ratio >= 0.8 * best, (inc.description, ratio, best)


def test_evaluate_says_when_a_template_change_had_no_feature_to_host_it():
    """A label marked not hostable by plan is counted and named in the report, not only in its description."""
    from streams.anomalies.evaluate import format_table, score

    odds = {"sigma": 0.8, "shift_sd": 1.15, "calls_per_day": 600.0, "calls_needed": 15, "changed_first_15m": 11,
            "changed": 60, "detectable_in_15m": False, "detectable": True}
    label = {"kind": "tokens_per_request", "start": 1000, "end": 9000, "allowed": ["tokens_per_request"],
             "scopes": [["feature", "f"]], "description": "template change on feature f", "affected": 60,
             "first_affected": 1060, "affected_first_15m": 11, "hostable": False, "detectability": odds}
    hosted = {**label, "hostable": True, "scopes": [["feature", "g"]]}
    result = score([], [label, hosted], {})
    assert result["tokens_per_request"]["detectability"]["placed_where_no_feature_hosts"] == 1
    table = format_table({"kinds": result, "cold_start": {"anomalies_first_day": 0, "kinds": []}, "seed": 1,
                          "days": 1, "events": 1, "injections": 2, "anomalies": 0, "observe_events_per_s": 1,
                          "targets_met": False})
    assert "NO FEATURE of this family can host" in table and "1 of 2 were placed at its busiest starts" in table
