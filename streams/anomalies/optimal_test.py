"""The optimal sequential test for a known shift (Page's CUSUM) and the calls it needs: the yardstick that
evaluate.py measures a tokens-per-request change's detectability with, and that incidents.py places one by."""

from __future__ import annotations

import math

# The false-alert budget (1 per 100 active scope-days) spent on one scope means one chance alarm per BUDGET_DAYS days
# of its calls.
BUDGET_DAYS = 100


def _cusum_arl(drift: float, k: float, h: float) -> float:
    """Siegmund's approximation of the average run length (steps from 0 to an alarm) of a one-sided CUSUM
    S = max(0, S + x - k) with threshold h on N(drift, 1) steps (0.583 = the Gaussian overshoot constant)."""
    b, d = h + 2 * 0.583, drift - k
    if abs(d) < 1e-9:
        return b * b
    return (math.exp(-2 * d * b) + 2 * d * b - 1) / (2 * d * d)


def optimal_threshold(delta: float, arl0_calls: float) -> float:
    """The threshold of the optimal CUSUM for a known shift of `delta` standard deviations (reference delta / 2) at
    which it alarms by chance once per `arl0_calls` unchanged calls."""
    k, lo, hi = delta / 2, 0.0, 1.0
    while _cusum_arl(0.0, k, hi) < arl0_calls:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _cusum_arl(0.0, k, mid) < arl0_calls else (lo, mid)
    return hi


def optimal_cusum_calls(delta: float, arl0_calls: float) -> float:
    """Expected changed calls until the optimal CUSUM for a known shift of `delta` standard deviations (reference
    delta / 2) alarms, with its threshold set so that it alarms by chance once per `arl0_calls` unchanged calls."""
    return _cusum_arl(delta, delta / 2, optimal_threshold(delta, arl0_calls))


def optimal_first_alarm(scores: list[float], delta: float, arl0_calls: float) -> int | None:
    """The call (1-based) at which that optimal CUSUM, judged after every call, alarms on these standardized scores
    (each call's log output minus its key's mean, over the spread), or None: what the best test at the budget does on
    the calls a change actually drew, where `optimal_cusum_calls` is its expectation."""
    k, h, cusum = delta / 2, optimal_threshold(delta, arl0_calls), 0.0
    for i, z in enumerate(scores):
        cusum = max(0.0, cusum + z - k)
        if cusum >= h:
            return i + 1
    return None


def calls_needed(multiplier: float, sigma: float, calls_per_day: float) -> int:
    """Changed calls the optimal test needs to find output tokens multiplied by `multiplier` on a scope whose log
    output tokens spread by `sigma` and that makes `calls_per_day` calls, at the false-alert budget."""
    delta = math.log(multiplier) / sigma
    return math.ceil(optimal_cusum_calls(delta, max(calls_per_day * BUDGET_DAYS, 2.0)))
