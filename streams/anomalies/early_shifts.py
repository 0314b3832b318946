"""Early model-shift checks: judge the running (not yet closed) bucket with the model shift rules when calls on models
their keys rarely use arrive, instead of waiting for its close. A shift's evidence is often complete in a bucket's
first minutes, and the close adds the rest of the bucket plus the 2-minute grace: sparse seed 8's "team research
switches to premium o1" (key sk-sparse-35's cost per token anomalous for a second bucket) had that bucket's evidence
by the minute 13:58 and was alerted at 14:02 (the close of 13:55-14:00), 15.8 minutes after its first changed call;
now at 13:59 (docs/rounds/anomalies.md, shift19).

The same rules as at the close, on the same window (`_cost_shift`, `_rare_model_takeover`: this bucket's calls so far,
and a quiet scope's two previous buckets with calls), and only a verdict that would open now at the close too: a
strong one, or an anomalous one whose previous bucket was anomalous already (its streak). Not the new-model takeover
rule (it keeps its own per-bucket tallies, learnt at the close). It opens through the same lifecycle (`_track`) and
the same one-alert-per-move gating (`_explain`): the close then finds it open and extends it. Nothing is learnt
early. Only the oldest open bucket is judged: its window of closed buckets is the scope's own (`recent_cost`); a
call in the next bucket while the oldest is in its grace is judged when the oldest has closed.
"""

from __future__ import annotations

from .aggregate import REQ
from .baseline import daily_slots
from .detectors import KIND_DIMS
from .gating import AnomalyUpdate
from .scope_bucket import S_ERR, S_RARE, S_REQ, S_TIN, S_TOUT

FIRING = ("strong", "anomalous")


class EarlyShifts:
    """Mixin of AnomalyEngine (uses `self.cfg`, `self.agg`, `self.scopes`, the fan-out, the model rules, the gating)."""

    _early_rare = (0, 0)  # (bucket, calls on models their keys rarely use) at the last early shift check

    def _early_shifts(self, updates: list[AnomalyUpdate]) -> None:
        cfg, bucket = self.cfg, self.next_close
        if "model_shift" not in cfg.early_kinds or bucket is None:
            return
        raw = self.agg.open.get(bucket)
        if not raw:
            return
        # A cheap first pass: new calls on a model their own (warm) key rarely uses. Nothing else can make a shift.
        rare, routine, warmup = 0, cfg.shift_routine_share, cfg.warmup_buckets
        for key, row in raw.items():
            if key[7] or key[8] or not key[4]:
                continue  # a failure, an unpriced call or no key: not judged as a move (as in the fan-out)
            owner = self.scopes.get(("api_key", key[4]))
            if owner is not None and owner.age >= warmup and owner.mix_share(key[6]) < routine:
                rare += row[REQ]
        if not rare or (bucket, rare) == self._early_rare:
            return
        self._early_rare = (bucket, rare)
        daily = daily_slots(bucket)
        found = []
        for scope, sb in self._fan_out(raw).items():
            if not sb[S_RARE] or scope[0] not in KIND_DIMS["model_shift"]:
                continue
            st = self.scopes.get(scope)
            if st is None or st.age < warmup or "model_shift" in st.open:
                continue
            v = self._cost_shift(st, sb, sb[S_REQ] - sb[S_ERR], sb[S_TIN] + sb[S_TOUT], daily)
            if v is None or v.state not in FIRING:
                v = self._rare_model_takeover(st, sb, daily) or v
            if v is None or v.state not in FIRING:
                continue
            streak = st.streaks.get("model_shift")
            if v.state == "strong" or (streak is not None and streak[0] + 1 >= (v.after or cfg.open_after)):
                # opens now (an anomalous one that would start a streak waits for the close)
                found.append((st, bucket, v))
        if found:
            self._open_early(sorted(found, key=lambda f: (f[0].dim, f[0].value)), "model_shift", raw, updates)
