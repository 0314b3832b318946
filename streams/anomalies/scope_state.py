"""What the engine remembers about one scope: baselines, the models it uses, streaks and open anomalies."""

from __future__ import annotations

import math

from .baseline import DAILY_SIZE, FULL_SIZE, Seasonal, quiet_slot_runs

OUT_SD_FLOOR = math.log(1.6)
MAX_BUCKET_WEIGHT = 0.05


def _owing_quiet(slot: str) -> property:
    """A rate baseline of a ScopeState (kept in `slot`), read and replaced only after the quiet buckets its scope
    still owes it are learnt (`ScopeState.quiet`)."""
    def get(state: ScopeState) -> Seasonal | None:
        if state.quiet is not None:
            state.learn_quiet()
        return getattr(state, slot)

    def put(state: ScopeState, base: Seasonal | None) -> None:
        if state.quiet is not None:
            state.learn_quiet()
        setattr(state, slot, base)

    return property(get, put)


class ScopeState:
    __slots__ = ("dim", "value", "first", "last_active", "age", "_spend", "_tokens", "_requests", "tpr_out",
                 "tpr_in", "err", "cpt", "models", "streaks", "open", "recent", "call_cost", "call_tokens", "pending",
                 "busy", "recent_cost", "out_log", "cusum", "out_rate", "busy_pending", "steady", "quiet",
                 "held", "adopting", "shifted", "mix", "templated")

    def __init__(self, dim: str, value: str, first: int):
        self.dim, self.value, self.first, self.last_active, self.age = dim, value, first, first, 0
        # Quiet buckets whose zero samples the rate baselines (spend, tokens, requests) still owe: [first bucket,
        # buckets, bucket seconds], or None. Most scopes are quiet most of the time, and learning "quiet" one bucket
        # at a time was most of the detector's CPU; the engine records the stretch (`owe_quiet`) and the baselines
        # learn it on first read (the properties below), bit for bit as if learnt bucket by bucket.
        self.quiet: list | None = None
        self.spend, self.tokens = Seasonal(FULL_SIZE), Seasonal(FULL_SIZE)
        self.requests = Seasonal(FULL_SIZE) if dim == "api_key" else None
        self.tpr_out, self.tpr_in = Seasonal(DAILY_SIZE), Seasonal(DAILY_SIZE)
        self.err, self.cpt = Seasonal(DAILY_SIZE), Seasonal(DAILY_SIZE)
        self.models: dict[str, list] = {}  # model -> [first bucket, usual share of this scope's cost]
        self.streaks: dict[str, list[int]] = {}  # kind key -> [anomalous buckets in a row, first of them]
        self.open: dict[str, dict] = {}  # kind key -> open anomaly (record fields + private "_" fields)
        # Errors and requests of the previous two buckets with calls, then their bucket starts (error window of quiet
        # scopes; an empty bucket is skipped, a bucket older than `Config.error_window_s` is left out).
        self.recent = [0, 0, 0, 0, -1, -1]
        # Typical size of one call (USD, tokens): a slow mean of per-call averages of active buckets, each step
        # clipped to 4x / 0.25x, so a bucket must exceed what several typical calls of *this* scope would add.
        self.call_cost, self.call_tokens = 0.0, 0.0
        self.pending: dict[str, list] = {}  # new model -> [first bucket, calls, cost pico, buckets] until news
        # A model new to this scope and its teams, for an hour from its first call: [first bucket, its calls, the
        # scope's calls, its cost pico, its tokens, the scope's cost pico, the scope's tokens, the API keys calling it,
        # whether it was reported]
        # (a new model taking over the scope's calls is a model shift, `ModelRules._new_model_takeover`).
        self.adopting: dict[str, list] = {}
        # A team's alerted move of its calls to a model: model -> [last bucket close with a model shift record of the
        # team to it, or with its calls still on the model (`AlertGating._shift_calls_go_on`), the scope alerted, its
        # alert's time, the team's usual share of the model's calls then] (one incident, one alert:
        # `AlertGating._shift_incident`).
        self.shifted: dict[str, list] = {}
        # Its usual share of calls per model: [calls learnt (each bucket capped), {model: share}] (`learn_mix`). Every
        # model called counts, whether or not it was ever news (a key's second model called in one-call sessions never
        # became a `models` entry, so its calls looked "rare" to the model shift rules: sparse seed 21, sk-sparse-30).
        self.mix: list = [0, {}]
        # A feature's alerted change of tokens per request: "output" / "input" -> [last record of it on the feature or
        # one of its keys and users, the scope alerted, its alert's time] (`AlertGating._template_incident`).
        self.templated: dict[str, list] = {}
        # Spend and tokens of this scope's *active* buckets (level and deviation, slots 0 and 1): how big a busy
        # bucket usually is. Sessions make quiet scopes bursty: a 15-call agent run is this key's normal, not news.
        self.busy = Seasonal(3)  # slot 2: calls of an active bucket
        self.busy_pending = None  # an API key's last active bucket (cost, tokens, calls), learnt once the next is seen
        # ok calls, cost pico, tokens, calls per model of the last two buckets (cost-per-token window of quiet scopes)
        self.recent_cost: list = [[0, 0, 0, {}], [0, 0, 0, {}]]
        # An API key's own distribution of log(1 + output tokens) per call: [calls learnt, mean, variance] (slow,
        # per call), and every tokens-per-request scope's CUSUM of calls standardized against their keys' own.
        self.out_log: list = [0, 0.0, 0.0]
        self.cusum = 0.0
        self.out_rate = [first, 0.0]  # [last active bucket, ok calls with exponential decay over 2 days]
        # An API key's minutes in a row with a call up to the end of its last bucket: [bucket, minutes, loop-sized]
        self.steady = [0, 0, False]
        # An API key's ok calls held, not learnt, while its own tokens-per-request anomaly is open: [first bucket,
        # calls, sum and sum of squares of log(1 + output tokens)], or None. Dropped when the change reverts (the
        # anomaly closes), adopted as its new normal once the anomaly has lasted `Config.tpr_new_normal_s`.
        self.held: list | None = None

    def owe_quiet(self, bucket: int, bucket_s: int) -> None:
        """The rate baselines learn that `bucket` was quiet (zero spend, tokens and requests), when next read."""
        quiet = self.quiet
        if quiet is not None and quiet[0] + quiet[1] * bucket_s == bucket and quiet[2] == bucket_s:
            quiet[1] += 1
            return
        if quiet is not None:
            self.learn_quiet()
        self.quiet = [bucket, 1, bucket_s]

    def learn_quiet(self) -> None:
        runs = quiet_slot_runs(*self.quiet)
        self.quiet = None
        for base in (self._spend, self._tokens, self._requests):
            if base is not None:
                base.update_zeros(runs)

    def rate_baselines(self) -> tuple[Seasonal, Seasonal, Seasonal | None]:
        """(spend, tokens, requests) with the quiet buckets owed to them learnt: a bucket's step reads them several
        times, and each read through the properties below is a Python call."""
        if self.quiet is not None:
            self.learn_quiet()
        return self._spend, self._tokens, self._requests

    # The rate baselines: each read or replaced only after the quiet buckets owed to them are learnt.
    spend = _owing_quiet("_spend")
    tokens = _owing_quiet("_tokens")
    requests = _owing_quiet("_requests")  # an API key's only (None elsewhere)

    def out_sd(self) -> float:
        """Spread of log output per call, floored at log(1.6): a shift smaller than that is not a changed template."""
        return max(math.sqrt(self.out_log[2]), OUT_SD_FLOOR)

    def learn_out_log(self, calls: int, log_sum: float, log_sq: float, young: int, young_bucket_calls: int,
                      rate: float = 0.01) -> None:
        """Fold one bucket's ok calls in: a running mean while young, a bucket weighing at most `young_bucket_calls`
        calls, then a running mean still until it is as slow as the per-call EWMA (1 / `rate` calls), then that EWMA;
        past `young` a bucket's step is bounded (at most `MAX_BUCKET_WEIGHT`); past its first `young_bucket_calls` the
        bucket's mean is clipped to one deviation, so a burst of thousands of odd calls (a leaked key's client) barely
        moves it, and a lasting change is learnt within a few hundred calls."""
        seen, mu, var = self.out_log
        mean = log_sum / calls
        counted = calls
        if seen < young:
            # One bucket is one session (or a leak's first minutes, learnt before its burst opens): at full weight a
            # 67-call leaked bucket learnt at 23 calls set sk-sparse-16's median 308 -> 66 for weeks (sparse seed 21).
            counted = min(calls, young_bucket_calls)
        if not seen:
            self.out_log = [counted, mean, max(log_sq / calls - mean * mean, 0.0)]
            return
        if seen < young:
            weight = counted / (seen + counted)
        else:
            # Straight to the EWMA at `young` calls, each call moved the mean by `rate` (1 %) instead of 1 / (seen + 1):
            # the first 30 calls' error (sd / sqrt(30)) was held for ~100 calls and every usual call scored high (demo
            # month from a Friday: sk-acm-data-gus's first 30 calls 0.35 low, still 0.28 at call 51, paged on Monday).
            weight = min(max(calls * rate, calls / (seen + calls)), MAX_BUCKET_WEIGHT)
        spread = max(log_sq / calls - 2 * mu * (log_sum / calls) + mu * mu, 0.0)  # mean squared deviation from mu
        if seen >= young_bucket_calls:
            # A bucket's mean is clipped to one deviation and its spread to 4 variances once a bucket's worth of calls
            # is behind the key (the leak above moved it by 2 deviations at once).
            sd = self.out_sd()
            mean = min(max(mean, mu - sd), mu + sd)
            spread = min(spread, 4 * max(var, OUT_SD_FLOOR ** 2))
        self.out_log = [seen + counted, mu + weight * (mean - mu), var + weight * (spread - var)]

    def hold_out_log(self, bucket: int, calls: int, log_sum: float, log_sq: float) -> None:
        held = self.held
        if held is None:
            self.held = [bucket, calls, log_sum, log_sq]
        else:
            held[1] += calls
            held[2] += log_sum
            held[3] += log_sq

    def adopt_held(self, min_calls: int) -> None:
        """The held calls are this key's new normal: its mean becomes theirs (and its spread, with enough of them)."""
        held, self.held = self.held, None
        if not held or not held[1]:
            return
        seen, _, var = self.out_log
        calls, mean = held[1], held[2] / held[1]
        if calls >= min_calls:
            var = max(held[3] / calls - mean * mean, 0.0)
        self.out_log = [seen + calls, mean, var]

    def mix_share(self, model: str) -> float:
        """This scope's usual share of its calls on `model` (0 for a model it never called)."""
        return self.mix[1].get(model, 0.0)

    def learn_mix(self, calls_by_model: dict, calls: int, horizon: int, bucket_cap: int) -> None:
        """Fold one bucket's calls per model (model -> [calls, ...]) into the usual shares, per call: a running mean
        over the first `horizon` calls, then an EWMA of that horizon; the bucket weighs at most `bucket_cap` calls.
        Per call, not per bucket: a quiet key's bucket is one session on one model, so a per-bucket share of its
        second model (one session in five) swung 0.2 -> 0.09 after a run of sessions on its main model."""
        seen, shares = self.mix
        weight_calls = min(calls, bucket_cap)
        weight = weight_calls / (min(seen, horizon) + weight_calls)
        for model in shares:
            shares[model] -= weight * shares[model]
        for model, m in calls_by_model.items():
            shares[model] = shares.get(model, 0.0) + weight * m[0] / calls
        for model in [m for m, share in shares.items() if share < 1e-4]:
            del shares[model]  # a model not called for thousands of calls (bounded state)
        self.mix[0] = seen + weight_calls

    def busy_high(self, slot: int) -> float:
        """What a busy bucket of this scope reaches (level + 3 deviations of its active buckets), 0 while young."""
        if self.busy.n[slot] < 12:
            return 0.0
        return self.busy.level[slot] + 3 * self.busy.dev[slot]

    def busy_highs(self) -> tuple[float, float, float]:
        """`busy_high` of the three slots (cost, tokens, calls) at once: a bucket's step reads them several times."""
        n, level, dev = self.busy.n, self.busy.level, self.busy.dev
        return (0.0 if n[0] < 12 else level[0] + 3 * dev[0], 0.0 if n[1] < 12 else level[1] + 3 * dev[1],
                0.0 if n[2] < 12 else level[2] + 3 * dev[2])

    def learn_call_size(self, cost: float, tokens: float) -> None:
        # A slow mean of each, every step clipped to 4x / 0.25x of the level (inline: once per active bucket of every
        # scope).
        level = self.call_cost
        self.call_cost = cost if level <= 0 else level + 0.05 * (min(max(cost, 0.25 * level), 4 * level) - level)
        level = self.call_tokens
        self.call_tokens = tokens if level <= 0 else level + 0.05 * (min(max(tokens, 0.25 * level), 4 * level) - level)

    def to_json(self) -> dict:
        return {"dim": self.dim, "value": self.value, "first": self.first, "last_active": self.last_active,
                "age": self.age, "models": self.models, "streaks": self.streaks, "open": self.open,
                "recent": self.recent, "call_size": [self.call_cost, self.call_tokens], "pending": self.pending,
                "busy": self.busy.to_json(), "recent_cost": self.recent_cost,
                "out_log": self.out_log, "cusum": self.cusum, "out_rate": self.out_rate, "busy_pending": self.busy_pending,
                "steady": self.steady, "held": self.held, "adopting": self.adopting,
                "shifted": self.shifted, "mix": self.mix, "templated": self.templated,
                **{name: getattr(self, name).to_json() for name in ("spend", "tokens", "tpr_out", "tpr_in", "err", "cpt")},
                "requests": self.requests.to_json() if self.requests else None}

    @classmethod
    def from_json(cls, data: dict) -> "ScopeState":
        state = cls(data["dim"], data["value"], data["first"])
        state.last_active, state.age = data["last_active"], data["age"]
        state.models, state.streaks, state.open = data["models"], data["streaks"], data["open"]
        state.recent = (list(data["recent"]) + [-1, -1])[:6]  # snapshots before the bucket starts: never in a window
        state.call_cost, state.call_tokens = data.get("call_size", [0.0, 0.0])
        state.pending = data.get("pending", {})
        state.recent_cost = data.get("recent_cost", state.recent_cost)
        state.out_log = list(data.get("out_log", state.out_log))
        state.cusum = float(data.get("cusum", 0.0))
        state.out_rate = list(data.get("out_rate", [state.first, 0.0]))
        state.busy_pending = data.get("busy_pending")
        state.steady = list(data.get("steady", state.steady))
        state.held = data.get("held")
        state.adopting = data.get("adopting", {})
        state.shifted = data.get("shifted", {})
        state.templated = data.get("templated", {})
        # (A snapshot from before the per-call mix: its per-bucket call shares stand in, as if learnt from 100 calls.)
        state.mix = list(data.get("mix") or [100, {m: i[2] for m, i in state.models.items() if len(i) > 2 and i[2]}])
        if data.get("busy"):
            state.busy = Seasonal.from_json(data["busy"])
        for name in ("spend", "tokens", "tpr_out", "tpr_in", "err", "cpt"):
            setattr(state, name, Seasonal.from_json(data[name]))
        state.requests = Seasonal.from_json(data["requests"]) if data.get("requests") else None
        return state

