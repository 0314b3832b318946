"""Rules about which models a scope calls: a move of calls to models their keys rarely use (model_shift) and a
model a scope never used (new_model)."""

from __future__ import annotations

from decimal import Decimal

from tokenmeter.measures import format_percent

from .aggregate import PICO, pico_to_str
from .detectors import Verdict, binomial_tail, ratio_verdict
from .gating import RAW_INDEX, iso_epoch
from .scope_bucket import (S_COST, S_KNOWN, S_MODELS, S_RARE, S_RCOST, S_REQ, S_RKEYS, S_RP, S_RTOK, S_TEAMS, S_TIN,
                           S_TOUT)
from .scope_state import ScopeState


class ModelRules:
    """Mixin of AnomalyEngine (uses `self.cfg` and the gating's `_track`)."""

    def _cost_shift(self, st: ScopeState, sb: list, ok: int, tokens: int, daily) -> Verdict | None:
        """The bucket's cost per token against its hour's level (a quiet scope's last three buckets together, like
        error shares), firing only when the calls that took over the cost are on a model the scope rarely uses.
        Pure: judged at a bucket's close and on the running bucket (early_shifts.py)."""
        cfg = self.cfg
        v = None
        w_ok, w_cost, w_tokens, windowed = ok, sb[S_COST], tokens, ok < cfg.shift_min_requests
        if windowed and ok:
            for r_ok, r_cost, r_tokens, *_ in st.recent_cost:
                w_ok, w_cost, w_tokens = w_ok + r_ok, w_cost + r_cost, w_tokens + r_tokens
        if w_ok >= cfg.shift_min_requests and w_tokens > 0 and sb[S_COST] > 0:
            v = ratio_verdict(w_cost / PICO * 1000 / w_tokens, st.cpt, daily, ratio=cfg.shift_ratio,
                              z=cfg.ratio_z, unit="usd_per_1k_tokens")
            if v and v.state in ("strong", "anomalous"):
                v.detail, model, calls = self._shift_detail(st, sb)
                v.model = model
                if windowed:
                    calls += sum(r[3].get(model, 0) for r in st.recent_cost)
                if calls < cfg.shift_min_model_calls * (2 if windowed else 1):  # one premium call is not a shift
                    v.state = "elevated"
                elif st.mix_share(model) >= cfg.shift_routine_share:
                    # A session on a model that usually takes a good share of this scope's calls (its
                    # second model, one session in five) is its usual mix, not a shift.
                    v.state = "elevated"
                elif sb[S_KNOWN] and sb[S_RARE] + sum(len(r) > 9 and r[4] for r in st.recent_cost
                                                      if windowed) < cfg.shift_min_model_calls:
                    # The same for a broad scope: the calls that took over the cost are on models their own
                    # keys use routinely (one key's second model is 2-10 % of its feature's calls).
                    v.state = "elevated"
        return v

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
        detail, v.model, _ = self._shift_detail(st, sb)
        v.detail = detail + f"; {rare} of {known} calls in 15 minutes on models their keys rarely use"
        return v

    def _new_model_takeover(self, st: ScopeState, sb: list, bucket: int, daily) -> Verdict | None:
        """A model new to this scope and to its teams that takes over the scope's calls within an hour of its first
        call: a model shift (the scope's calls left its usual models), not only a new model. Sparse seed 8's "team
        research switches to premium o1" was reported only as o1 being new to the team (9 minutes in); nothing said
        that the team's calls had left claude-3-5-haiku and claude-sonnet-4, and neither shift rule could speak (the
        takeover rule's session guard left 1-4 calls without sk-sparse-59's; the team's cost per token swings with
        its sessions). Evidence: >= 2 x `shift_min_model_calls` calls on the model, more than `shift_takeover_share`
        of the scope's calls since its first call, from >= `shift_takeover_keys` API keys (one key's session on a
        model it never used is a new model, not a move of the scope: the incident-free sparse days' new_model
        alerts), carrying most of the cost, >= `shift_ratio` x pricier per token than both the scope's usual cost
        per token and its other calls meanwhile. Opens at once; the window is at most an hour (as for new models)."""
        cfg = self.cfg
        adopting, models = st.adopting, sb[S_MODELS]
        for model in [m for m, a in adopting.items() if bucket - a[0] >= cfg.new_model_window_buckets * cfg.bucket_s]:
            del adopting[model]
        for model in models:
            if model not in adopting and self._new_to_scope(st, model, bucket) and (
                    st.dim == "team" or self._new_to_teams(sb[S_TEAMS], model, bucket)):
                # [first bucket, its calls, scope calls, its cost, its tokens, scope cost, scope tokens, keys, reported]
                adopting[model] = [bucket, 0, 0, 0, 0, 0, 0, [], False]
        verdict = None
        for model, a in adopting.items():
            a[2], a[5], a[6] = a[2] + sb[S_REQ], a[5] + sb[S_COST], a[6] + sb[S_TIN] + sb[S_TOUT]
            m = models.get(model)
            if not m:
                continue
            a[1], a[3], a[4] = a[1] + m[0], a[3] + m[1], a[4] + m[2]
            index = RAW_INDEX[st.dim]
            a[7] = sorted(set(a[7]) | {key[4] for key in self._rows_of_model(model) if key[index] == st.value
                                       and key[4]})
            if (a[8] or a[1] < 2 * cfg.shift_min_model_calls or a[1] <= cfg.shift_takeover_share * a[2]
                    or len(a[7]) < cfg.shift_takeover_keys or not a[4] or not a[6] or a[3] * 2 < a[5]):
                continue
            usual, _, n = st.cpt.expected(daily)
            other_cost, other_tokens = a[5] - a[3], a[6] - a[4]
            others = other_cost / PICO * 1000 / other_tokens if other_cost > 0 and other_tokens > 0 else 0.0
            expected = max(usual if n >= 12 else 0.0, others)
            if expected <= 0 or a[3] / PICO * 1000 / a[4] < cfg.shift_ratio * expected:
                continue  # a move to a model no pricier than the usual calls: no cost news
            a[8] = True  # reported once
            # Observed: the new model's cost per 1k tokens, what the scope's calls moved to (the window's mix still
            # holds the calls before the move).
            verdict = Verdict("strong", a[3] / PICO * 1000 / a[4], expected, 0.0, cfg.shift_ratio * expected,
                              "usd_per_1k_tokens")
            mix = [(info[2], name) for name, info in st.models.items() if name != model and len(info) > 2 and info[2]]
            before = f"from {max(mix)[1]} " if mix else ""
            verdict.model = model
            verdict.detail = (f"its calls moved {before}to {model}, never used by it before: {a[1]} of its {a[2]} "
                              f"calls since {iso_epoch(a[0])[11:16]} UTC, from {len(a[7])} API keys")
        return verdict

    def _rows_of_model(self, model: str) -> list:
        """The raw aggregate keys of the bucket being closed that called `model`: grouped once per close, not
        scanned per scope that is adopting a model."""
        if self._raw_by_model is None:
            self._raw_by_model = {}
            for key in self._raw:
                self._raw_by_model.setdefault(key[6], []).append(key)
        return self._raw_by_model.get(model, [])

    def _new_to_scope(self, st: ScopeState, model: str, bucket: int) -> bool:
        """Whether `model` is new to this scope: never called by it (a team: or not within `new_model_forgotten_s`,
        or not yet reported as news)."""
        info = st.models.get(model)
        if info is None:
            return True
        return st.dim == "team" and (model in st.pending or bucket - (info[4] if len(info) > 4 else info[0])
                                     >= self.cfg.new_model_forgotten_s)

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
            if not self._new_to_scope(st, model, bucket):
                # Known (on a team: called within `new_model_forgotten_s`; a model one user tried three weeks ago
                # and nobody since is news again, synthetic seeds 11 and 21).
                continue
            needed = cfg.new_model_team_min_calls if team or self._new_to_teams(sb[S_TEAMS], model, bucket) \
                else cfg.new_model_min_calls
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
            v.unpriced = not cost and model in self.agg.unpriced_reasons  # its calls cost "0": no price
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
        # Shares as the rest of the texts write them (tokenmeter.measures: one decimal, "94.5%"; it read "94%").
        now_text, usual_text = (format_percent(Decimal(repr(share))) for share in (best_now, best_usual))
        return f"{best} now carries {now_text} of its cost (usually {usual_text})", best, best_calls

