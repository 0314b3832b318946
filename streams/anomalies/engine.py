"""AnomalyEngine: priced events in, anomaly lifecycle updates out. Pure (no Kafka, no clock): driven by event time.

Events are folded into fixed buckets (aggregate.py). A bucket closes once the event-time watermark passes its end
plus `grace_s`; the watermark is the minimum latest event time over the inputs (partitions) that still hold unread
records (`observe(..., source=p)`, `set_behind`), and a wall-clock `advance_to` is refused over history; then every known scope gets one step: detectors judge the bucket against the scope's baselines
(detectors.py), the baselines learn from it (baseline.py), and anomalies open, extend or close. State is bounded
(at most `max_scopes`, idle scopes expire) and round-trips through JSON (`snapshot()` / `restore()`).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from .aggregate import (AGG_SIZE, COST, LOGOUT, LOGSQ, MAXCOST, MAXIN, MAXOUT, MAXTOK, PICO, REQ, SCOPE_DIMS, TIN, TOUT, BadEvent,
                        BucketAggregator, pico_to_str)
from .baseline import daily_slots, full_slots
from .detectors import (KIND_DIMS, Config, Verdict, binomial_tail, error_verdict, explain, rate_verdict, ratio_verdict,
                        severity)
from .scope_state import ScopeState

SNAPSHOT_VERSION = 1
UNITS = {"spend_rate": "usd_per_hour", "token_rate": "tokens_per_hour", "request_burst": "requests_per_hour",
         "tokens_per_request": "tokens_per_request", "error_rate": "error_ratio", "model_shift": "usd_per_1k_tokens",
         "new_model": "usd_per_hour", "unpriced_usage": "unpriced_tokens_per_hour"}
# One incident shows on several scopes (a key's loop is also its user's, team's and model's spend anomaly). A broader
# scope's anomaly is recorded but not alerted when an open anomaly of the same kind on a narrower scope that shares
# its traffic explains it (for volumes: at least half of its excess).
SPECIFICITY = {"api_key": 0, "user": 1, "feature": 2, "project": 3, "team": 4, "model": 5}
RAW_INDEX = {"team": 1, "project": 2, "user": 3, "api_key": 4, "feature": 5, "model": 6}  # positions in a raw key
VOLUME_KINDS = ("spend_rate", "token_rate", "request_burst", "unpriced_usage")
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


BUSY_COST, BUSY_TOKENS, BUSY_CALLS = ((0, 0.03),), ((1, 0.03),), ((2, 0.03),)
SUSTAINED_KINDS = ("spend_rate", "token_rate")
# Kinds whose anomaly on a narrower scope, opening after an alerted one of the same kind on a broader scope sharing its
# traffic, is recorded, not alerted: an error share is not additive, so a key's storm seen first on its team is one
# incident. (Volume kinds are not: a second key's loop under a team that is already spending is news.)
LATER_NARROWER_EXPLAINED = ("error_rate",)
OUT_RATE_TAU_S = 2 * 86400  # memory of a scope's call volume (calls per day), for the tokens-per-request CUSUM


def empty_bucket() -> list:
    return [0, 0, 0, 0, 0, 0, 0, {}, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0, 0.0, 0.0, 0, 0, 0, 0, 0.0, None]


def iso_epoch(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class AnomalyUpdate:
    action: str  # "open" (new anomaly: alert trigger), "update" (still ongoing, later end), "close" (resolve)
    record: dict  # anomaly record per tokenmeter/records.py
    notify: bool = True  # False: explained by a narrower anomaly of the same kind, recorded but not alerted


class AnomalyEngine:
    def __init__(self, config: Config | None = None):
        self.cfg = config or Config()
        self.agg = BucketAggregator(self.cfg.bucket_s)
        self.scopes: dict[tuple[str, str], ScopeState] = {}
        self.next_close: int | None = None  # start of the oldest bucket not closed yet
        self.started: int = 0  # the first bucket this engine closed (its own warm-up)
        self.watermark = 0  # event-time watermark (epoch seconds): buckets ending before it (minus grace) close
        # Per input (a Kafka partition): the latest event minute it delivered. The watermark is the minimum over the
        # inputs that still hold unread records (`set_behind`), as in Flink / Kafka Streams: one partition read
        # faster than another must not make the other's history late. Caught-up inputs are idle and do not hold it.
        self.sources: dict[int, int] = {}
        self.behind: set[int] | None = None  # None: every input seen so far holds the watermark
        self.stats = {"events": 0, "bad_events": 0, "late_events": 0, "future_events": 0, "buckets_closed": 0,
                      "scopes_evicted": 0, "scopes_expired": 0, "anomalies_opened": 0, "anomalies_closed": 0,
                      "anomalies_explained": 0, "advances_refused": 0, "duplicate_events": 0}
        self.last_error = ""
        self._now = 0  # event time of the bucket close being processed
        self._opened: list = []  # anomalies opened by the bucket close being processed
        self.max_future_s = 3600  # a client clock far ahead must not close every bucket at once

    # Input ---------------------------------------------------------------------------------------------------
    def observe(self, priced_events: list[dict], now: float | None = None, source: int = 0) -> list[AnomalyUpdate]:
        """Fold events of one input (`source`, e.g. a partition; events of one input arrive in about event-time
        order) and close the buckets the watermark has passed."""
        agg, bucket_s, stats = self.agg, self.cfg.bucket_s, self.stats
        limit = (now if now is not None else time.time()) + self.max_future_s
        watermark, next_close = self.sources.get(source, 0), self.next_close
        for event in priced_events:
            try:
                minute = agg.minute_of(event["ts"])
                if minute > limit:
                    stats["future_events"] += 1
                    continue
                bucket = minute - minute % bucket_s
                if next_close is None or (bucket < next_close and not stats["buckets_closed"]):
                    next_close = bucket  # nothing closed yet: an earlier event (another input) is not late
                elif bucket < next_close:  # too late for its bucket: counted in the oldest open one
                    stats["late_events"] += 1
                    bucket = next_close
                agg.add(event, bucket)
            except (BadEvent, KeyError, TypeError, AttributeError, ValueError) as exc:
                stats["bad_events"] += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                continue
            if minute > watermark:
                watermark = minute
        stats["events"] += len(priced_events)
        if watermark:
            self.sources[source] = watermark
        self.next_close = next_close
        self._combine()
        return self._close_ready()

    def set_behind(self, sources) -> list[AnomalyUpdate]:
        """The inputs that still hold unread records (a partition below its high watermark). Only they hold the
        watermark back; a caught-up input is idle (it may stay silent for hours) and must not stall the others."""
        self.behind = {int(s) for s in sources}
        self._combine()
        return self._close_ready()

    def _combine(self) -> None:
        holders = self.sources.keys() if self.behind is None else self.behind
        if holders:
            if any(s not in self.sources for s in holders):
                return  # an input with unread records has delivered nothing yet: it may hold the oldest events
            candidate = min(self.sources[s] for s in holders)
        else:
            candidate = max(self.sources.values(), default=0)
        if candidate > self.watermark:
            self.watermark = candidate

    def advance_to(self, epoch_s: float) -> list[AnomalyUpdate]:
        """Move the watermark without events to a wall-clock time (quiet live traffic, so an anomaly still resolves;
        the end of an evaluation) and close due buckets. Refused when the newest event time is more than
        `Config.live_lag_s` behind `epoch_s`: then the input is history being read (a backfill, a replay), and
        jumping to the wall clock would close every bucket in between and make the rest of that history late.
        Callers reading several inputs advance only once every input has caught up (the runner does)."""
        if self.next_close is not None and epoch_s > self.watermark:
            if epoch_s - self.watermark > self.cfg.live_lag_s:
                self.stats["advances_refused"] += 1
            else:
                self.watermark = int(epoch_s)
        return self._close_ready()

    # Bucket close --------------------------------------------------------------------------------------------
    def _close_ready(self) -> list[AnomalyUpdate]:
        updates: list[AnomalyUpdate] = []
        cfg = self.cfg
        while self.next_close is not None and self.next_close + cfg.bucket_s + cfg.grace_s <= self.watermark + 60:
            self._close(self.next_close, updates)
            self.next_close += cfg.bucket_s
        return updates

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
                usual = owner.models.get(model)
                rare = known if usual is None or len(usual) < 3 or usual[2] < routine else 0
                rare_p = rare_shares.get(key[4], -1.0)
                if rare_p < 0:
                    rare_p = rare_shares[key[4]] = sum(i[2] for i in owner.models.values() if len(i) > 2 and i[2] < routine)
                rare_p *= known
            for dim, value in zip(SCOPE_DIMS, values):
                if not value:
                    continue
                sb = per_scope.get((dim, value))
                if sb is None:
                    sb = per_scope[(dim, value)] = empty_bucket()
                sb[S_REQ] += agg[REQ]
                sb[S_COST] += agg[COST]
                if agg[MAXCOST] > sb[S_MAXCOST]:
                    sb[S_MAXCOST] = agg[MAXCOST]
                if error:
                    sb[S_ERR] += agg[REQ]
                else:
                    sb[S_TIN] += agg[TIN]
                    sb[S_TOUT] += agg[TOUT]
                    if agg[MAXIN] > sb[S_MAXIN]:
                        sb[S_MAXIN] = agg[MAXIN]
                    if agg[MAXOUT] > sb[S_MAXOUT]:
                        sb[S_MAXOUT] = agg[MAXOUT]
                    if agg[MAXTOK] > sb[S_MAXTOK]:
                        sb[S_MAXTOK] = agg[MAXTOK]
                    sb[S_LSUM] += agg[LOGOUT]
                    sb[S_LSQ] += agg[LOGSQ]
                    if known and dim != "model":
                        sb[S_KNOWN] += known
                        sb[S_RP] += rare_p
                        if sb[S_RKEYS] is None:
                            sb[S_RKEYS] = {}
                        per_key = sb[S_RKEYS].get(key[4])
                        if per_key is None:
                            per_key = sb[S_RKEYS][key[4]] = [0, 0, 0.0]
                        per_key[1] += known
                        per_key[2] += rare_p
                        if rare:
                            sb[S_RARE] += rare
                            sb[S_RCOST] += agg[COST]
                            sb[S_RTOK] += agg[TIN] + agg[TOUT]
                            per_key[0] += rare
                    if zn:
                        sb[S_ZSUM] += zsum
                        sb[S_ZN] += zn
                        sb[S_LSTD] += agg[LOGOUT]
                        sb[S_MUSUM] += zn * mu
                if unpriced:
                    sb[S_UREQ] += agg[REQ]
                    sb[S_UTOK] += agg[TIN] + agg[TOUT]
                if dim != "model":
                    m = sb[S_MODELS].get(model)
                    if m is None:
                        m = sb[S_MODELS][model] = [0, 0, 0]
                    m[0] += agg[REQ]
                    m[1] += agg[COST]
                    m[2] += agg[TIN] + agg[TOUT]
        return per_scope

    def _close(self, bucket: int, updates: list[AnomalyUpdate]) -> None:
        # Detection time in event time: the earliest moment this bucket could close, so figures do not depend
        # on how events were batched.
        self._now = bucket + self.cfg.bucket_s + self.cfg.grace_s
        if not self.stats["buckets_closed"]:
            self.started = bucket
        raw = self.agg.open.pop(bucket, {})
        self.agg.seen.pop(bucket, None)
        self.stats["duplicate_events"] = self.agg.duplicates
        per_scope = self._fan_out(raw)
        self._opened: list = []
        for key in per_scope:
            if key not in self.scopes:
                self._admit(key, bucket)
        full, daily = full_slots(bucket), daily_slots(bucket)
        for key, state in self.scopes.items():
            sb = per_scope.get(key)
            if sb is None and not state.open and not state.streaks:
                # Quiet scope: only the rate baselines learn that this hour is quiet.
                state.spend.update(full, 0.0)
                state.tokens.update(full, 0.0)
                if state.requests is not None:
                    state.requests.update(full, 0.0)
                state.age += 1
                # (`recent` keeps the last buckets *with calls*: an empty bucket holds no evidence on error shares.)
                if state.recent_cost[0][0]:
                    state.recent_cost = [[0, 0, 0, {}], state.recent_cost[0]]
                continue
            if sb is not None:
                state.last_active = bucket
            self._step(state, sb or empty_bucket(), bucket, full, daily, updates)
            state.age += 1
        if self._opened:
            self._explain(raw)
        self.stats["buckets_closed"] += 1
        if self.stats["buckets_closed"] % 12 == 0:
            self._expire(bucket, updates)

    def _admit(self, key: tuple[str, str], bucket: int) -> None:
        if len(self.scopes) >= self.cfg.max_scopes:  # bounded state: forget the scope idle the longest
            victim = min((k for k, s in self.scopes.items() if not s.open), default=None,
                         key=lambda k: self.scopes[k].last_active)
            if victim is None:
                return
            del self.scopes[victim]
            self.stats["scopes_evicted"] += 1
        self.scopes[key] = ScopeState(key[0], key[1], bucket)

    def _expire(self, bucket: int, updates: list[AnomalyUpdate]) -> None:
        horizon = bucket - self.cfg.idle_expire_s
        for key in [k for k, s in self.scopes.items() if s.last_active < horizon]:
            state = self.scopes.pop(key)
            for kind_key in list(state.open):
                self._finish(state, kind_key, updates)
            self.stats["scopes_expired"] += 1

    # One scope, one bucket -----------------------------------------------------------------------------------
    def _step(self, st: ScopeState, sb: list, bucket: int, full, daily, updates: list[AnomalyUpdate]) -> None:
        cfg = self.cfg
        per_hour = 3600 / cfg.bucket_s
        warm = st.age >= cfg.warmup_buckets
        dim = st.dim
        cost_usd = sb[S_COST] / PICO
        tokens = sb[S_TIN] + sb[S_TOUT]
        ok = sb[S_REQ] - sb[S_ERR]
        label = f"{dim} {st.value}"
        track = self._track
        # False when spend or tokens are anomalous for a second bucket in a row (a loop in the making): then the bucket
        # does not teach what a busy bucket is. One anomalous bucket (a session) still does.
        quiet_volume = True

        # Evidence, not one call: volumes are judged without the bucket's largest call, need a few calls, and must
        # exceed what `typical_calls` of this scope's usual calls would add (its own call-size scale).
        trim_cost = (sb[S_COST] - sb[S_MAXCOST]) / PICO
        trim_tokens = float(tokens - sb[S_MAXTOK])
        busy_cost, busy_tokens = st.busy_high(0), st.busy_high(1)
        # Opening at once needs more calls than this scope's busy buckets hold (a loop, not a long session).
        strong_calls = max(cfg.strong_min_calls, cfg.strong_busy_calls * st.busy_high(2))
        if warm:
            floor = max(cfg.spend_min_delta_usd_per_hour / per_hour, cfg.typical_calls * st.call_cost, busy_cost)
            v = rate_verdict(cost_usd, st.spend, full, z=cfg.z, ratio=cfg.spend_ratio, min_delta=floor, counts=False,
                             unit="usd_per_hour", per_hour=per_hour, trimmed=trim_cost, calls=sb[S_REQ],
                             min_calls=cfg.volume_min_calls, strong_calls=strong_calls,
                             strong_volume=self._strong_volume(busy_cost, sb[S_REQ]))
            v = self._beyond_busy(v, st, trim_cost, sb[S_REQ], floor, per_hour)
            quiet_volume = not (v is not None and v.state in ("strong", "anomalous") and "spend_rate" in st.streaks)
            track(st, "spend_rate", "spend_rate", v, bucket, updates, label, exact=pico_to_str(sb[S_COST] * int(per_hour)))
            floor = max(cfg.token_min_delta_per_hour / per_hour, cfg.typical_calls * st.call_tokens, busy_tokens)
            v = rate_verdict(float(tokens), st.tokens, full, z=cfg.z, ratio=cfg.token_ratio, min_delta=floor,
                             counts=True, unit="tokens_per_hour", per_hour=per_hour, trimmed=trim_tokens, calls=ok,
                             min_calls=cfg.volume_min_calls, strong_calls=strong_calls,
                             strong_volume=self._strong_volume(busy_tokens, sb[S_REQ]))
            quiet_volume = quiet_volume and not (v is not None and v.state in ("strong", "anomalous")
                                                 and "token_rate" in st.streaks)
            track(st, "token_rate", "token_rate", v, bucket, updates, label)
            v = None
            if ok >= cfg.tpr_min_requests and dim in KIND_DIMS["tokens_per_request"]:
                # Means without the largest call: one 120k-token document is not a changed template.
                v_out = ratio_verdict((sb[S_TOUT] - sb[S_MAXOUT]) / (ok - 1), st.tpr_out, daily, ratio=cfg.tpr_ratio,
                                      z=cfg.ratio_z, unit="tokens_per_request")
                v_in = ratio_verdict((sb[S_TIN] - sb[S_MAXIN]) / (ok - 1), st.tpr_in, daily, ratio=cfg.tpr_ratio,
                                     z=cfg.ratio_z, unit="tokens_per_request")
                candidates = [(x.observed / x.expected, name, x) for name, x in (("output", v_out), ("input", v_in)) if x]
                if candidates:
                    _, v_detail, v = max(candidates, key=lambda c: c[0])
                    v.detail = v_detail
                    if v.state == "strong" and (ok < 2 * cfg.tpr_min_requests or v_detail == "input"):
                        # A few calls (one long session) must hold for a second bucket.
                        v.state = "anomalous"
                    if v_detail == "input" and v.state == "anomalous":
                        # Prompts are heavy-tailed and an agent's context grows along its session (a session with
                        # two 100k-token documents is not a template): longer prompts must last 15 minutes.
                        v.after = cfg.sustained_after
            if dim in KIND_DIMS["tokens_per_request"]:
                v = self._output_shift(st, sb, v)
            was_open = "tokens_per_request" in st.open
            track(st, "tokens_per_request", "tokens_per_request", v, bucket, updates, label)
            if was_open and "tokens_per_request" not in st.open:
                st.cusum = 0.0  # closed: the evidence is spent
            errors, requests = sb[S_ERR], sb[S_REQ]
            if requests < cfg.error_window_requests:
                # A quiet scope: this bucket and its two previous buckets with calls, within `error_window_s`
                # (a key calling every few minutes puts a storm's five failures into four buckets, one empty).
                recent, horizon = st.recent, bucket - cfg.error_window_s
                if recent[4] >= horizon:
                    errors += recent[0]
                    requests += recent[1]
                if recent[5] >= horizon:
                    errors += recent[2]
                    requests += recent[3]
            track(st, "error_rate", "error_rate", error_verdict(errors, requests, st.err, daily, cfg),
                  bucket, updates, label)
            if dim in KIND_DIMS["model_shift"]:
                v = None
                # A quiet scope's last three buckets are judged together (like error shares).
                w_ok, w_cost, w_tokens, windowed = ok, sb[S_COST], tokens, ok < cfg.shift_min_requests
                if windowed and ok:
                    for r_ok, r_cost, r_tokens, *_ in st.recent_cost:
                        w_ok, w_cost, w_tokens = w_ok + r_ok, w_cost + r_cost, w_tokens + r_tokens
                if w_ok >= cfg.shift_min_requests and w_tokens > 0 and sb[S_COST] > 0:
                    v = ratio_verdict(w_cost / PICO * 1000 / w_tokens, st.cpt, daily, ratio=cfg.shift_ratio,
                                      z=cfg.ratio_z, unit="usd_per_1k_tokens")
                    if v and v.state in ("strong", "anomalous"):
                        v.detail, model, calls = self._shift_detail(st, sb)
                        if windowed:
                            calls += sum(r[3].get(model, 0) for r in st.recent_cost)
                        if calls < cfg.shift_min_model_calls * (2 if windowed else 1):  # one premium call is not a shift
                            v.state = "elevated"
                        elif (st.models.get(model) or [0, 0.0, 0.0])[2:3] >= [cfg.shift_routine_share]:
                            # A session on a model that usually takes a good share of this scope's calls (its
                            # second model, one session in five) is its usual mix, not a shift.
                            v.state = "elevated"
                        elif sb[S_KNOWN] and sb[S_RARE] + sum(len(r) > 9 and r[4] for r in st.recent_cost
                                                              if windowed) < cfg.shift_min_model_calls:
                            # The same for a broad scope: the calls that took over the cost are on models their own
                            # keys use routinely (one key's second model is 2-10 % of its feature's calls).
                            v.state = "elevated"
                if v is None or v.state not in ("strong", "anomalous"):
                    v = self._rare_model_takeover(st, sb, daily) or v
                track(st, "model_shift", "model_shift", v, bucket, updates, label)

        if dim in KIND_DIMS["request_burst"]:
            v = None
            if warm:
                v = rate_verdict(float(sb[S_REQ]), st.requests, full, z=cfg.z, ratio=cfg.burst_ratio,
                                 min_delta=cfg.burst_min_delta_per_hour / per_hour, counts=True,
                                 unit="requests_per_hour", per_hour=per_hour)
                busy_calls = st.busy_high(2)
                if v is None and busy_calls:
                    # A key with history at an hour it was never seen in (its nightly job moved by daylight saving
                    # or running late) is judged against its own busy buckets, not as a key without history.
                    rate, high = sb[S_REQ] * per_hour, max(cfg.burst_floor_per_hour, cfg.burst_ratio * busy_calls * per_hour)
                    v = Verdict("strong" if rate >= high else "normal", rate, busy_calls * per_hour, 0.0, high,
                                "requests_per_hour")
                elif v is not None and v.state in ("strong", "anomalous") and sb[S_REQ] < cfg.burst_busy_multiple * busy_calls:
                    v.state = "elevated"  # no more calls than this key's busy buckets hold: its own job, an hour late
            if v is None and bucket - self.started >= cfg.warmup_buckets * cfg.bucket_s:
                # A key without history, appearing after the detector knows the usual keys: only an absolute
                # floor counts. (When the detector itself is new, every key is new: none is suspicious.)
                rate = sb[S_REQ] * per_hour
                v = Verdict("strong" if rate >= cfg.burst_floor_per_hour else "normal", rate, 0.0, 0.0,
                            cfg.burst_floor_per_hour, "requests_per_hour")
            track(st, "request_burst", "request_burst", v, bucket, updates, label)

        if dim in KIND_DIMS["unpriced_usage"]:
            v = None
            if sb[S_UREQ] or "unpriced_usage" in st.open:
                v = Verdict("strong" if sb[S_UREQ] else "normal", sb[S_UTOK] * per_hour, 0.0, 0.0, 0.0,
                            "unpriced_tokens_per_hour")
                reason = self.agg.unpriced_reasons.get(st.value, "no price")
                v.detail = f"{st.value} ({sb[S_UREQ]} calls in 5 minutes; {reason})" if sb[S_UREQ] else st.value
            track(st, "unpriced_usage", "unpriced_usage", v, bucket, updates, label)
        if dim in KIND_DIMS["new_model"]:
            self._new_models(st, sb, bucket, warm, per_hour, updates, label)

        # Learn from this bucket after judging it.
        st.spend.update(full, cost_usd)
        st.tokens.update(full, float(tokens))
        if st.requests is not None:
            st.requests.update(full, float(sb[S_REQ]))
        if ok >= 3:
            st.tpr_out.update(daily, (sb[S_TOUT] - sb[S_MAXOUT]) / (ok - 1))
            st.tpr_in.update(daily, (sb[S_TIN] - sb[S_MAXIN]) / (ok - 1))
            if tokens > 0 and sb[S_COST] > 0:
                st.cpt.update(daily, cost_usd * 1000 / tokens)
        if sb[S_REQ] >= 5:
            st.err.update(daily, sb[S_ERR] / sb[S_REQ])
        if sb[S_REQ]:
            st.recent = [sb[S_ERR], sb[S_REQ], st.recent[0], st.recent[1], bucket, st.recent[4]]
        if dim in KIND_DIMS["model_shift"]:
            st.recent_cost = [[ok, sb[S_COST], tokens, {m: c[0] for m, c in sb[S_MODELS].items()}, sb[S_RARE], sb[S_KNOWN],
                               sb[S_RP], sb[S_RCOST], sb[S_RTOK], sb[S_RKEYS] or {}], st.recent_cost[0]]
        if ok and dim == "api_key" and all(k == "tokens_per_request" for k in st.open):
            # Not from a loop, a leak or an explosion (their calls are not this key's own); during a template change
            # it learns slowly (bounded steps), so a change that stays becomes the key's new normal.
            st.learn_out_log(ok, sb[S_LSUM], sb[S_LSQ], cfg.tpr_key_min_calls)
        if ok:
            st.learn_call_size(cost_usd / ok, tokens / ok)
            gap = (bucket - st.out_rate[0]) / OUT_RATE_TAU_S
            st.out_rate = [bucket, st.out_rate[1] * math.exp(-gap) + ok]
            # What a busy bucket is: not learnt from an open anomaly. A key's bucket is learnt one bucket late, once the
            # next one shows it was not the start of a loop (anomalous twice in a row): learnt at once, a loop's first
            # bucket raised the bar for its second (sk-sparse-01's busy calls went 16 -> 70 during two loops), and not
            # learning every anomalous bucket left a bursty key's busy bucket at a third of its size (sk-sparse-38 on
            # sparse seed 1, whose sessions then alerted). Broad scopes learn at once: their busy buckets are many keys'
            # sessions together.
            sample = (trim_cost, trim_tokens, float(sb[S_REQ]))
            calm = not any(k in st.open for k in SUSTAINED_KINDS)
            if dim == "api_key":
                pending, st.busy_pending = st.busy_pending, None
                if quiet_volume:
                    if pending:
                        self._learn_busy(st, pending)
                    if calm:
                        st.busy_pending = list(sample)
            elif calm:
                self._learn_busy(st, sample)
        if sb[S_COST] > 0 and dim != "model":
            for model, info in st.models.items():
                m = sb[S_MODELS].get(model)
                share = m[1] / sb[S_COST] if m else 0.0
                info[1] += 0.02 * (share - info[1])
                # Its usual share of this scope's calls: a second model that runs one session in five is part of the
                # mix (~20 %), a premium model called now and then is not (1-3 %), whatever share of cost it takes.
                if "model_shift" not in st.open:
                    if len(info) < 3:
                        info.append(0.0)
                    info[2] += 0.02 * ((m[0] / sb[S_REQ] if m else 0.0) - info[2])

    def _output_shift(self, st: ScopeState, sb: list, v: Verdict | None) -> Verdict | None:
        """Tokens per request on scopes too quiet for a per-bucket mean: a CUSUM over calls of the standardized log
        output (each call against its own key's usual distribution), so a few calls per bucket add up. Per bucket
        S = max(0, S + sum(z) - k * n), the bucket's contribution clipped to 3 sqrt(n) (one huge answer is not a
        template). S >= h with new evidence in this bucket opens; the anomaly stays open while S >= h / 2 (calls
        back to normal pull S down by k each), and its close resets S."""
        cfg, n = self.cfg, sb[S_ZN]
        step = 0.0
        # The threshold grows with the scope's volume, so chance alarms are bounded per day, not per call: the
        # CUSUM's in-control run length grows about as e^(2 k h) = e^h, hence h + ln(calls per day / 100).
        h = cfg.tpr_cusum_h + math.log(max(1.0, st.out_rate[1] * 86400 / OUT_RATE_TAU_S / 100))
        if n:
            step = sb[S_ZSUM] - cfg.tpr_cusum_k * n
            bound = 3.0 * math.sqrt(n)
            step = bound if step > bound else (-bound if step < -bound else step)
            st.cusum = min(max(0.0, st.cusum + step), 2 * h)
        if v is not None and v.state in ("strong", "anomalous"):
            return v
        if st.cusum >= h and step > 0:
            state = "strong"
        elif st.cusum >= h / 2 and ("tokens_per_request" in st.open or step > 0):
            state = "elevated"
        else:
            return v
        if not n:
            return Verdict(state, 0.0, 0.0, 0.0, 0.0, "tokens_per_request")
        observed, expected = math.exp(sb[S_LSTD] / n) - 1, math.exp(sb[S_MUSUM] / n) - 1
        shift = Verdict(state, observed, expected, 0.0, expected * cfg.tpr_ratio, "tokens_per_request")
        shift.detail = "output"
        return shift

    @staticmethod
    def _learn_busy(st: ScopeState, sample) -> None:
        st.busy.update(BUSY_COST, sample[0])
        st.busy.update(BUSY_TOKENS, sample[1])
        st.busy.update(BUSY_CALLS, sample[2])

    def _beyond_busy(self, v: Verdict | None, st: ScopeState, trimmed: float, calls: int, floor: float,
                     per_hour: float) -> Verdict | None:
        """Spend beyond what this scope's busy buckets reach, in money and in calls. A key that works in sessions has
        a spend deviation as large as its level, so a loop at 7x its level stays below `z` robust deviations; but no
        session of it brings twice a busy bucket's calls and 1.5x its spend (without the largest call), with at least
        `strong_min_calls` calls. Anomalous, so it opens only when it lasts 15 minutes (the sustained rule). Only for
        API keys (sessions are a key's behaviour; a model's or a team's busy buckets mix unrelated sources, and a
        nightly job is beyond them every night) and only above the elevated level of the seasonal rule."""
        cfg = self.cfg
        if v is None or v.state != "elevated" or st.dim != "api_key":
            return v
        busy_cost, busy_calls = st.busy_high(0), st.busy_high(2)
        if not busy_cost or not busy_calls or calls < max(cfg.strong_min_calls, cfg.busy_excess_calls * busy_calls):
            return v
        expected = v.expected / per_hour
        if trimmed < max(cfg.busy_excess_volume * busy_cost, cfg.spend_ratio * expected, expected + floor):
            return v
        v.state = "anomalous"
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
        v.detail = (self._shift_detail(st, sb)[0] + f"; {rare} of {known} calls in 15 minutes on models their keys "
                    f"rarely use")
        return v

    def _strong_volume(self, busy_high: float, calls: int) -> float:
        """Excess that opens at once with fewer calls than the scope's busy buckets hold: a few huge calls (a
        token explosion) must not wait for the sustained rule; needs `strong_min_calls` calls all the same."""
        if not busy_high or calls < self.cfg.strong_min_calls:
            return float("inf")
        return self.cfg.strong_busy_multiple * busy_high

    def _new_models(self, st, sb, bucket, warm, per_hour, updates, label) -> None:
        cfg = self.cfg
        for kind_key in [k for k in st.open if k.startswith("new_model:")]:
            # A new model is news once: the anomaly closes after `close_after` buckets whatever happens next.
            self._track(st, kind_key, "new_model", Verdict("normal", 0.0, 0.0, 0.0, 0.0, "usd_per_hour"),
                        bucket, updates, label)
        window = cfg.new_model_window_buckets * cfg.bucket_s
        for model in [m for m, info in st.pending.items() if bucket - info[0] >= window]:
            del st.pending[model]  # a few calls in an hour: an occasional model, now a usual one (no news)
        for model, (requests, cost, _tokens) in sb[S_MODELS].items():
            if model in st.models:
                continue
            if warm:
                # One call of a model is not news (a rare premium call); `new_model_min_calls` within an hour are.
                first, calls, spent, buckets = (st.pending.get(model) or [bucket, 0, 0, 0])[:4]
                calls, spent, buckets = calls + requests, spent + cost, buckets + 1
                if calls < cfg.new_model_min_calls or buckets < cfg.new_model_min_buckets:
                    st.pending[model] = [first, calls, spent, buckets]
                    continue
                st.pending.pop(model, None)
            st.models[model] = [bucket, 0.0, 0.0]
            if not warm:
                continue  # cold start: the first day's models are the scope's usual ones
            rate = cost / PICO * per_hour
            costly = rate >= cfg.costly_new_model_usd_per_hour
            v = Verdict("strong", rate, 0.0, 0.0, 0.0, "usd_per_hour", severity="warning" if costly else "info")
            v.detail = model
            self._track(st, f"new_model:{model}", "new_model", v, bucket, updates, label,
                        exact=pico_to_str(cost * int(per_hour)))

    @staticmethod
    def _shift_detail(st: ScopeState, sb: list) -> str:
        best, best_gain, best_now, best_usual, best_calls = "", -1.0, 0.0, 0.0, 0
        for model, (calls, cost, _tok) in sb[S_MODELS].items():
            now = cost / sb[S_COST]
            usual = st.models.get(model, [0, 0.0])[1]
            if now - usual > best_gain:
                best, best_gain, best_now, best_usual, best_calls = model, now - usual, now, usual, calls
        return f"{best} now carries {best_now:.0%} of its cost (usually {best_usual:.0%})", best, best_calls

    # Lifecycle -----------------------------------------------------------------------------------------------
    def _track(self, st: ScopeState, kind_key: str, kind: str, v: Verdict | None, bucket: int,
               updates: list[AnomalyUpdate], label: str, exact: str | None = None) -> None:
        cfg = self.cfg
        current = st.open.get(kind_key)
        firing = v is not None and v.state in ("strong", "anomalous")
        if current is not None:
            if firing:
                current["_normal"] = 0
                current["end"] = iso_epoch(bucket + cfg.bucket_s)
                if v.observed >= current["_peak"]:
                    self._fill(current, kind, v, label, exact)
                current["detected_at"] = iso_epoch(self._now)
                updates.append(AnomalyUpdate("update", self._public(current)))
            elif v is not None and v.state == "elevated":
                current["_normal"] = 0
            else:
                current["_normal"] += 1
                if current["_normal"] >= cfg.close_after:
                    self._finish(st, kind_key, updates)
            return
        if not firing:
            st.streaks.pop(kind_key, None)
            return
        streak = st.streaks.setdefault(kind_key, [0, bucket])
        streak[0] += 1
        needed = v.after or (cfg.sustained_after if kind in SUSTAINED_KINDS else cfg.open_after)
        if v.state != "strong" and streak[0] < needed:
            return
        start = st.streaks.pop(kind_key)[1]
        digest = hashlib.sha256(f"{kind_key}|{st.dim}={st.value}|{start}".encode()).hexdigest()[:32]
        anomaly = {"id": f"anomaly-{digest}", "kind": kind, "scope_dim": st.dim, "scope_value": st.value,
                   "start": iso_epoch(start), "end": iso_epoch(bucket + cfg.bucket_s), "status": "open",
                   "detected_at": iso_epoch(self._now), "_normal": 0, "_peak": -1.0}
        self._fill(anomaly, kind, v, label, exact)
        st.open[kind_key] = anomaly
        self.stats["anomalies_opened"] += 1
        update = AnomalyUpdate("open", self._public(anomaly))
        updates.append(update)
        self._opened.append((st, kind_key, anomaly, update))

    def _finish(self, st: ScopeState, kind_key: str, updates: list[AnomalyUpdate]) -> None:
        anomaly = st.open.pop(kind_key)
        anomaly["status"] = "closed"
        anomaly["detected_at"] = iso_epoch(self._now)
        self.stats["anomalies_closed"] += 1
        updates.append(AnomalyUpdate("close", self._public(anomaly), notify=not anomaly.get("_explained_by")))

    def _explain(self, raw: dict) -> None:
        """Mark anomalies opened in this bucket that a narrower open anomaly of the same kind explains."""
        for st, kind_key, anomaly, update in self._opened:
            if anomaly["kind"] == "new_model" and st.dim != "team":
                team = self._team_uses(st, kind_key.split(":", 1)[1], raw)
                if team is not None:
                    anomaly["_explained_by"], anomaly["_team_model"] = f"team {team}", True
                    update.notify = False
                    update.record = self._public(anomaly)
                    self.stats["anomalies_explained"] += 1
                    continue
            if anomaly["kind"] in LATER_NARROWER_EXPLAINED:
                broader = self._alerted_broader(st, kind_key, raw)
                if broader is not None:
                    anomaly["_explained_by"] = f"{broader[0]} {broader[1]}"
                    update.notify = False
                    update.record = self._public(anomaly)
                    self.stats["anomalies_explained"] += 1
                    continue
            rank = SPECIFICITY[st.dim]
            if rank == 0:
                continue
            index = RAW_INDEX[st.dim]  # this scope's position in a raw aggregate key
            related = {(d, key[i]) for key in raw if key[index] == st.value for d, i in RAW_INDEX.items()
                       if key[i] and SPECIFICITY[d] < rank}
            best = None
            for dim, value in related:
                other_state = self.scopes.get((dim, value))
                other = other_state.open.get(kind_key) if other_state else None
                if other is None or (anomaly["kind"] in VOLUME_KINDS and other["_excess"] < 0.5 * anomaly["_excess"]):
                    continue
                if best is None or SPECIFICITY[dim] < SPECIFICITY[best[0]]:
                    best = (dim, value)
            if best is None and anomaly["kind"] in SUSTAINED_KINDS:
                best = self._one_quiet_key(st, anomaly["kind"], kind_key, raw, index)
                if best is not None:
                    anomaly["_quiet_key"] = True
            if best is not None:
                anomaly["_explained_by"] = f"{best[0]} {best[1]}"
                update.notify = False
                update.record = self._public(anomaly)
                self.stats["anomalies_explained"] += 1

    def _alerted_broader(self, st: ScopeState, kind_key: str, raw: dict) -> tuple[str, str] | None:
        """A broader scope sharing this scope's traffic in this bucket whose anomaly of the same kind opened in an
        EARLIER bucket and was alerted: the narrower one opening later is the same incident (the demo's key storm
        alerted on its team at 14:07 and again on the key at 14:12). Same-bucket openings are left to the
        narrower-first rule below, so the two rules never silence each other."""
        rank, index = SPECIFICITY[st.dim], RAW_INDEX[st.dim]
        this_bucket = {id(anomaly) for _, _, anomaly, _ in self._opened}
        broader = {(d, key[i]) for key in raw if key[index] == st.value for d, i in RAW_INDEX.items()
                   if key[i] and SPECIFICITY[d] > rank}
        for dim, value in sorted(broader, key=lambda scope: SPECIFICITY[scope[0]]):
            other_state = self.scopes.get((dim, value))
            other = other_state.open.get(kind_key) if other_state else None
            if other is not None and id(other) not in this_bucket and not other.get("_explained_by"):
                return dim, value
        return None

    def _team_uses(self, st: ScopeState, model: str, raw: dict) -> str | None:
        """The team of this scope's traffic in this bucket when `model` is part of that team's usual mix (used before
        this bucket, and at least `new_model_team_share` of the team's calls): a key calling its team's usual model
        for the first time (a quiet key's mix shows up slowly) is recorded, not alerted. On the sparse family's
        incident-free days that was 7 of 8 new_model alerts. None when the model is new to any team of the scope,
        or only a trace in its mix (then it is news, alerted on the narrowest scope)."""
        index, bucket = RAW_INDEX[st.dim], self._now - self.cfg.bucket_s - self.cfg.grace_s
        teams = {key[1] for key in raw if key[index] == st.value}
        for team in teams:
            known = self.scopes.get(("team", team))
            info = known.models.get(model) if known is not None else None  # [first bucket, cost share, call share]
            if info is None or info[0] >= bucket or info[2:3] < [self.cfg.new_model_team_share]:
                return None  # new to the team, or only a trace of it (an earlier incident's, an occasional call)
        return ", ".join(sorted(teams)) or None

    def _one_quiet_key(self, st: ScopeState, kind: str, kind_key: str, raw: dict, index: int):
        """A broad scope's volume spike that is mostly one API key's traffic, while that key itself is within its
        own (bursty) range: the key's usual busy stretch, not news for the team or the model. Recorded, not
        alerted. (A key that is itself anomalous explains it through the rule above.)"""
        volume: dict[str, int] = {}
        for key, agg in raw.items():
            if key[index] == st.value and key[4]:
                amount = agg[COST] if kind == "spend_rate" else (0 if key[7] else agg[TIN] + agg[TOUT])
                volume[key[4]] = volume.get(key[4], 0) + amount
        total = sum(volume.values())
        if not total:
            return None
        top, amount = max(volume.items(), key=lambda item: item[1])
        other = self.scopes.get(("api_key", top))
        if amount >= 0.5 * total and other is not None and kind_key not in other.open:
            return ("api_key", top)
        return None

    @staticmethod
    def _fill(anomaly: dict, kind: str, v: Verdict, label: str, exact: str | None) -> None:
        anomaly["_peak"] = v.observed
        anomaly["_excess"] = v.observed - v.expected
        anomaly["severity"] = severity(kind, v)
        decimals = 12 if kind in ("spend_rate", "new_model", "model_shift") else 6
        anomaly["observed"] = exact if exact is not None else f"{v.observed:.{decimals}f}"
        anomaly["expected"] = f"{v.expected:.{decimals}f}"
        anomaly["expected_low"] = f"{v.low:.{decimals}f}"
        anomaly["expected_high"] = f"{v.high:.{decimals}f}"
        anomaly["unit"] = UNITS[kind]
        anomaly["explanation"] = explain(kind, label, v)
        if v.detail:
            anomaly["_detail"] = v.detail

    @staticmethod
    def _public(anomaly: dict) -> dict:
        record = {k: anomaly[k] for k in ("id", "kind", "scope_dim", "scope_value", "severity", "observed",
                                          "expected", "expected_low", "expected_high", "unit", "start", "end",
                                          "status", "explanation", "detected_at")}
        if anomaly.get("_team_model"):
            record["explanation"] += f" Already used by {anomaly['_explained_by']} (not alerted)."
        elif anomaly.get("_quiet_key"):
            record["explanation"] += (f" Mostly the traffic of {anomaly['_explained_by']}, within that key's own usual "
                                      f"range (not alerted).")
        elif anomaly.get("_explained_by"):
            record["explanation"] += f" Part of the anomaly of {anomaly['_explained_by']} (alerted there)."
        return record

    # Introspection and persistence ---------------------------------------------------------------------------
    def open_anomalies(self) -> list[dict]:
        return [self._public(a) for s in self.scopes.values() for a in s.open.values()]

    def snapshot(self) -> dict:
        """JSON-ready state (money as integer pico-dollars or decimal strings, never floats)."""
        return {"version": SNAPSHOT_VERSION, "config": asdict(self.cfg), "next_close": self.next_close,
                "watermark": self.watermark, "started": self.started, "stats": dict(self.stats),
                "sources": {str(k): v for k, v in self.sources.items()},
                "open_buckets": {str(b): [[list(k[1:]), v] for k, v in raw.items()] for b, raw in self.agg.open.items()},
                "unpriced_reasons": self.agg.unpriced_reasons,
                "scopes": [s.to_json() for s in self.scopes.values()]}

    @classmethod
    def restore(cls, data: dict) -> "AnomalyEngine":
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"anomaly engine snapshot version {data.get('version')!r} is not {SNAPSHOT_VERSION}")
        engine = cls(Config(**data["config"]))
        engine.next_close, engine.watermark, engine.started = data["next_close"], data["watermark"], data["started"]
        engine.stats.update(data["stats"])
        engine.agg.duplicates = engine.stats.get("duplicate_events", 0)
        engine.sources = {int(k): int(v) for k, v in data.get("sources", {}).items()}
        for b, rows in data["open_buckets"].items():
            engine.agg.open[int(b)] = {(int(b), *k): (v + [0] * AGG_SIZE)[:AGG_SIZE] for k, v in rows}
        engine.agg.unpriced_reasons = dict(data["unpriced_reasons"])
        for item in data["scopes"]:
            state = ScopeState.from_json(item)
            engine.scopes[(state.dim, state.value)] = state
        return engine
