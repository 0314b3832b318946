"""Where a template change (a feature's output tokens multiplied) can be seen: incidents.py's placement rule for them
(hosting.py: a start hosts when the expected evidence reaches what finding it needs, times HOST_MARGIN).

The yardstick is the one evaluate.py scores detectability by (optimal_test.py: Page's CUSUM for the known shift at the
false-alert budget): a start hosts the change when the feature's expected calls in its first 15 minutes reach the
calls that optimal test needs, times HOST_MARGIN.
"""

from __future__ import annotations

from .hosting import GRID, HOST_MARGIN, WINDOW, Hosting, Placement, expected_calls
from .optimal_test import calls_needed


def calls_per_day(actors: list, start: int, end: int) -> float:
    """Mean expected calls per day of `actors` over [start, end) (10-minute midpoint sums)."""
    return expected_calls(actors, start, end - start, 600) * 86400 / (end - start)


class TemplateHosting(Placement):
    """Per feature: the calls the optimal test needs (from its expected daily volume and its actors' output spread)
    and, lazily, every start on a 5-minute grid of [lo, hi) with its expected 15-minute calls."""

    def __init__(self, by_feature: dict[str, list], multiplier: float, start: int, end: int, lo: int, hi: int):
        super().__init__(by_feature, lo, hi)
        self.needed = {}
        for feature, actors in by_feature.items():
            sigma = max(a.tout_sigma for a in actors)  # the widest spread: the fewest calls never overstate it
            self.needed[feature] = calls_needed(multiplier, sigma, calls_per_day(actors, start, end))

    def _score(self, feature: str, t: int) -> float:
        return expected_calls(self.groups[feature], t)

    def _grid_scores(self, actors: list) -> list[float]:
        half = GRID // 2  # rates at 5-minute midpoints, shared by the three 5-minute parts of each window
        rates = [sum(a.rate(t + half) for a in actors) * GRID for t in range(self.lo, self.hi + WINDOW, GRID)]
        return [rates[i] + rates[i + 1] + rates[i + 2] for i in range((self.hi - self.lo) // GRID)]

    def _judge(self, feature: str, expected: float) -> tuple[float, bool]:
        needed = self.needed[feature]
        return expected / needed, expected >= HOST_MARGIN * needed

    def _hosting(self, feature: str, t: int, expected: float) -> Hosting:
        ratio, hosts = self._judge(feature, expected)
        return Hosting(feature, t, expected, ratio, hosts, f"the optimal test needs {self.needed[feature]}",
                       "no feature of this family can host a template change detectable within 15 minutes: this, "
                       "among its busiest,")
