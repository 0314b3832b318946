"""One scope's bucket: the raw aggregate rows of a closing bucket fanned out to every scope they belong to (a
row counts for its team, project, user, api key, feature and model), with the per-call evidence the rules need."""

from __future__ import annotations

from .aggregate import COST, LOGOUT, LOGSQ, MAXCOST, MAXIN, MAXOUT, MAXTOK, MINUTES, REQ, SCOPE_DIMS, TIN, TOUT

# ScopeBucket positions: requests, errors, input tokens, output tokens (ok calls), cost pico, unpriced calls/tokens
# and the largest single call's cost, input, output and total tokens (ok calls) in the bucket.
S_REQ, S_ERR, S_TIN, S_TOUT, S_COST, S_UREQ, S_UTOK, S_MODELS, S_MAXCOST, S_MAXIN, S_MAXOUT, S_MAXTOK = range(12)
# ... then the per-call log output statistics: sum and sum of squares of log(1 + output tokens) of ok calls (to learn a
# key's own distribution), and, over the calls of keys that have one, the sum of standardized scores (each call against
# its own key's distribution), their count, and the sum of the log values and of the keys' means (for the record).
S_LSUM, S_LSQ, S_ZSUM, S_ZN, S_LSTD, S_MUSUM = range(12, 18)
# ... then the calls of keys past their warm-up (judged for model shifts), those on a model their own key rarely uses
# (< `shift_routine_share` of its calls, or never), the cost and tokens of those, and the calls expected on such models
# (each call weighted by its key's usual share of its rare models).
S_KNOWN, S_RARE, S_RCOST, S_RTOK, S_RP, S_RKEYS = range(18, 24)
# ... then a bit per minute of the bucket with a call of this scope in it, and the teams of its calls (not on a team),
# and the ok calls in the log output sums (S_LSUM, S_LSQ: priced calls only, the calls a key learns its own sizes from).
S_MINUTES, S_TEAMS, S_LN = 24, 25, 26


def empty_bucket() -> list:
    return [0, 0, 0, 0, 0, 0, 0, {}, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0, 0.0, 0.0, 0, 0, 0, 0, 0.0, None, 0, None, 0]


class FanOut:
    """Mixin of AnomalyEngine (uses `self.cfg`, `self.scopes`)."""

    def _fan_out(self, raw: dict) -> dict[tuple[str, str], list]:
        per_scope: dict[tuple[str, str], list] = {}
        scopes = self.scopes
        rare_shares: dict[str, float] = {}  # api key -> usual share of its calls on models it rarely uses
        for key, agg in raw.items():
            error, unpriced, model = key[7], key[8], key[6]
            values = (*key[1:6], model)
            # Each call's log output against its own key's distribution (a feature's keys differ in size).
            zsum = zn = 0
            # (Calls of a model nobody priced are their own anomaly, with no known size: not judged here.)
            owner = None if error or unpriced or not key[4] else scopes.get(("api_key", key[4]))
            if owner is not None and owner.out_log[0] >= self.cfg.tpr_key_min_calls:
                zn, mu, sd = agg[REQ], owner.out_log[1], owner.out_sd()
                zsum = (agg[LOGOUT] - zn * mu) / sd
            known = rare = 0
            rare_p = 0.0
            if owner is not None and owner.age >= self.cfg.warmup_buckets:
                # A call on a model its own key rarely uses (a team's share of a key's second model says nothing).
                known, routine = agg[REQ], self.cfg.shift_routine_share
                rare = known if owner.mix_share(model) < routine else 0
                rare_p = rare_shares.get(key[4], -1.0)
                if rare_p < 0:
                    rare_p = rare_shares[key[4]] = sum(share for share in owner.mix[1].values() if share < routine)
                rare_p *= known
            # (the row's figures read once: they are added to up to six scopes)
            req, cost, tin, tout, minutes = agg[REQ], agg[COST], agg[TIN], agg[TOUT], agg[MINUTES]
            max_cost, max_in, max_out, max_tok, log_out = agg[MAXCOST], agg[MAXIN], agg[MAXOUT], agg[MAXTOK], agg[LOGOUT]
            tokens, team, api_key = tin + tout, key[1], key[4]
            if zn:
                mu_sum = zn * mu
            for dim, value in zip(SCOPE_DIMS, values):
                if not value:
                    continue
                sb = per_scope.get((dim, value))
                if sb is None:
                    sb = per_scope[(dim, value)] = empty_bucket()
                sb[S_REQ] += req
                sb[S_COST] += cost
                sb[S_MINUTES] |= minutes
                if team and dim != "team":
                    if sb[S_TEAMS] is None:
                        sb[S_TEAMS] = {team}
                    else:
                        sb[S_TEAMS].add(team)
                if max_cost > sb[S_MAXCOST]:
                    sb[S_MAXCOST] = max_cost
                if error:
                    sb[S_ERR] += req
                else:
                    sb[S_TIN] += tin
                    sb[S_TOUT] += tout
                    if max_in > sb[S_MAXIN]:
                        sb[S_MAXIN] = max_in
                    if max_out > sb[S_MAXOUT]:
                        sb[S_MAXOUT] = max_out
                    if max_tok > sb[S_MAXTOK]:
                        sb[S_MAXTOK] = max_tok
                    if not unpriced:
                        # Calls of a model nobody priced are their own anomaly (often another client's: an
                        # unpriced model's calls of 400 tokens took sk-sparse-37's learnt median from 880 to 540,
                        # sparse seed 11), and are not judged against the key either: not learnt as its sizes.
                        sb[S_LSUM] += log_out
                        sb[S_LSQ] += agg[LOGSQ]
                        sb[S_LN] += req
                    if known and dim != "model":
                        sb[S_KNOWN] += known
                        sb[S_RP] += rare_p
                        if sb[S_RKEYS] is None:
                            sb[S_RKEYS] = {}
                        per_key = sb[S_RKEYS].get(api_key)
                        if per_key is None:
                            per_key = sb[S_RKEYS][api_key] = [0, 0, 0.0]
                        per_key[1] += known
                        per_key[2] += rare_p
                        if rare:
                            sb[S_RARE] += rare
                            sb[S_RCOST] += cost
                            sb[S_RTOK] += tokens
                            per_key[0] += rare
                    if zn:
                        sb[S_ZSUM] += zsum
                        sb[S_ZN] += zn
                        sb[S_LSTD] += log_out
                        sb[S_MUSUM] += mu_sum
                if unpriced:
                    sb[S_UREQ] += req
                    sb[S_UTOK] += tokens
                if dim != "model":
                    m = sb[S_MODELS].get(model)
                    if m is None:
                        m = sb[S_MODELS][model] = [0, 0, 0]
                    m[0] += req
                    m[1] += cost
                    m[2] += tokens
        return per_scope

