"""Where a model shift (a team moves a share of its calls to a premium model) can be seen: incidents.py's placement
rule for them (hosting.py: a start hosts when the expected evidence reaches what finding it needs, times HOST_MARGIN).

The evidence is the changed calls in the first 15 minutes (the team's expected calls times the share moved), against
what the rules need before they may speak (model_rules.py, with Config's own constants):
  - evaluate.py's MIN_EVIDENCE changed calls: fewer and the move is unobservable (left out of recall);
  - the 15-minute call-count rule's session guard: a session's calls share one model, so the evidence must not rest
    on one key's session: `shift_min_model_calls` changed calls beside the key with the most of them, or
    `shift_session_calls` in all (a team of one job key). The team's busiest key at the start stands in for the key
    the rule sets aside.
The old placement asked 20 expected calls per 5 minutes of the team, which no sparse team reaches (1.3-9.3 at their
busiest), fell back to the best of 400 random draws, and the no-overlap rule then moved it by whole days without
looking (sparse seed 11: team sales' move to claude-opus-4 onto a Saturday evening, 7 changed calls in its first 15
minutes, missed).
"""

from __future__ import annotations

from .detectors import Config
from .hosting import MIN_EVIDENCE, HOST_MARGIN, Hosting, Placement, expected_calls


class ShiftHosting(Placement):
    """Per team: its keys' expected calls in each 15-minute window of a 5-minute grid of [lo, hi), the move's share of
    them changed."""

    # No team hosts one: each shift stays on its drawn team, at that team's busiest starts. Pooled on the family's
    # busiest team (sparse seed 8: all ten on team research), a team's later moves to o1 and claude-opus-4 are not
    # independent of its first ones (its keys have called them since): 6 of 8 found where 9 of 9 were.
    pool_when_none_hosts = False

    def __init__(self, by_team: dict[str, list], share: float, lo: int, hi: int, config: Config | None = None):
        super().__init__(by_team, lo, hi)
        self.share, cfg = share, config or Config()
        self.min_beside, self.session = cfg.shift_min_model_calls, cfg.shift_session_calls

    def _score(self, team: str, t: int) -> list[float]:
        return [expected_calls([a], t) for a in self.groups[team]]

    def _grid_scores(self, actors: list) -> list[list[float]]:
        return [list(per_key) for per_key in zip(*self.window_rates(actors))]

    def _evidence(self, per_key: list[float]) -> tuple[float, float]:
        """(changed calls, changed calls beside the busiest key) expected in the first 15 minutes."""
        return self.share * sum(per_key), self.share * (sum(per_key) - max(per_key))

    def _judge(self, team: str, per_key: list[float]) -> tuple[float, bool]:
        changed, beside = self._evidence(per_key)
        ratio = min(changed / MIN_EVIDENCE, max(beside / self.min_beside, changed / self.session))
        return ratio, ratio >= HOST_MARGIN

    def _hosting(self, team: str, t: int, per_key: list[float]) -> Hosting:
        changed, beside = self._evidence(per_key)
        ratio, hosts = self._judge(team, per_key)
        return Hosting(team, t, changed, ratio, hosts,
                       f"the rules need {MIN_EVIDENCE}, {self.min_beside} of them beside one key's session (or "
                       f"{self.session} in all)",
                       "no team of this family can host a model shift the rules can see within 15 minutes: this, "
                       "among its busiest,", f", {beside:.1f} beside its busiest key")
