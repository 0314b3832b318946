"""Early tokens-per-request checks: the CUSUM of a scope's standardized log output (rules.py, `_output_shift`) judged
after each call of the running (not yet closed) bucket, as the call arrives, instead of at the bucket's close. The
close added the rest of the bucket plus the 2-minute grace to every detection: on sparse seed 21 every template change
was alerted at a close, 2.9-6.7 minutes after the call that had taken its bucket's CUSUM over h (docs/rounds/anomalies.md,
tpr23).

The same statistic as at the close (`_cusum_step`: the scope's CUSUM, faded over its pause, plus this bucket's calls
so far, each against its own key's distribution, the step clipped to 3 sqrt(n)), and only what opens at the close
opens here: S >= h with a positive step. Not the per-bucket mean rule of busy scopes (a bucket's mean needs the
bucket). Opened through the same lifecycle and gating as at the close (`_open_early`); the close then extends it,
and keeps the CUSUM (nothing is learnt or kept early). Only the oldest open bucket is judged (its scopes' state is
the one its close will judge with), as for model shifts. The alert carries the crossing call's time, but not before
the previous bucket's close (`close_time`: the state it was judged with) nor after this bucket's own close.

The calls come from `BucketAggregator.calls` (kept only when "tokens_per_request" is an early kind). A restored
snapshot has the running bucket's sums but not its calls: the calls before a restart are judged at the close only.
"""

from __future__ import annotations

import math

from .detectors import KIND_DIMS
from .gating import AnomalyUpdate

DIMS = ("team", "project", "user", "api_key", "feature")  # positions 1..5 of a raw aggregate key
_UNSEEN = object()


class EarlySizes:
    """Mixin of AnomalyEngine (uses `self.cfg`, `self.agg`, `self.scopes`, the rules' CUSUM, `_open_early`)."""

    # The oldest open bucket's walk so far: [bucket, calls judged, {scope: [calls, sum of scores, of log outputs, of
    # keys' means, state, its CUSUM faded to this bucket, h, still judged] or None when not judged}, {raw key: (its
    # key's mean, sd, the sums of its judged scopes) or None}]. Rebuilt from its first call when the oldest bucket
    # changes (the close before it changed the keys' distributions and the scopes' CUSUMs; until then they are fixed,
    # so each is read once per bucket and raw key, not once per call).
    _size_walk: list | None = None

    def _early_sizes(self, updates: list[AnomalyUpdate]) -> None:
        cfg, bucket = self.cfg, self.next_close
        if "tokens_per_request" not in cfg.early_kinds or bucket is None:
            return
        calls = self.agg.calls.get(bucket)
        walk = self._size_walk
        if walk is None or walk[0] != bucket:
            walk = self._size_walk = [bucket, 0, {}, {}]
        if not calls or walk[1] >= len(calls):
            return
        rows, k, unseen = walk[3], cfg.tpr_cusum_k, _UNSEEN
        earliest, latest = self.close_time(bucket - cfg.bucket_s), self.close_time(bucket)
        found, newest = [], 0
        for second, key, log_out in calls[walk[1]:]:
            if second > newest:
                newest = second
            row = rows.get(key, unseen)
            if row is unseen:
                row = rows[key] = self._size_row(key, walk[2])
            if row is None:
                continue
            mu, sd, targets = row
            z = (log_out - mu) / sd
            for s in targets:
                if not s[7]:
                    continue
                s[0] += 1
                s[1] += z
                s[2] += log_out
                s[3] += mu
                # `_cusum_step`'s arithmetic: S = faded S + the step clipped to 3 sqrt(n) reaches h, the step positive
                step = s[1] - k * s[0]
                if step > 0 and s[5] + step >= s[6] and s[5] + min(step, 3.0 * math.sqrt(s[0])) >= s[6]:
                    # Opened at this call: its time (the newest call judged), within the bounds above.
                    found.append((s[4], bucket, self._size_verdict("strong", s[0], s[2], s[3]),
                                  min(max(newest, earliest), latest)))
                    s[7] = False  # (open now: the close extends it)
        walk[1] = len(calls)
        if found:
            found.sort(key=lambda f: (f[0].dim, f[0].value))
            self._open_early(found, "tokens_per_request", self.agg.open.get(bucket, {}), updates)

    def _size_row(self, key: tuple, sums: dict) -> tuple | None:
        """(mean, sd of the call's key, the running sums of the scopes it counts for), or None when its key has no
        distribution of its own (as in the fan-out: it scores nothing) or none of its scopes is judged."""
        cfg, scopes, bucket = self.cfg, self.scopes, self._size_walk[0]
        owner = scopes.get(("api_key", key[4]))
        if owner is None or owner.out_log[0] < cfg.tpr_key_min_calls:
            return None
        dims, targets = KIND_DIMS["tokens_per_request"], []
        for dim, value in zip(DIMS, key[1:6]):
            if not value:
                continue
            s = sums.get((dim, value), _UNSEEN)
            if s is _UNSEEN:
                st = scopes.get((dim, value))
                judged = (st is not None and dim in dims and st.age >= cfg.warmup_buckets
                          and "tokens_per_request" not in st.open)
                s = sums[(dim, value)] = [0, 0.0, 0.0, 0.0, st, *self._cusum_base(st, bucket), True] if judged else None
            if s is not None:
                targets.append(s)
        return (owner.out_log[1], owner.out_sd(), targets) if targets else None
