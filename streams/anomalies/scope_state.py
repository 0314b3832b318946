"""What the engine remembers about one scope: baselines, the models it uses, streaks and open anomalies."""

from __future__ import annotations

from .baseline import DAILY_SIZE, FULL_SIZE, Seasonal


class ScopeState:
    __slots__ = ("dim", "value", "first", "last_active", "age", "spend", "tokens", "requests", "tpr_out",
                 "tpr_in", "err", "cpt", "models", "streaks", "open", "recent", "call_cost", "call_tokens", "pending",
                 "busy", "recent_cost")

    def __init__(self, dim: str, value: str, first: int):
        self.dim, self.value, self.first, self.last_active, self.age = dim, value, first, first, 0
        self.spend, self.tokens = Seasonal(FULL_SIZE), Seasonal(FULL_SIZE)
        self.requests = Seasonal(FULL_SIZE) if dim == "api_key" else None
        self.tpr_out, self.tpr_in = Seasonal(DAILY_SIZE), Seasonal(DAILY_SIZE)
        self.err, self.cpt = Seasonal(DAILY_SIZE), Seasonal(DAILY_SIZE)
        self.models: dict[str, list] = {}  # model -> [first bucket, usual share of this scope's cost]
        self.streaks: dict[str, list[int]] = {}  # kind key -> [anomalous buckets in a row, first of them]
        self.open: dict[str, dict] = {}  # kind key -> open anomaly (record fields + private "_" fields)
        self.recent = [0, 0, 0, 0]  # errors, requests of the previous two buckets (error window of quiet scopes)
        # Typical size of one call (USD, tokens): a slow mean of per-call averages of active buckets, each step
        # clipped to 4x / 0.25x, so a bucket must exceed what several typical calls of *this* scope would add.
        self.call_cost, self.call_tokens = 0.0, 0.0
        self.pending: dict[str, list] = {}  # new model -> [first bucket, calls, cost pico, buckets] until news
        # Spend and tokens of this scope's *active* buckets (level and deviation, slots 0 and 1): how big a busy
        # bucket usually is. Sessions make quiet scopes bursty: a 15-call agent run is this key's normal, not news.
        self.busy = Seasonal(3)  # slot 2: calls of an active bucket
        # ok calls, cost pico, tokens, calls per model of the last two buckets (cost-per-token window of quiet scopes)
        self.recent_cost: list = [[0, 0, 0, {}], [0, 0, 0, {}]]

    def busy_high(self, slot: int) -> float:
        """What a busy bucket of this scope reaches (level + 3 deviations of its active buckets), 0 while young."""
        if self.busy.n[slot] < 12:
            return 0.0
        return self.busy.level[slot] + 3 * self.busy.dev[slot]

    def learn_call_size(self, cost: float, tokens: float) -> None:
        self.call_cost = _clipped_mean(self.call_cost, cost)
        self.call_tokens = _clipped_mean(self.call_tokens, tokens)

    def to_json(self) -> dict:
        return {"dim": self.dim, "value": self.value, "first": self.first, "last_active": self.last_active,
                "age": self.age, "models": self.models, "streaks": self.streaks, "open": self.open,
                "recent": self.recent, "call_size": [self.call_cost, self.call_tokens], "pending": self.pending,
                "busy": self.busy.to_json(), "recent_cost": self.recent_cost,
                **{name: getattr(self, name).to_json() for name in ("spend", "tokens", "tpr_out", "tpr_in", "err", "cpt")},
                "requests": self.requests.to_json() if self.requests else None}

    @classmethod
    def from_json(cls, data: dict) -> "ScopeState":
        state = cls(data["dim"], data["value"], data["first"])
        state.last_active, state.age = data["last_active"], data["age"]
        state.models, state.streaks, state.open = data["models"], data["streaks"], data["open"]
        state.recent = list(data["recent"])
        state.call_cost, state.call_tokens = data.get("call_size", [0.0, 0.0])
        state.pending = data.get("pending", {})
        state.recent_cost = data.get("recent_cost", state.recent_cost)
        if data.get("busy"):
            state.busy = Seasonal.from_json(data["busy"])
        for name in ("spend", "tokens", "tpr_out", "tpr_in", "err", "cpt"):
            setattr(state, name, Seasonal.from_json(data[name]))
        state.requests = Seasonal.from_json(data["requests"]) if data.get("requests") else None
        return state


def _clipped_mean(level: float, x: float, rate: float = 0.05) -> float:
    if level <= 0:
        return x
    return level + rate * (min(max(x, 0.25 * level), 4 * level) - level)
