"""Where an incident can be seen: the placement rule incidents.plan keeps for the kinds whose visibility depends on how
busy their actors are at its start (template changes: template_hosting.py, by feature; model shifts: shift_hosting.py,
by team).

A start *hosts* an incident when the evidence its actors are expected to give in its first 15 minutes reaches what
finding it needs, times HOST_MARGIN. The margin is there because expected calls are not calls: a group's 15-minute
count is Poisson at best (sd sqrt(E)), and a session process (sparse.py: chains of 1-6 calls seconds apart) spreads it
by sqrt(2c - 1) more for a mean chain c; the test's own delay spreads too. At E = 1.5 x needed (about 15-22 calls at
the template changes' budgets) the count still falls below what is needed roughly one time in 10 (Poisson) to one in
4 (chains of 3): a start at exactly 1.0 x would fail half the time by construction.

When a group's own starts never host, a hosting start on another group (at random among those that have one); when
no group of the family has one, a start among its busiest (within NEAR_BEST of its best ratio), marked as not hosting:
the incident's label says so (`Hosting.note`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

HOST_MARGIN = 1.5
WINDOW = 900  # the 15-minute detection target
GRID = 300  # candidate starts, seconds apart
NEAR_BEST = 0.9  # no start hosts: take one among the family's busiest (at least this share of its best ratio)
# Changed calls in the first 15 minutes below which evaluate.py calls an incident unobservable (nobody can detect it
# within the target): one suffices for a new or unpriced model.
MIN_EVIDENCE = 5
MIN_EVIDENCE_KIND = {"new_model": 1, "unpriced_usage": 1}


@dataclass
class Hosting:
    group: str  # the feature (template change) or team (model shift) it is placed on
    start: int
    expected: float  # expected changed calls in [start, start + 15 min)
    ratio: float  # the expected evidence over what finding it needs (the margin not included)
    hosts: bool  # ratio >= HOST_MARGIN
    needs: str  # what finding it needs, for the label: "the optimal test needs 15"
    unhosted: str  # what the label says when no group of the family hosts one
    beside: str = ""  # more of the expected evidence, for the label

    @property
    def feature(self) -> str:
        return self.group

    def note(self, why: str | None = None) -> str:
        """What a label says of a start that does not host: loudly, in the incident's description."""
        return (f" ({why or self.unhosted} expects {self.expected:.1f} changed calls in 15 minutes{self.beside};"
                f" {self.needs}, x{HOST_MARGIN} margin)")


def expected_calls(actors: list, t: int, window: int = WINDOW, step: int = 60) -> float:
    """Expected calls of `actors` in [t, t + window) (midpoint sums of their rates, `step` seconds apart)."""
    return sum(a.rate(t + s + step / 2) for a in actors for s in range(0, window, step)) * step


class Placement:
    """Hosting starts of one kind of incident over the family's groups (features, teams): a subclass says what a start
    is expected to give (`_score`, `_grid_scores`) and how that compares with what finding it needs (`_judge`)."""

    # When no group of the family hosts one: a start among the family's busiest (True), or among the drawn group's own
    # busiest (False: for incidents that are not independent when repeated on one group).
    pool_when_none_hosts = True

    def __init__(self, groups: dict[str, list], lo: int, hi: int):
        self.groups, self.lo, self.hi = groups, lo, hi
        self._grid: dict[str, list[tuple[int, float, bool]]] | None = None

    def _score(self, group: str, t: int):
        raise NotImplementedError

    def _grid_scores(self, actors: list) -> list:
        """`_score` of every start on the GRID of [lo, hi), in order (sums shared between neighbouring windows)."""
        raise NotImplementedError

    def _judge(self, group: str, score) -> tuple[float, bool]:
        """(ratio, hosts) of a start's score."""
        raise NotImplementedError

    def _hosting(self, group: str, t: int, score) -> Hosting:
        raise NotImplementedError

    def check(self, group: str, t: int) -> Hosting:
        return self._hosting(group, t, self._score(group, t))

    def still_fits(self, placed: Hosting, t: int) -> bool:
        """Whether moving a placed incident to `t` (incidents._separate moves by whole days, onto a weekend as readily
        as not) keeps it where it was placed: hosting, or, if it never hosted, about as busy."""
        now = self.check(placed.group, t)
        return now.hosts if placed.hosts else now.ratio >= NEAR_BEST * placed.ratio

    def grid(self) -> dict[str, list[tuple[int, float, bool]]]:
        """Per group: every start on the 5-minute grid with its (ratio, hosts)."""
        if self._grid is None:
            self._grid = {}
            for group, actors in self.groups.items():
                self._grid[group] = [(self.lo + i * GRID, *self._judge(group, score))
                                     for i, score in enumerate(self._grid_scores(actors))]
        return self._grid

    def relocate(self, rng: random.Random, group: str) -> Hosting:
        """A hosting start: on `group` when it has one (at random among them), else on another group (at random among
        those that have one); when no group has one, a start among the family's busiest (within NEAR_BEST of its best
        ratio; the group's own busiest unless `pool_when_none_hosts`), marked as not hosting."""
        grid = self.grid()
        hosting = {g: [t for t, _, hosts in starts if hosts] for g, starts in grid.items()}
        groups = [group] if hosting[group] else sorted(g for g, starts in hosting.items() if starts)
        if groups:
            group = rng.choice(groups)
            return self.check(group, rng.choice(hosting[group]))
        pool = [g for g in grid if self.pool_when_none_hosts or g == group]
        ratio = {(g, t): r for g in pool for t, r, _ in grid[g]}
        best = max(ratio.values())
        near = sorted(k for k, r in ratio.items() if r >= NEAR_BEST * best)
        return self.check(*rng.choice(near))

    def window_rates(self, actors: list) -> list[list[float]]:
        """Per actor: its expected calls in each 15-minute window of the grid (three 5-minute midpoint parts)."""
        half, out = GRID // 2, []
        for a in actors:
            parts = [a.rate(t + half) * GRID for t in range(self.lo, self.hi + WINDOW, GRID)]
            out.append([parts[i] + parts[i + 1] + parts[i + 2] for i in range((self.hi - self.lo) // GRID)])
        return out
