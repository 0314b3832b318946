"""The per-kind rules of one scope and one bucket (spend, tokens, tokens per request, errors, model shifts, bursts,
unpriced usage, new models): judge the bucket against the scope's baselines, then let the baselines learn from it."""

from __future__ import annotations

import math

from tokenmeter.measures import count_of

from .aggregate import PICO, pico_to_str
from .baseline import GLOBAL
from .detectors import KIND_DIMS, Verdict, error_window_verdict, rate_verdict, ratio_verdict
from .gating import SUSTAINED_KINDS, AnomalyUpdate, iso_epoch
from .scope_bucket import (S_COST, S_ERR, S_KNOWN, S_LN, S_LSQ, S_LSTD, S_LSUM, S_MAXCOST, S_MAXIN, S_MAXOUT, S_MAXTOK,
                           S_MINUTES, S_MODELS, S_MUSUM, S_RARE, S_RCOST, S_REQ, S_RKEYS, S_RP, S_RTOK, S_TIN, S_TOUT,
                           S_UREQ, S_UTOK, S_ZN, S_ZSUM)
from .scope_state import ScopeState

BUSY_COST, BUSY_TOKENS, BUSY_CALLS = ((0, 0.03),), ((1, 0.03),), ((2, 0.03),)
FIRING = ("strong", "anomalous")  # verdict states that open or extend an anomaly (`AlertGating._track`)


def _priced(v: Verdict | None, cost_usd: float, spend, slots, per_hour: float) -> Verdict | None:
    """A firing verdict of a kind that is not about money, with the scope's spend in the bucket and its usual spend
    at this hour of the week (the level the spend rule judges against; None while it is not mature): its explanation
    says what the anomaly costs (anom32)."""
    if v is not None and v.state in FIRING:
        level, _dev, n = spend.expected(slots, allow_global=False)
        v.spend = (cost_usd * per_hour, level * per_hour if n else None)
    return v
OUT_RATE_TAU_S = 2 * 86400  # memory of a scope's call volume (calls per day), for the tokens-per-request CUSUM


class KindRules:
    """Mixin of AnomalyEngine (uses `self.cfg`, `self.agg`, the gating's `_track`, the model rules)."""

    # One scope, one bucket -----------------------------------------------------------------------------------
    def _step(self, st: ScopeState, sb: list, bucket: int, full, daily, updates: list[AnomalyUpdate]) -> None:
        cfg = self.cfg
        per_hour = 3600 / cfg.bucket_s
        warm = st.age >= cfg.warmup_buckets
        dim = st.dim
        open_kinds = st.open  # (usually empty: the checks of open kinds below test it first, without a generator)
        streaks = st.streaks
        # A kind is tracked (`_track`) only when its verdict fires or it is open or in a streak: otherwise tracking
        # does nothing but drop a streak that is not there (most kinds of most steps; the call was ~5 a step).
        cost_usd = sb[S_COST] / PICO
        tokens = sb[S_TIN] + sb[S_TOUT]
        ok = sb[S_REQ] - sb[S_ERR]
        label = f"{dim} {st.value}"
        track = self._track
        spend, token_base, requests = st.rate_baselines()
        # False when spend or tokens are anomalous for a second bucket in a row (a loop in the making): then the bucket
        # does not teach what a busy bucket is. One anomalous bucket (a session) still does.
        quiet_volume = True
        # What a busy bucket reaches (cost, tokens, calls): read several times below, learnt only after the judgement.
        busy_cost, busy_tokens, busy_calls = st.busy_highs()
        steady = dim == "api_key" and self._steady_loop(st, sb[S_MINUTES], sb[S_REQ], bucket, busy_calls)

        # Evidence, not one call: volumes are judged without the bucket's largest call, need a few calls, and must
        # exceed what `typical_calls` of this scope's usual calls would add (its own call-size scale).
        trim_cost = (sb[S_COST] - sb[S_MAXCOST]) / PICO
        trim_tokens = float(tokens - sb[S_MAXTOK])
        # Opening at once needs more calls than this scope's busy buckets hold (a loop, not a long session).
        strong_calls = max(cfg.strong_min_calls, cfg.strong_busy_calls * busy_calls)
        if warm:
            floor = max(cfg.spend_min_delta_usd_per_hour / per_hour, cfg.typical_calls * st.call_cost, busy_cost)
            v = rate_verdict(cost_usd, spend, full, z=cfg.z, ratio=cfg.spend_ratio, min_delta=floor, counts=False,
                             unit="usd_per_hour", per_hour=per_hour, trimmed=trim_cost, calls=sb[S_REQ],
                             min_calls=cfg.volume_min_calls, strong_calls=strong_calls,
                             strong_volume=self._strong_volume(busy_cost, sb[S_REQ]))
            v = self._beyond_busy(v, st, trim_cost, sb[S_REQ], floor, per_hour)
            v = self._off_hours_loop(v, st, trim_cost, sb[S_REQ], per_hour)
            if steady and v is not None and v.state == "anomalous" and not v.after:
                v.after = 2
            quiet_volume = not (v is not None and v.state in ("strong", "anomalous") and "spend_rate" in st.streaks)
            if "spend_rate" in open_kinds or "spend_rate" in streaks or v is not None and v.state in FIRING:
                track(st, "spend_rate", "spend_rate", v, bucket, updates, label,
                      exact=pico_to_str(sb[S_COST] * int(per_hour)))
            floor = max(cfg.token_min_delta_per_hour / per_hour, cfg.typical_calls * st.call_tokens, busy_tokens)
            v = rate_verdict(float(tokens), token_base, full, z=cfg.z, ratio=cfg.token_ratio, min_delta=floor,
                             counts=True, unit="tokens_per_hour", per_hour=per_hour, trimmed=trim_tokens, calls=ok,
                             min_calls=cfg.volume_min_calls, strong_calls=strong_calls,
                             strong_volume=self._strong_volume(busy_tokens, sb[S_REQ]))
            quiet_volume = quiet_volume and not (v is not None and v.state in ("strong", "anomalous")
                                                 and "token_rate" in st.streaks)
            if "token_rate" in open_kinds or "token_rate" in streaks or v is not None and v.state in FIRING:
                track(st, "token_rate", "token_rate", _priced(v, cost_usd, spend, full, per_hour), bucket, updates,
                      label)
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
                    if v.state in ("strong", "anomalous") and v_detail == "output" and dim != "api_key" \
                            and self._usual_sizes(sb, ok):
                        # A broad scope's mean moves with who called: one key with long answers in a bucket of a
                        # project whose buckets are mostly another key's short ones is 5x its mean, each call its
                        # key's usual size (sparse seed 21, support-b: 5.8x, its calls +0.23 deviations each).
                        v.state = "elevated"
            if dim in KIND_DIMS["tokens_per_request"]:
                v = self._output_shift(st, sb, v, bucket)
            was_open = "tokens_per_request" in st.open
            if was_open and st.held is not None and bucket - st.held[0] >= cfg.tpr_new_normal_s:
                # A change that lasts is the key's new normal: it adopts the held calls and the anomaly resolves.
                self._new_normal(st, updates)
            elif was_open and not ok and bucket - st.out_rate[0] >= cfg.tpr_quiet_close_s:
                # A ratio is judged on calls: without any, the CUSUM neither grows nor falls, and the anomaly (and
                # its page) stayed open until the scope called again (anom24). Quiet this long: resolved, saying so.
                self._quiet_close(st, updates)
            else:
                if "tokens_per_request" in open_kinds or "tokens_per_request" in streaks \
                        or v is not None and v.state in FIRING:
                    track(st, "tokens_per_request", "tokens_per_request", _priced(v, cost_usd, spend, full, per_hour),
                          bucket, updates, label)
            if was_open and "tokens_per_request" not in st.open:
                st.cusum = 0.0  # closed: the evidence is spent
                st.held = None  # ... and the change reverted: the calls held during it are not this key's normal
            window = [(sb[S_ERR], sb[S_REQ])]
            if sb[S_REQ] < cfg.error_window_requests:
                # A quiet scope: this bucket and its two previous buckets with calls, within `error_window_s`
                # (a key calling every few minutes puts a storm's five failures into four buckets, one empty).
                recent, horizon = st.recent, bucket - cfg.error_window_s
                if recent[4] >= horizon:
                    window.append((recent[0], recent[1]))
                if recent[5] >= horizon:
                    window.append((recent[2], recent[3]))
            v = error_window_verdict(window, st.err, daily, cfg)
            if "error_rate" in open_kinds or "error_rate" in streaks or v is not None and v.state in FIRING:
                track(st, "error_rate", "error_rate", _priced(v, cost_usd, spend, full, per_hour), bucket, updates,
                      label)
            if dim in KIND_DIMS["model_shift"]:
                v = self._cost_shift(st, sb, ok, tokens, daily)
                adopted = self._new_model_takeover(st, sb, bucket, daily)  # (its bookkeeping runs every bucket)
                if v is None or v.state not in ("strong", "anomalous"):
                    v = self._rare_model_takeover(st, sb, daily) or adopted or v
                if st.shifted and sb[S_REQ]:
                    self._shift_calls_go_on(st, sb[S_MODELS], sb[S_REQ])  # (a team's alerted moves: gating)
                ongoing = st.open.get("model_shift")
                if ongoing is not None or "model_shift" in streaks or v is not None and v.state in FIRING:
                    track(st, "model_shift", "model_shift", v, bucket, updates, label)
                if ongoing is not None and v is not None and v.state in ("strong", "anomalous"):
                    self._shift_goes_on(st, ongoing)  # (an opening is judged against the marks first: gating)

        if dim in KIND_DIMS["request_burst"]:
            v = None
            if warm:
                v = rate_verdict(float(sb[S_REQ]), requests, full, z=cfg.z, ratio=cfg.burst_ratio,
                                 min_delta=cfg.burst_min_delta_per_hour / per_hour, counts=True,
                                 unit="requests_per_hour", per_hour=per_hour)
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
            if "request_burst" in open_kinds or "request_burst" in streaks or v is not None and v.state in FIRING:
                track(st, "request_burst", "request_burst", _priced(v, cost_usd, spend, full, per_hour), bucket,
                      updates, label)

        if dim in KIND_DIMS["unpriced_usage"]:
            v = None
            if sb[S_UREQ] or "unpriced_usage" in st.open:
                v = Verdict("strong" if sb[S_UREQ] else "normal", sb[S_UTOK] * per_hour, 0.0, 0.0, 0.0,
                            "unpriced_tokens_per_hour")
                reason = self.agg.unpriced_reasons.get(st.value, "no price")
                calls = count_of(sb[S_UREQ], "call")  # "1 call", "4 calls" (walk31: "1 calls")
                v.detail = f"{st.value} ({calls} in 5 minutes; {reason})" if sb[S_UREQ] else st.value
            if "unpriced_usage" in open_kinds or "unpriced_usage" in streaks or v is not None and v.state in FIRING:
                track(st, "unpriced_usage", "unpriced_usage", v, bucket, updates, label)
        if dim in KIND_DIMS["new_model"]:
            self._new_models(st, sb, bucket, warm, per_hour, updates, label)

        # Learn from this bucket after judging it.
        spend.update(full, cost_usd)
        token_base.update(full, float(tokens))
        if requests is not None:
            requests.update(full, float(sb[S_REQ]))
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
        if sb[S_LN] and dim == "api_key" and (not open_kinds or all(k == "tokens_per_request" for k in open_kinds)):
            # Not from a loop, a leak or an explosion (their calls are not this key's own). During its own template
            # change the key holds its calls instead of learning them: learnt, the same change the next day needed
            # ~1.5x the calls (held-out sparse seed 34). A change that lasts is adopted (`_new_normal`).
            if st.open:
                st.hold_out_log(bucket, sb[S_LN], sb[S_LSUM], sb[S_LSQ])
            else:
                st.learn_out_log(sb[S_LN], sb[S_LSUM], sb[S_LSQ], cfg.tpr_key_min_calls, cfg.tpr_young_bucket_calls)
        if ok:
            if not open_kinds or not any(kind in open_kinds for kind in ("spend_rate", "token_rate", "request_burst")):
                # Not from a loop, a leak or an explosion: their calls are not this scope's (a leaked client's 500
                # cheap calls a bucket took the weekly report key's typical call from $0.079 to $0.054, office seed 8).
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
            calm = not open_kinds or not any(k in open_kinds for k in SUSTAINED_KINDS)
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
                if len(info) < 5:  # (entries of older snapshots)
                    info.extend((0.0, 0.0, None, info[0])[len(info) - 1:])
                if m:
                    info[4] = bucket
                share = m[1] / sb[S_COST] if m else 0.0
                info[1] += 0.02 * (share - info[1])
                # Its usual share of this scope's calls: a second model that runs one session in five is part of the
                # mix (~20 %), a premium model called now and then is not (1-3 %), whatever share of cost it takes.
                if "model_shift" not in st.open:
                    if len(info) < 3:
                        info.append(0.0)
                    info[2] += 0.02 * ((m[0] / sb[S_REQ] if m else 0.0) - info[2])
            if not open_kinds or "model_shift" not in open_kinds and not any(
                    k in open_kinds for k in ("spend_rate", "token_rate", "request_burst")):
                # The usual share of calls per model, per call (the routine test of the model shift rules); not from a
                # shift, a loop, a leak or an explosion (their calls are not this scope's usual mix).
                st.learn_mix(sb[S_MODELS], sb[S_REQ], cfg.shift_mix_horizon_calls, cfg.shift_mix_bucket_calls)

    def _output_shift(self, st: ScopeState, sb: list, v: Verdict | None, bucket: int) -> Verdict | None:
        """Tokens per request on scopes too quiet for a per-bucket mean: a CUSUM over calls of the standardized log
        output (each call against its own key's usual distribution), so a few calls per bucket add up. Per bucket
        S = max(0, S + sum(z) - k * n), the bucket's contribution clipped to 3 sqrt(n) (one huge answer is not a
        template). S >= h with new evidence in this bucket opens; the anomaly stays open while S >= h / 2 (calls
        back to normal pull S down by k each), and its close resets S."""
        n = sb[S_ZN]
        st.cusum, step, h = self._cusum_step(st, n, sb[S_ZSUM], bucket)
        if v is not None and v.state == "strong":
            return v
        if st.cusum >= h and step > 0:
            # Strong even when the bucket's mean says anomalous: a change in a batch job's last minutes dilutes that
            # mean (half the bucket changed: ~1.7x) and no second bucket comes (office seed 34, `nightly-enrichment`
            # changed 2 minutes before its job ended: anomalous, CUSUM at twice its threshold, nothing recorded).
            state = "strong"
        elif v is not None and v.state == "anomalous":
            return v
        elif st.cusum >= h / 2 and ("tokens_per_request" in st.open or step > 0):
            state = "elevated"
        else:
            return v
        return self._size_verdict(state, n, sb[S_LSTD], sb[S_MUSUM])

    def _cusum_step(self, st: ScopeState, n: int, zsum: float, bucket: int) -> tuple[float, float, float]:
        """(the CUSUM after `n` calls scoring `zsum` in `bucket`, the bucket's clipped step, the threshold h). Pure:
        judged at a bucket's close (which keeps the result) and on the running bucket (early_sizes.py)."""
        faded, h = self._cusum_base(st, bucket)
        if not n:
            return st.cusum, 0.0, h
        step = zsum - self.cfg.tpr_cusum_k * n
        bound = 3.0 * math.sqrt(n)
        step = bound if step > bound else (-bound if step < -bound else step)
        return min(max(0.0, faded + step), 2 * h), step, h

    def _cusum_base(self, st: ScopeState, bucket: int) -> tuple[float, float]:
        """(the scope's CUSUM faded over its pause before `bucket`, its threshold h): what a bucket's calls add to."""
        cfg, cusum = self.cfg, st.cusum
        # The threshold follows the scope's volume, so chance alarms are bounded per day, not per call: the CUSUM's
        # in-control run length grows about as e^(2 k h) = e^h, hence h + ln(calls per day / 100) (~190 days between
        # chance alarms at any volume). Quieter scopes too, down to `tpr_cusum_h_min`: kept at h = 8 they waited for
        # ~13 changed calls where ~10 do at the same budget (sparse seed 8, search-agent: 173 -> 68 minutes).
        per_day = st.out_rate[1] * 86400 / OUT_RATE_TAU_S
        h = max(cfg.tpr_cusum_h_min, cfg.tpr_cusum_h + math.log(max(per_day, 1e-9) / 100))
        if cusum and cfg.tpr_cusum_half_life_s:
            # Evidence fades while the scope is silent (`out_rate[0]`: its last bucket with calls, learnt after
            # this judgement): sums of small excesses over days, or a change that ended yesterday, are not a
            # template change now.
            pause = bucket - st.out_rate[0] - cfg.tpr_cusum_fade_after_s
            if pause > 0:
                cusum *= 0.5 ** (pause / cfg.tpr_cusum_half_life_s)
        return cusum, h

    def _size_verdict(self, state: str, n: int, log_sum: float, mu_sum: float) -> Verdict:
        if not n:
            return Verdict(state, 0.0, 0.0, 0.0, 0.0, "tokens_per_request")
        observed, expected = math.exp(log_sum / n) - 1, math.exp(mu_sum / n) - 1
        shift = Verdict(state, observed, expected, 0.0, expected * self.cfg.tpr_ratio, "tokens_per_request")
        shift.detail = "output"
        return shift

    def _usual_sizes(self, sb: list, ok: int) -> bool:
        """Whether a bucket's answers are their own keys' usual sizes: most of its ok calls are scored against their
        key's distribution and their log output is, on average, less than half the per-bucket rule's smallest jump
        (ln `tpr_ratio` / 2, ~1.26x) above their keys' means. A changed template moves every changed call (2.5x: +0.92);
        a change of which keys called moves none."""
        n = sb[S_ZN]
        return 2 * n >= ok > 0 and (sb[S_LSTD] - sb[S_MUSUM]) / n < math.log(self.cfg.tpr_ratio) / 2

    def _new_normal(self, st: ScopeState, updates: list) -> None:
        """Close a key's tokens-per-request anomaly open for `tpr_new_normal_s`: its calls since are its new normal."""
        hours = self.cfg.tpr_new_normal_s / 3600
        st.adopt_held(self.cfg.tpr_key_min_calls)
        anomaly = st.open["tokens_per_request"]
        anomaly["explanation"] += (f" It lasted {hours:.0f} hours: learnt as the new normal of {st.dim} {st.value}"
                                   f" (resolved).")
        self._finish(st, "tokens_per_request", updates)

    def _quiet_close(self, st: ScopeState, updates: list) -> None:
        """Close a tokens-per-request anomaly of a scope without calls for `tpr_quiet_close_s`: no evidence that the
        change goes on (a change that comes back with the calls is judged afresh; the close resets the CUSUM)."""
        last = iso_epoch(st.out_rate[0] + self.cfg.bucket_s)[11:16]
        minutes = self.cfg.tpr_quiet_close_s / 60
        st.open["tokens_per_request"]["explanation"] += (f" No calls since {last} UTC ({minutes:.0f} minutes quiet):"
                                                         f" resolved, nothing says the change goes on.")
        self._finish(st, "tokens_per_request", updates)

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


    def _off_hours_loop(self, v: Verdict | None, st: ScopeState, trimmed: float, calls: int,
                        per_hour: float) -> Verdict | None:
        """Spend of an API key at an hour it is (nearly) silent at, in calls that are not its usual calls. The floors
        above are relative to the key's busy bucket, which for a job key is the job: a loop of 45 cheap calls per
        bucket at 22:00 on the nightly job's key ($0.25-0.63/hour, office seed 11) is a fifth of it and below the
        absolute $0.50/hour, so it was never seen. The job running an hour late spends more, but in the key's usual
        calls; a loop's calls carry a growing context (here 3x prompts, twice the key's typical call). So: the
        seasonal level at this hour at most `off_hours_share` of a busy bucket's spend, >= `strong_min_calls` calls
        averaging >= `off_hours_call_ratio` x the key's typical call (without the largest call), and the spend beyond
        `spend_ratio` x the level, `typical_calls` typical calls and `off_hours_usual_multiple` x the key's usual
        spend per bucket over all hours (floors relative to the key itself). Anomalous: opens after 15 minutes."""
        cfg = self.cfg
        if v is None or v.state in ("strong", "anomalous") or st.dim != "api_key" or calls < cfg.strong_min_calls:
            return v
        busy_cost, typical = st.busy_high(0), st.call_cost
        expected = v.expected / per_hour
        if not busy_cost or not typical or expected > cfg.off_hours_share * busy_cost:
            return v  # not an hour this key is (nearly) silent at
        if trimmed < cfg.off_hours_call_ratio * typical * (calls - 1):
            return v  # its usual calls at another time (its job running late, a re-run by hand): not a loop
        usual = st.spend.level[GLOBAL]
        high = max(cfg.spend_ratio * expected, expected + cfg.typical_calls * typical,
                   expected + cfg.off_hours_usual_multiple * usual)
        if trimmed < high:
            return v
        v.state, v.high = "anomalous", high * per_hour
        v.detail = (f"Its {calls} calls in 5 minutes average {trimmed / (calls - 1) / typical:.1f}x its typical call, "
                    f"at an hour it is usually quiet (a loop?).")
        return v

    def _steady_loop(self, st: ScopeState, mask: int, calls: int, bucket: int, busy_calls: float) -> bool:
        """A loop, not a session: calls in each of the last `steady_minutes` minutes, and in the two buckets they span
        loop-sized counts (>= max(`strong_min_calls`, `busy_excess_calls` x a busy bucket's calls) per 5 minutes). The
        sustained rule's three buckets keep a session from alerting, but a loop starting at 21:46 was then found at 22:02
        (office seed 21: a median of 15.8 minutes). Minutes alone do not tell: a sparse key's 30-call session, calls
        2-40 s apart, fills ten minutes too (5 more spend alerts in sparse seed 11's 16 quiet days); its count does."""
        cfg = self.cfg
        minutes = cfg.bucket_s // 60
        trailing = 0
        while trailing < minutes and mask >> (minutes - 1 - trailing) & 1:
            trailing += 1
        # (pro rata for the minutes of the run in this bucket: a loop starting at 21:46 has 4 of 21:45's 5)
        loop_sized = calls >= max(cfg.strong_min_calls, cfg.busy_excess_calls * busy_calls) * trailing / minutes
        before = st.steady
        if trailing == minutes and before[0] == bucket - cfg.bucket_s:
            st.steady = [bucket, before[1] + minutes, loop_sized]
        else:
            st.steady = [bucket, trailing, loop_sized]
        return st.steady[1] >= cfg.steady_minutes and loop_sized and len(before) > 2 and before[2] \
            and before[0] == bucket - cfg.bucket_s

    def _strong_volume(self, busy_high: float, calls: int) -> float:
        """Excess that opens at once with fewer calls than the scope's busy buckets hold: a few huge calls (a
        token explosion) must not wait for the sustained rule; needs `strong_min_calls` calls all the same."""
        if not busy_high or calls < self.cfg.strong_min_calls:
            return float("inf")
        return self.cfg.strong_busy_multiple * busy_high

