"""Where a template change (a feature's output tokens multiplied) can be seen: incidents.py's placement rule.

A template change is an incident only where the feature calls often enough for it to show. The yardstick is the one
evaluate.py scores detectability by (optimal_test.py: Page's CUSUM for the known shift at the false-alert budget):
a start hosts the change when the feature's expected calls in its first 15 minutes reach the calls that optimal test
needs, times HOST_MARGIN. The margin is there because expected calls are not calls: a feature's 15-minute count is
Poisson at best (sd sqrt(E)), and a session process (sparse.py: chains of 1-6 calls seconds apart) spreads it by
sqrt(2c - 1) more for a mean chain c; the test's own delay spreads too. At E = 1.5 x needed (about 15-22 calls at
these budgets) the count still falls below what the test needs roughly one time in 10 (Poisson) to one in 4 (chains
of 3): a start at exactly 1.0 x would fail half the time by construction.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .optimal_test import calls_needed

HOST_MARGIN = 1.5
WINDOW = 900  # the 15-minute detection target
GRID = 300  # candidate starts, seconds apart
NEAR_BEST = 0.9  # no start hosts: take one among the family's busiest (at least this share of its best ratio)


@dataclass
class Hosting:
    feature: str
    start: int
    expected: float  # expected calls of the feature in [start, start + 15 min)
    needed: int  # calls the optimal test needs at the feature's daily volume
    hosts: bool  # expected >= HOST_MARGIN * needed

    def note(self, why: str = "no feature of this family can host a template change detectable within 15 minutes: "
             "this, among its busiest,") -> str:
        """What a label says of a start that does not host: loudly, in the incident's description."""
        return (f" ({why} expects {self.expected:.1f} changed calls in 15 minutes; the optimal test needs"
                f" {self.needed}, x{HOST_MARGIN} margin)")


def expected_calls(actors: list, t: int, window: int = WINDOW, step: int = 60) -> float:
    """Expected calls of `actors` in [t, t + window) (midpoint sums of their rates, `step` seconds apart)."""
    return sum(a.rate(t + s + step / 2) for a in actors for s in range(0, window, step)) * step


def calls_per_day(actors: list, start: int, end: int) -> float:
    """Mean expected calls per day of `actors` over [start, end) (10-minute midpoint sums)."""
    return expected_calls(actors, start, end - start, 600) * 86400 / (end - start)


class TemplateHosting:
    """Per feature: the calls the optimal test needs (from its expected daily volume and its actors' output spread)
    and, lazily, every start on a 5-minute grid of [lo, hi) with its expected 15-minute calls."""

    def __init__(self, by_feature: dict[str, list], multiplier: float, start: int, end: int, lo: int, hi: int):
        self.by_feature, self.lo, self.hi = by_feature, lo, hi
        self.needed = {}
        for feature, actors in by_feature.items():
            sigma = max(a.tout_sigma for a in actors)  # the widest spread: the fewest calls never overstate it
            self.needed[feature] = calls_needed(multiplier, sigma, calls_per_day(actors, start, end))
        self._grid: dict[str, list[tuple[int, float]]] | None = None

    def check(self, feature: str, t: int) -> Hosting:
        expected = expected_calls(self.by_feature[feature], t)
        needed = self.needed[feature]
        return Hosting(feature, t, expected, needed, expected >= HOST_MARGIN * needed)

    def still_fits(self, placed: Hosting, t: int) -> bool:
        """Whether moving a placed template change to `t` (incidents._separate moves by whole days, onto a weekend
        as readily as not) keeps it where it was placed: hosting, or, if it never hosted, about as busy."""
        now = self.check(placed.feature, t)
        return now.hosts if placed.hosts else now.expected >= NEAR_BEST * placed.expected

    def grid(self) -> dict[str, list[tuple[int, float]]]:
        if self._grid is None:
            self._grid = {}
            for feature, actors in self.by_feature.items():
                half = GRID // 2  # rates at 5-minute midpoints, shared by the three 5-minute parts of each window
                rates = [sum(a.rate(t + half) for a in actors) * GRID for t in range(self.lo, self.hi + WINDOW, GRID)]
                self._grid[feature] = [(self.lo + i * GRID, rates[i] + rates[i + 1] + rates[i + 2])
                                       for i in range((self.hi - self.lo) // GRID)]
        return self._grid

    def relocate(self, rng: random.Random, feature: str) -> Hosting:
        """A hosting start: on `feature` when it has one (at random among them), else on another feature (at random
        among those that have one); when no feature has one, a start among the family's busiest (within NEAR_BEST of
        its best expected / needed ratio), marked as not hosting."""
        grid = self.grid()
        hosting = {f: [t for t, e in starts if e >= HOST_MARGIN * self.needed[f]] for f, starts in grid.items()}
        features = [feature] if hosting[feature] else sorted(f for f, starts in hosting.items() if starts)
        if features:
            feature = rng.choice(features)
            return self.check(feature, rng.choice(hosting[feature]))
        ratio = {(f, t): e / self.needed[f] for f, starts in grid.items() for t, e in starts}
        best = max(ratio.values())
        near = sorted(k for k, r in ratio.items() if r >= NEAR_BEST * best)
        return self.check(*rng.choice(near))
