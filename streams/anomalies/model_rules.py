"""Rules about which models a scope calls: a move of calls to models their keys rarely use (model_shift) and a
model a scope never used (new_model)."""

from __future__ import annotations

from .aggregate import PICO, pico_to_str
from .detectors import Verdict, binomial_tail
from .scope_bucket import S_COST, S_KNOWN, S_MODELS, S_RARE, S_RCOST, S_RKEYS, S_RP, S_RTOK, S_TEAMS, S_TIN, S_TOUT
from .scope_state import ScopeState


class ModelRules:
    """Mixin of AnomalyEngine (uses `self.cfg` and the gating's `_track`)."""

    def _rare_model_takeover(self, st: ScopeState, sb: list, daily) -> Verdict | None:
        """Calls moved to models their own keys rarely use (< `shift_routine_share` of the key's calls, or never), at
        least `shift_ratio` times pricier per token than the bucket's other calls, carrying most of its cost, and
        more of them than the keys' usual share of such models allows (binomial tail < `error_p_value`, as for error
        shares). A count of calls, not the bucket's cost per token: that ratio of a few heavy-tailed calls has a
        deviation as large as its level (a 120k-token prompt on a cheap model hides the premium calls beside it), and
        a team's own earlier premium sessions inflate it (sparse seed 8: research on o1, office seed 8: the nightly
        job's 300 calls a bucket moved to claude-opus-4, both never above 5 deviations)."""
        cfg = self.cfg
        if not sb[S_RARE]:
            return None  # no new evidence in this bucket
        # The last three buckets together (a quiet team's move shows a few calls per bucket, key after key).
        rare, known, rare_p, rare_cost, rare_tokens = sb[S_RARE], sb[S_KNOWN], sb[S_RP], sb[S_RCOST], sb[S_RTOK]
        cost, tokens = sb[S_COST], sb[S_TIN] + sb[S_TOUT]
        keys = {k: list(v) for k, v in (sb[S_RKEYS] or {}).items()}  # api key -> [rare calls, calls, expected rare]
        for r in st.recent_cost:
            if len(r) > 9:
                rare, known, rare_p, rare_cost, rare_tokens = (rare + r[4], known + r[5], rare_p + r[6], rare_cost + r[7],
                                                                rare_tokens + r[8])
                cost, tokens = cost + r[1], tokens + r[2]
                for k, (r_rare, r_known, r_p) in r[9].items():
                    mine = keys.setdefault(k, [0, 0, 0.0])
                    mine[0], mine[1], mine[2] = mine[0] + r_rare, mine[1] + r_known, mine[2] + r_p
        if rare < cfg.shift_min_model_calls or not rare_tokens or rare_cost * 2 < cost:
            return None
        if rare < cfg.shift_session_calls:
            # A session's calls share one model (they are not independent draws): the evidence must not rest on one
            # key's session. Without the key with the most such calls, the rest must still be improbable; or there
            # are more calls than a session holds.
            top = max(keys.values(), key=lambda v: v[0])
            rare, known, rare_p = rare - top[0], known - top[1], rare_p - top[2]
            if rare < cfg.shift_min_model_calls:
                return None
        rare_cpt = rare_cost / PICO * 1000 / rare_tokens
        other_cost, other_tokens = cost - rare_cost, tokens - rare_tokens
        expected = other_cost / PICO * 1000 / other_tokens if other_cost > 0 and other_tokens > 0 else 0.0
        if not expected:
            expected, _, n = st.cpt.expected(daily)
            if n < 12 or expected <= 0:
                return None
        if rare_cpt < cfg.shift_ratio * expected:
            return None  # moved to a rarely used model, but not to a pricier one: no cost news
        if binomial_tail(rare, known, min(max(rare_p / known, 0.01), 0.5)) >= cfg.error_p_value:
            return None
        # Strong: the window already spans 15 minutes (as for error shares).
        v = Verdict("strong", cost / PICO * 1000 / max(tokens, 1), expected, 0.0, cfg.shift_ratio * expected,
                    "usd_per_1k_tokens")
        v.detail = (self._shift_detail(st, sb)[0] + f"; {rare} of {known} calls in 15 minutes on models their keys "
                    f"rarely use")
        return v


    def _new_models(self, st, sb, bucket, warm, per_hour, updates, label) -> None:
        cfg = self.cfg
        for kind_key in [k for k in st.open if k.startswith("new_model:")]:
            # A new model is news once: the anomaly closes after `close_after` buckets whatever happens next.
            self._track(st, kind_key, "new_model", Verdict("normal", 0.0, 0.0, 0.0, 0.0, "usd_per_hour"),
                        bucket, updates, label)
        window = cfg.new_model_window_buckets * cfg.bucket_s
        for model in [m for m, info in st.pending.items() if bucket - info[0] >= window]:
            del st.pending[model]  # a few calls in an hour: an occasional model, now a usual one (no news)
        # A model no key of a team ever used is news after fewer calls than a model new to one key only (which is often
        # its team's usual model showing up slowly on a quiet key): a user trying a model at night made 2 calls in an
        # hour (synthetic seed 11: 3 of 10 such tries missed, seed 21: a median of 19.5 minutes). On the team, and on
        # a narrower scope all of whose teams never called it (alerted there, the narrowest; the team is part of it).
        team = st.dim == "team"
        for model, (requests, cost, _tokens) in sb[S_MODELS].items():
            needed = cfg.new_model_team_min_calls if team or self._new_to_teams(sb[S_TEAMS], model, bucket) \
                else cfg.new_model_min_calls
            info = st.models.get(model)
            if info is not None and (not team or model not in st.pending
                                     and bucket - (info[4] if len(info) > 4 else info[0]) < cfg.new_model_forgotten_s):
                # Known (on a team: called within `new_model_forgotten_s`; a model one user tried three weeks ago
                # and nobody since is news again, synthetic seeds 11 and 21).
                continue
            if warm:
                # One call of a model is not news (a rare premium call); `needed` calls within an hour are.
                first, calls, spent, buckets = (st.pending.get(model) or [bucket, 0, 0, 0])[:4]
                calls, spent, buckets = calls + requests, spent + cost, buckets + 1
                if calls < needed or buckets < cfg.new_model_min_buckets:
                    st.pending[model] = [first, calls, spent, buckets]
                    continue
                st.pending.pop(model, None)
            # [first bucket, usual cost share, usual call share, bucket a team's alert reported it new (gating), last
            # bucket it was called in]
            st.models[model] = [bucket, 0.0, 0.0, None, bucket]
            if not warm:
                continue  # cold start: the first day's models are the scope's usual ones
            rate = cost / PICO * per_hour
            costly = rate >= cfg.costly_new_model_usd_per_hour
            v = Verdict("strong", rate, 0.0, 0.0, 0.0, "usd_per_hour", severity="warning" if costly else "info")
            v.detail = model
            self._track(st, f"new_model:{model}", "new_model", v, bucket, updates, label,
                        exact=pico_to_str(cost * int(per_hour)))

    def _new_to_teams(self, teams, model: str, bucket: int) -> bool:
        """Whether every team of a scope's calls never called `model` before this bucket (or not for
        `new_model_forgotten_s`), as its team scope judges it."""
        if not teams:
            return False
        for name in teams:
            known = self.scopes.get(("team", name))
            if known is None:
                return False
            info = known.models.get(model)
            if info is not None and model not in known.pending and info[0] < bucket and \
                    bucket - (info[4] if len(info) > 4 else info[0]) < self.cfg.new_model_forgotten_s:
                return False
        return True

    @staticmethod
    def _shift_detail(st: ScopeState, sb: list) -> str:
        best, best_gain, best_now, best_usual, best_calls = "", -1.0, 0.0, 0.0, 0
        for model, (calls, cost, _tok) in sb[S_MODELS].items():
            now = cost / sb[S_COST]
            usual = st.models.get(model, [0, 0.0])[1]
            if now - usual > best_gain:
                best, best_gain, best_now, best_usual, best_calls = model, now - usual, now, usual, calls
        return f"{best} now carries {best_now:.0%} of its cost (usually {best_usual:.0%})", best, best_calls

