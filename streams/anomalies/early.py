"""Early checks: judge the running (not yet closed) bucket when its evidence already suffices, instead of waiting
for the bucket to close. A quiet key's error storm whose fifth failure lands at 11:45:00 was otherwise alerted at
11:52 (the close of 11:45-11:50 plus the 2-minute grace; sparse seed 8, docs/rounds/anomalies.md, seventh round).

Only for error shares (`Config.early_kinds`), and only a "strong" verdict opens early (one that would open at once at
the close too; a verdict that needs a second bucket cannot be concluded before it). The check runs when new failures
arrived (`BucketAggregator.errors`), on the scopes of those failures, with the same window as at the close (this
bucket and the two previous buckets with calls, within `error_window_s`, when this one has few calls). It opens the
anomaly through the same lifecycle (`_track`): the close of the bucket then finds it open and extends it (an
"update", never a second "open"), a close under the threshold counts towards resolving it as usual, and a restored
snapshot carries it (no second alert after a restart). Nothing is learnt early: baselines learn at the close.
"""

from __future__ import annotations

from .baseline import daily_slots
from .detectors import KIND_DIMS, error_window_verdict
from .gating import AnomalyUpdate

DIMS = ("team", "project", "user", "api_key", "feature", "model")  # positions 1..6 of a raw aggregate key


class EarlyChecks:
    """Mixin of AnomalyEngine (uses `self.cfg`, `self.agg`, `self.scopes`, `self.watermark`, the gating)."""

    _early_errors = 0  # `agg.errors` at the last early check

    def _early(self, updates: list[AnomalyUpdate]) -> None:
        cfg, agg = self.cfg, self.agg
        if "error_rate" not in cfg.early_kinds or agg.errors == self._early_errors or not agg.open:
            return
        self._early_errors = agg.errors
        # Failures per scope in the running buckets (error rows are few: a cheap first pass).
        failed: dict[tuple[str, str], int] = {}
        for raw in agg.open.values():
            for key, row in raw.items():
                if key[7]:
                    for dim, value in zip(DIMS, key[1:7]):
                        if value and dim in KIND_DIMS["error_rate"]:
                            failed[(dim, value)] = failed.get((dim, value), 0) + row[0]
        candidates = {}
        for scope, errors in failed.items():
            st = self.scopes.get(scope)
            if st is None or st.age < cfg.warmup_buckets or "error_rate" in st.open:
                continue
            recent = st.recent
            if errors + recent[0] + recent[2] >= cfg.error_min_errors:
                candidates[scope] = st
        if not candidates:
            return
        newest = max(self.sources.values(), default=self.watermark)
        # Calls and failures per candidate and running bucket (a second pass, only when a window may fire).
        counts: dict[tuple[str, str], dict[int, list[int]]] = {scope: {} for scope in candidates}
        for bucket, raw in agg.open.items():
            for key, row in raw.items():
                for dim, value in zip(DIMS, key[1:7]):
                    per_bucket = counts.get((dim, value))
                    if per_bucket is not None:
                        c = per_bucket.get(bucket)
                        if c is None:
                            c = per_bucket[bucket] = [0, 0]
                        c[1] += row[0]
                        if key[7]:
                            c[0] += row[0]
        strong = []
        for scope, st in candidates.items():
            found = self._early_error(st, counts[scope])
            if found is not None:
                strong.append((st, *found))
        if not strong:
            return
        # Opened together, explained together (as at a close): a key's storm is also its team's, alerted once.
        self._open_early(strong, "error_rate", {key: row for raw in agg.open.values() for key, row in raw.items()},
                         updates)

    def _open_early(self, found: list, kind: str, raw: dict, updates: list[AnomalyUpdate]) -> None:
        """Open the (scope state, running bucket, verdict[, detection time]) of `kind` as a close would, explained
        together over the aggregate rows `raw` (one alert per incident); shared by every early check (early_shifts.py,
        early_sizes.py)."""
        cfg = self.cfg
        saved_now, saved_opened, saved_raw = self._now, self._opened, self._raw
        self._opened, self._raw = [], raw
        try:
            newest = max(self.sources.values(), default=self.watermark)
            for st, bucket, v, *at in found:
                # Detection time in event time: the end of the newest minute read (never after the bucket's close), or
                # the time of the call that concluded it when the check knows it (early_sizes.py: judged per call).
                self._now = at[0] if at else min(max(newest, bucket) + 60, self.close_time(bucket))
                self._track(st, kind, kind, v, bucket, updates, f"{st.dim} {st.value}")
            if self._opened:
                for *_, anomaly, _update in self._opened:
                    anomaly["_early"] = True
                self.stats["early_alerts"] += len(self._opened)
                self._explain(raw)
        finally:
            self._now, self._opened, self._raw = saved_now, saved_opened, saved_raw

    def _early_error(self, st, per_bucket: dict[int, list[int]]):
        """(bucket, verdict) when the newest running bucket with calls of this scope, windowed as at its close, is
        strong; else None."""
        cfg = self.cfg
        window = [(b, c[0], c[1]) for b, c in sorted(per_bucket.items(), reverse=True) if c[1]]
        if not window:
            return None
        recent = st.recent
        window += [(recent[4], recent[0], recent[1]), (recent[5], recent[2], recent[3])]
        bucket, errors, requests = window[0]
        counts = [(errors, requests)]
        if requests < cfg.error_window_requests:
            horizon = bucket - cfg.error_window_s
            counts += [(e, r) for b, e, r in window[1:3] if b >= horizon and r]
        v = error_window_verdict(counts, st.err, daily_slots(bucket), cfg)
        return (bucket, v) if v is not None and v.state == "strong" else None
