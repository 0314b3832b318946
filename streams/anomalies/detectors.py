"""The eight detectors. Each looks at one closed bucket of one scope against that scope's baselines and returns
a Verdict (or None when it has nothing to say, e.g. too few requests); the engine turns verdicts into anomaly
lifecycles (open after a streak, extend, close when back to normal).

Verdict states: "strong" opens at once, "anomalous" opens after `Config.open_after` buckets in a row,
"elevated" keeps an open anomaly open without extending it (hysteresis, so it does not flap), "normal" counts
towards closing it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tokenmeter.measures import ANOMALY_BUCKET_SECONDS, format_measure, format_number

from .baseline import MIN_SAMPLES, Seasonal, Slots

KINDS = ("spend_rate", "token_rate", "tokens_per_request", "request_burst", "new_model", "error_rate",
         "model_shift", "unpriced_usage")
# Which scopes each kind watches (a model scope cannot use a "new model"; bursts are a key's behaviour).
KIND_DIMS = {
    "spend_rate": ("team", "project", "user", "api_key", "feature", "model"),
    "token_rate": ("team", "project", "user", "api_key", "feature", "model"),
    # Not per model: a model's callers are unrelated teams, so a per-request jump there is a mix change.
    "tokens_per_request": ("team", "project", "user", "api_key", "feature"),
    "request_burst": ("api_key",),
    "new_model": ("team", "project", "user", "api_key", "feature"),
    "error_rate": ("team", "project", "user", "api_key", "feature", "model"),
    "model_shift": ("team", "project", "user", "api_key", "feature"),
    "unpriced_usage": ("model",),
}


@dataclass
class Config:
    bucket_s: int = ANOMALY_BUCKET_SECONDS  # (the dashboard draws an anomaly's scope at this resolution)
    grace_s: int = 120  # how late an event may arrive before its bucket closes
    # A wall-clock advance (quiet input) is refused when the newest event is older than this: that input is
    # history being read (backfill, replay, a consumer catching up), not live traffic gone quiet.
    live_lag_s: int = 7200
    open_after: int = 2  # anomalous buckets in a row before an anomaly opens ("strong" opens at once)
    sustained_after: int = 3  # the same for spend and token volumes: a long session is not a deviation
    # ... two on an API key whose calls came in every minute of the last `steady_minutes` (a loop is a steady stream;
    # a session is a chain of calls that ends): sustain counted in minutes, not in buckets.
    steady_minutes: int = 8
    close_after: int = 3  # normal buckets in a row before it closes
    # Kinds judged on the running bucket too, as soon as its evidence suffices (early.py, early_shifts.py): a verdict
    # that would open at the close opens before the bucket closes. () judges every kind at the close only.
    # "tokens_per_request" (early_sizes.py) is judged after each call, alerted at the call that crossed (tpr23: sparse
    # seed 21's changes crossed 2.9-6.7 minutes before the close that alerted them).
    early_kinds: tuple = ("error_rate", "model_shift", "tokens_per_request")
    # Cold start: a scope's first two days raise only absolute-floor kinds (bursts of a new key, unpriced usage).
    # Two, because a scope's first UTC day can be its local weekend.
    warmup_buckets: int = 576
    max_scopes: int = 2000
    idle_expire_s: int = 14 * 86400
    z: float = 6.0
    spend_ratio: float = 2.0
    spend_min_delta_usd_per_hour: float = 0.5
    token_ratio: float = 2.0
    token_min_delta_per_hour: float = 300_000
    ratio_z: float = 5.0  # ratios (tokens per request, cost per token) are averages: less noisy than volumes
    tpr_ratio: float = 1.6
    tpr_min_requests: int = 8
    # Tokens per request on quiet scopes: a CUSUM over calls of log output, standardized per key (docs: "arithmetic").
    tpr_cusum_k: float = 0.5  # reference shift, in the key's standard deviations (half a 2.5x shift at sd 0.8)
    tpr_cusum_h: float = 8.0  # decision threshold: ~20,000 calls between chance alarms on an unchanged key
    # ... scaled by ln(calls per day / 100) for every scope, but not below this (a scope's call rate is a two-day
    # estimate; under ~14 calls a day the floor keeps chance alarms rarer than one per ~190 days)
    tpr_cusum_h_min: float = 6.0
    tpr_key_min_calls: int = 30  # calls a key needs behind it before its distribution is trusted
    tpr_young_bucket_calls: int = 10  # ... each bucket counting as at most this many (a session, not 30 calls)
    # The CUSUM's evidence fades with event time between a scope's calls (half-life; 0: never): a template change
    # is hours of calls, and evidence carried over a day's pause paged a quiet key for a change long over, or for a
    # learnt mean a little low summed over days (docs: "twelfth round").
    tpr_cusum_half_life_s: float = 3 * 3600
    tpr_cusum_fade_after_s: float = 3600  # ... counting only the part of a pause beyond this
    # A key's tokens-per-request anomaly open this long is its new normal: the key adopts the calls it held (not
    # learnt) meanwhile, and the anomaly resolves. Shorter changes revert; their calls are dropped.
    tpr_new_normal_s: int = 24 * 3600
    # A tokens-per-request anomaly of a scope without ok calls this long resolves (a ratio needs calls: it stayed open
    # until the scope called again; oncall24). A key calling every hour keeps it.
    tpr_quiet_close_s: int = 3600
    burst_ratio: float = 3.0
    burst_min_delta_per_hour: float = 600
    burst_floor_per_hour: float = 7200  # a key doing 2 requests/s with no history is a burst on its own
    burst_busy_multiple: float = 1.5  # a burst exceeds what this key's busy buckets hold (a batch job an hour late)
    # Calls in the judged window: as few as the errors needed. A quiet key calling every few minutes has 5-9 calls in
    # 15 minutes; the binomial tail (error_p_value) is what tells 5 failures of 5 from chance, not a call count.
    error_min_requests: int = 5
    error_min_errors: int = 5
    error_p_value: float = 1e-7  # per scope and bucket: ~1 false alarm a month across 1,000 scopes
    error_window_requests: int = 30  # below this many calls in a bucket, judge the last three buckets together
    error_window_s: int = 1800  # ... the last three with calls, none older than this (a quiet scope skips empty ones)
    error_min_increase: float = 0.15
    shift_ratio: float = 2.5
    shift_min_requests: int = 5
    new_model_close_buckets: int = 3
    new_model_min_calls: int = 3  # calls of a never-used model (within an hour) before it is news
    new_model_window_buckets: int = 12
    new_model_min_buckets: int = 2  # ... in at least two buckets (one session on another model is not news)
    # ... on a team, for a model none of its keys ever used: one user trying it at night makes 1-2 calls an hour.
    new_model_team_min_calls: int = 2
    # ... and a model a team has not called for this long is no longer part of its mix (one user's try weeks ago)
    new_model_forgotten_s: int = 14 * 86400
    # A narrower scope starting on a model that takes this share of its team's calls: the team's usual mix, recorded
    # but not alerted. (A model an earlier incident brought to the team, now a trace of 2-3 %, is still news.)
    new_model_team_share: float = 0.05
    # Evidence (issue #17): volumes are judged without the bucket's largest call, with at least `volume_min_calls`
    # calls, and the excess must exceed `typical_calls` of this scope's usual calls; opening at once ("strong")
    # needs `strong_min_calls` calls, otherwise two anomalous buckets in a row.
    volume_min_calls: int = 4
    strong_min_calls: int = 10
    typical_calls: float = 12.0
    strong_busy_calls: float = 4.0  # ... and opening at once needs this many times the calls of a busy bucket (a loop)
    strong_busy_multiple: float = 8.0  # with >= strong_min_calls calls, an excess this many busy buckets opens at once
    # Spend of a bursty scope (sessions): 15 minutes with this many times a busy bucket's calls and spend is a loop.
    busy_excess_calls: float = 2.0
    busy_excess_volume: float = 1.5
    # A key's spend at an hour it is (nearly) silent at (seasonal level <= `off_hours_share` of a busy bucket's spend),
    # in calls that are not its usual calls (>= `off_hours_call_ratio` x its typical call, without the largest), with
    # >= `strong_min_calls` calls and beyond `off_hours_usual_multiple` x its usual spend per bucket (all hours):
    # a cheap loop on a job key, below the absolute floor and its job's busy bucket. Sustained (15 minutes).
    off_hours_share: float = 0.1
    off_hours_call_ratio: float = 1.5
    off_hours_usual_multiple: float = 3.0
    shift_min_model_calls: int = 3  # calls on the model that took over the cost
    shift_routine_share: float = 0.1  # a model with this usual share of a scope's calls is part of its mix
    shift_session_calls: int = 30  # calls on rarely used models one key's session does not reach in 5 minutes
    # A scope's usual share of calls per model (`ScopeState.mix`) is learnt per call: a running mean over its first
    # `shift_mix_horizon_calls` calls, then an EWMA of that horizon; a bucket counts as at most `shift_mix_bucket_calls`
    # calls (a loop's or a busy job's bucket is not hundreds of sessions). Tenth round: a share learnt per *bucket*
    # (one model each, for a quiet key) dipped under `shift_routine_share` after a run of main-model sessions.
    # (1,000 calls still counted two afternoons of trials on claude-opus-4 three days earlier as routine for a key making
    # ~300 calls a day, test_anomalies_model_takeover, as 500 did; 300 let sk-sparse-42's gpt-4o share dip again,
    # sparse seed 21: 3 false alerts instead of 1.)
    shift_mix_horizon_calls: int = 400
    shift_mix_bucket_calls: int = 30
    # A model new to a scope and its teams that takes more than this share of the scope's calls within an hour of its
    # first call, from at least `shift_takeover_keys` API keys (one key's session on it is a new model only), is a shift.
    shift_takeover_share: float = 0.5
    shift_takeover_keys: int = 2
    # A team's move to a model is one incident: a model shift to the same model on any scope of a team whose shift to
    # it was alerted, while that team's shift records to it keep coming with gaps under this, joins the alerted one
    # (`AlertGating._shift_incident`; ninth round: sparse seed 8 paged research's move to o1 at 12:52 and 13:32).
    shift_incident_gap_s: int = 3600
    # A template change of a feature is one incident: a tokens-per-request anomaly of the same direction (output or
    # input) opening on a key, user or the feature itself within this long after the last one of that feature joins its
    # alert (`AlertGating._template_incident`; tenth round: office seed 8 paged 35 times for 9 template changes, each
    # key of a feature on its own).
    template_incident_gap_s: int = 3600
    costly_new_model_usd_per_hour: float = 5.0


@dataclass
class Verdict:
    state: str
    observed: float
    expected: float
    low: float
    high: float
    unit: str
    explanation: str = ""
    severity: str = "warning"
    detail: str = ""  # e.g. the model of a new_model / model_shift anomaly
    model: str = ""  # a model_shift's model that took over (one incident per team and model: gating.py)
    after: int = 0  # anomalous buckets in a row before it opens (0: the kind's default)
    unpriced: bool = False  # a new_model whose calls have no price: its cost is unknown, never $0
    # (spend per hour in the judged bucket, usual spend per hour or None): what a volume or size anomaly costs, said in
    # its explanation (anom32: a token explosion, a burst or a template change said no dollar figure)
    spend: tuple[float, float | None] | None = None


def rate_verdict(obs: float, base: Seasonal, slots: Slots, *, z: float, ratio: float, min_delta: float,
                 counts: bool, unit: str, per_hour: float, trimmed: float | None = None, calls: int | None = None,
                 min_calls: int = 0, strong_calls: int = 0, strong_volume: float = math.inf) -> Verdict | None:
    """Observed bucket value against the seasonal level: a robust z-score AND a ratio AND a floor, so neither a
    noisy small scope nor a slightly-above-normal huge one raises anything. With `trimmed` (the value without the
    bucket's largest call) and `calls`, the evidence must not rest on one call: the trimmed value must clear the
    thresholds, with at least `min_calls` calls; opening at once ("strong") also needs `strong_calls` calls, or
    an excess of `strong_volume` (several times what a busy bucket of this scope reaches)."""
    expected, dev, n = base.expected(slots, allow_global=False)
    if n < MIN_SAMPLES:
        return None
    sigma = max(1.25 * dev, 0.1 * expected, math.sqrt(expected) if counts else 0.0, 1e-9)
    high = max(expected + z * sigma, ratio * expected, expected + min_delta)
    low = max(expected - z * sigma, 0.0)
    judged = obs if trimmed is None else trimmed
    if judged >= high and (calls is None or calls >= min_calls):
        big = (judged >= expected + 2 * z * sigma and judged >= 2 * ratio * expected
               and judged >= expected + 2 * min_delta)
        many, huge = calls is None or calls >= strong_calls, judged >= expected + strong_volume
        if big and many and (huge or calls is None):
            state = "strong"
        elif big and (many or huge):
            # Loop-sized in calls, or a volume no busy stretch reaches, but not both: one long session with a few
            # 100k-token documents looks like either for one bucket. Two buckets in a row (a loop, a token
            # explosion last) instead of the sustained rule's three.
            verdict = Verdict("anomalous", obs * per_hour, expected * per_hour, low * per_hour, high * per_hour, unit)
            verdict.after = 2
            return verdict
        else:
            state = "anomalous"
    elif obs >= max(expected + z * sigma / 2, (1 + ratio) / 2 * expected, expected + min_delta / 2):
        state = "elevated"
    else:
        state = "normal"
    return Verdict(state, obs * per_hour, expected * per_hour, low * per_hour, high * per_hour, unit)


def ratio_verdict(obs: float, base: Seasonal, slots: Slots, *, ratio: float, z: float, unit: str) -> Verdict | None:
    """A per-request or per-token ratio against its hour-of-day level."""
    expected, dev, n = base.expected(slots)
    if n < MIN_SAMPLES or expected <= 0:
        return None
    if base.n[slots[0][0]] < MIN_SAMPLES and base.n[slots[1][0]] < 2 * MIN_SAMPLES:
        # The all-day level learnt its spread from busy hours; a quiet hour's average of a few calls is noisier.
        z *= 1.5
    sigma = max(1.25 * dev, 0.05 * expected)
    high = max(expected * ratio, expected + z * sigma)
    low = max(expected - z * sigma, 0.0)
    if obs >= high:
        strong = obs >= expected * (2 * ratio - 1) and obs >= expected + 2 * z * sigma
        state = "strong" if strong else "anomalous"
    elif obs >= max(expected * (1 + ratio) / 2, expected + z * sigma / 2):
        state = "elevated"
    else:
        state = "normal"
    return Verdict(state, obs, expected, low, high, unit)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space (exact; a normal approximation is far too
    optimistic for the handful of errors of a quiet scope)."""
    if k <= 0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k, n + 1):
        total += math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q)
    return min(total, 1.0)


ERROR_P0_FLOOR = 0.005  # the usual error share is never taken below this (error_evidence.py uses it too)


def error_verdict(errors: int, requests: int, base: Seasonal, slots: Slots, cfg: Config,
                  tries: int = 1) -> Verdict | None:
    """Error share against its usual level, judged by the exact binomial tail so that a few errors in a quiet
    bucket are not news. The caller passes counts of a short window (this bucket, or the last three when this
    one is quiet); `tries`, the windows judged for this bucket (`error_window_verdict`), scales the tail so
    that judging several keeps the chance-alarm bar (Bonferroni)."""
    if requests < cfg.error_min_requests:
        return None
    expected, _, n = base.expected(slots)
    if n < MIN_SAMPLES:
        return None
    overall = base.level[slots[-1][0]] if base.n[slots[-1][0]] >= MIN_SAMPLES else 0.0
    p0 = min(max(expected, overall, ERROR_P0_FLOOR), 0.9)  # the higher of this time of day and all day: never too low
    obs = errors / requests
    threshold = max(3 * p0, p0 + cfg.error_min_increase)
    tail = tries * binomial_tail(errors, requests, p0) if obs >= threshold and errors >= cfg.error_min_errors else 1.0
    if tail < cfg.error_p_value:
        # The window already spans up to three buckets, so overwhelming evidence need not wait for a second one.
        state = "strong" if obs >= max(0.5, 2 * threshold) or tail < cfg.error_p_value ** 1.5 else "anomalous"
    elif obs >= (threshold + p0) / 2 and errors >= cfg.error_min_errors:
        state = "elevated"
    else:
        state = "normal"
    return Verdict(state, obs, expected, 0.0, threshold, "error_ratio")


def error_window_verdict(window: list[tuple[int, int]], base: Seasonal, slots: Slots, cfg: Config) -> Verdict | None:
    """The error verdict of a quiet scope's window: (failures, calls) of this bucket and of the previous buckets with
    calls it joins, newest first. A storm's failures are the newest calls, so the window is judged on each of its
    suffixes (this bucket; with the previous one; with both), each tail times the number judged: calls from before
    the storm must not dilute it (sparse seed 21, sk-sparse-51: 6 failures in a row, 5.3e-9 at its 4.2 % usual
    share, judged with 2 ok calls of 28 minutes before as 6 of 8, 1.4e-7, above the 1e-7 bar, and never alerted).
    The most severe suffix speaks (the longest of equals); when none opens, the whole window's verdict (elevated,
    normal), as before."""
    window = [(e, r) for e, r in window if r]
    if len(window) <= 1:
        return error_verdict(*(window[0] if window else (0, 0)), base, slots, cfg)
    verdicts, errors, requests = [], 0, 0
    for e, r in window:
        errors, requests = errors + e, requests + r
        verdicts.append(error_verdict(errors, requests, base, slots, cfg, tries=len(window)))
    rank = {"strong": 2, "anomalous": 1}
    opening = [v for v in reversed(verdicts) if v is not None and v.state in rank]
    return max(opening, key=lambda v: rank[v.state]) if opening else verdicts[-1]


# Severity per kind, as documented in docs/anomalies.md. Escalations depend on size, not on the kind alone.
def severity(kind: str, v: Verdict) -> str:
    ratio = v.observed / v.expected if v.expected > 0 else math.inf
    excess = v.observed - v.expected
    if kind == "spend_rate":
        if excess >= 100:
            return "critical"
        return "error" if ratio >= 5 and excess >= 10 else "warning"
    if kind == "request_burst":
        return "critical" if ratio >= 10 and excess >= 36000 else "error"
    if kind in ("token_rate", "tokens_per_request"):
        return "error" if ratio >= 5 else "warning"
    if kind == "error_rate":
        return "error" if v.observed >= 0.5 else "warning"
    if kind == "model_shift":
        return "error" if ratio >= 10 else "warning"
    if kind == "new_model":
        return v.severity
    return "warning"  # unpriced_usage


def explain(kind: str, scope: str, v: Verdict) -> str:
    """The anomaly in words, its figures written as the dashboard and the alert texts write measures
    (tokenmeter.measures: "$0.00024 per 1k tokens", "4.5%", "852 requests/hour"); the record keeps the exact ones."""
    text = _explain(kind, scope, v)
    if v.spend is not None:
        now, usual = v.spend
        text += f" Spend meanwhile: {format_measure(now, 'usd_per_hour')}" + (
            f" (usually {format_measure(usual, 'usd_per_hour')})." if usual is not None else ".")
    return text


def _explain(kind: str, scope: str, v: Verdict) -> str:
    ratio = f"{v.observed / v.expected:.1f}x" if v.expected > 0 and v.observed < 1000 * v.expected else "far above"
    if kind == "spend_rate":
        return (f"{scope} is spending {format_measure(v.observed, 'usd_per_hour')}, {ratio} the "
                f"{format_measure(v.expected, 'usd_per_hour')} usual for this hour of the week (normal up to "
                f"{format_measure(v.high, 'usd_per_hour')})." + (f" {v.detail}" if v.detail else ""))
    if kind == "token_rate":
        return (f"{scope} is using {format_measure(v.observed, 'tokens_per_hour')}, {ratio} the usual "
                f"{format_number(v.expected, 'tokens_per_hour')} for this hour of the week.")
    if kind == "request_burst":
        if v.expected <= 0:
            return (f"{scope} sent {format_measure(v.observed, 'requests_per_hour')} with no history: "
                    f"a new or leaked key?")
        return (f"{scope} is sending {format_measure(v.observed, 'requests_per_hour')}, {ratio} its usual "
                f"{format_number(v.expected, 'requests_per_hour')}: a loop, a new client or a leaked key?")
    if kind == "tokens_per_request":
        return (f"{scope}: {v.detail} tokens per request jumped to {format_number(v.observed, 'tokens_per_request')}, "
                f"{ratio} the usual {format_number(v.expected, 'tokens_per_request')} (a changed prompt template or a "
                f"runaway context?).")
    if kind == "error_rate":
        return (f"{scope}: {format_number(v.observed, 'error_ratio')} of requests fail, usual is "
                f"{format_number(v.expected, 'error_ratio')} (alert above {format_number(v.high, 'error_ratio')}).")
    if kind == "model_shift":
        return (f"{scope}: cost per 1k tokens rose to {format_number(v.observed, 'usd_per_1k_tokens')}, {ratio} the "
                f"usual {format_number(v.expected, 'usd_per_1k_tokens')}; {v.detail}.")
    if kind == "new_model":
        if v.unpriced:  # its calls are in no cost figure: "$0.0000/hour on it" read as a free model
            return (f"{scope} started using {v.detail}, never used by it before. The model has no price, so what "
                    f"it costs is unknown (not $0): add it to the price catalog or an override.")
        return (f"{scope} started using {v.detail}, never used by it before "
                f"({format_measure(v.observed, 'usd_per_hour')} on it).")
    return (f"{scope}: {format_measure(v.observed, 'tokens_per_hour')} on {v.detail} cannot be priced, so they are "
            f"missing from cost figures; add the model to the price catalog or an override.")
