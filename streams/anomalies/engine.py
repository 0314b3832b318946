"""AnomalyEngine: priced events in, anomaly lifecycle updates out. Pure (no Kafka, no clock): driven by event time.

Events are folded into fixed buckets (aggregate.py). A bucket closes once the event-time watermark passes its end
plus `grace_s`; the watermark is the minimum latest event time over the inputs (partitions) that still hold unread
records (`observe(..., source=p)`, `set_behind`), and a wall-clock `advance_to` is refused over history. Then the
bucket's rows are fanned out to their scopes (scope_bucket.py) and every known scope gets one step: the per-kind rules
judge the bucket against the scope's baselines (rules.py, model_rules.py, on detectors.py), the baselines learn from
it (baseline.py), and anomalies open, extend or close, alerted or explained by another (gating.py). This module keeps
the clock (watermark, bucket closes) and the state: bounded (at most `max_scopes`, idle scopes expire), round-tripping
through JSON (`snapshot()` / `restore()`).
"""

from __future__ import annotations

import time
from dataclasses import asdict

from .aggregate import AGG_SIZE, BadEvent, BucketAggregator
from .baseline import daily_slots, full_slots
from .detectors import Config
from .early import EarlyChecks
from .early_shifts import EarlyShifts
from .early_sizes import EarlySizes
from .gating import AlertGating, AnomalyUpdate  # noqa: F401  (AnomalyUpdate: imported from here by callers)
from .model_rules import ModelRules
from .rules import KindRules
from .scope_bucket import FanOut, empty_bucket
from .scope_state import ScopeState

SNAPSHOT_VERSION = 1


# `Config.early_kinds` of the releases before tpr23 (tokens per request judged at the close only) and before shift19.
PAST_DEFAULT_EARLY_KINDS = (("error_rate",), ("error_rate", "model_shift"))


def restored_config(data: dict) -> tuple[Config, str]:
    """The Config a snapshot is restored with, and what was migrated (or ""). The detector process always runs with
    the default Config, so a saved default is today's default: a state saved before a release that changed a default
    must not keep the old one until someone deletes the state (tpr23's per-call tokens-per-request checks stayed
    off on a restored state; oncall24). A snapshot says whether its Config was the default (`config_is_default`);
    one saved before that marker counts as default when it differs from today's only by a past default of
    `early_kinds` and by fields it does not know. Any other Config (a test's, an evaluation's) is kept as saved."""
    saved, default = data["config"], Config()
    known = {k: v for k, v in saved.items() if k in Config.__dataclass_fields__}
    if data.get("config_is_default"):
        return default, ""
    if "config_is_default" not in data:
        current = asdict(default)
        differs = {k for k, v in known.items() if _as_tuple(v) != _as_tuple(current[k])}
        early = tuple(known.get("early_kinds", ()))
        if differs <= {"early_kinds"} and (not differs or early in PAST_DEFAULT_EARLY_KINDS):
            return default, (f"early checks {list(early)} -> {list(default.early_kinds)} (a default saved before "
                             f"they changed)" if differs else "")
    return Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in known.items()}), ""


def _as_tuple(value):
    return tuple(value) if isinstance(value, list) else value


class AnomalyEngine(FanOut, KindRules, ModelRules, AlertGating, EarlyChecks, EarlyShifts, EarlySizes):
    def __init__(self, config: Config | None = None):
        self.cfg = config or Config()
        self.agg = BucketAggregator(self.cfg.bucket_s, keep_calls="tokens_per_request" in self.cfg.early_kinds)
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
                      "anomalies_explained": 0, "advances_refused": 0, "duplicate_events": 0,
                      "early_alerts": 0}
        self.last_error = ""
        self._now = 0  # event time of the bucket close being processed
        self._opened: list = []  # anomalies opened by the bucket close being processed
        self._extended: list = []  # (update, anomaly) of the anomalies it extends (`_restate`)
        self._raw: dict = {}  # aggregate rows of the bucket close being processed
        self._raw_by_model: dict | None = None  # the same rows per model, built when first asked (`_rows_of_model`)
        self.max_future_s = 3600  # a client clock far ahead must not close every bucket at once
        self.restored_note = ""  # what `restore` migrated (the runner logs it)

    # Input ---------------------------------------------------------------------------------------------------
    def observe(self, priced_events: list[dict], now: float | None = None, source: int = 0,
                early: bool = True) -> list[AnomalyUpdate]:
        """Fold events of one input (`source`, e.g. a partition; events of one input arrive in about event-time
        order), close the buckets the watermark has passed and (`early`) judge the running bucket. A caller folding
        several inputs per poll passes early=False and calls `judge_running` once after them: each early check
        reads the whole running bucket."""
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
                agg.add(event, bucket, minute)
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
        updates = self._close_ready()
        if early:
            self.judge_running(updates)
        return updates

    def judge_running(self, updates: list[AnomalyUpdate] | None = None) -> list[AnomalyUpdate]:
        """The early checks of the running bucket (appended to `updates`, which is returned)."""
        updates = [] if updates is None else updates
        self._early(updates)  # the running bucket, when new failures may already suffice (early.py)
        self._early_shifts(updates)  # ... and new calls on models their keys rarely use (early_shifts.py)
        self._early_sizes(updates)  # ... and new calls of keys with a known output size (early_sizes.py)
        return updates

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
        while self.next_close is not None and self.close_time(self.next_close) <= self.watermark:
            self._close(self.next_close, updates)
            self.next_close += self.cfg.bucket_s
        return updates

    @property
    def _close_lag(self) -> int:
        # The watermark is the minute an event fell in (`minute_of`): an event of minute m says events up to the end
        # of that minute are in, so a bucket's grace is reached a minute before its end + grace.
        return self.cfg.bucket_s + self.cfg.grace_s - 60

    def close_time(self, bucket: int) -> int:
        """The event time at which `bucket` closes: the watermark (the minute of the newest event) reaching it. An
        anomaly judged at the close is stamped with it (`detected_at`, the alert's `at`): before oncall24 it was
        stamped a minute later than the close ran, so alerts arrived stamped in the future."""
        return bucket + self._close_lag

    def _close(self, bucket: int, updates: list[AnomalyUpdate]) -> None:
        # Detection time in event time: the earliest moment this bucket could close (`close_time`), so figures do not
        # depend on how events were batched.
        self._now = bucket + self._close_lag
        if not self.stats["buckets_closed"]:
            self.started = bucket
        raw = self.agg.open.pop(bucket, {})
        self.agg.seen.pop(bucket, None)
        self.agg.calls.pop(bucket, None)
        self.stats["duplicate_events"] = self.agg.duplicates
        per_scope = self._fan_out(raw)
        self._raw, self._raw_by_model = raw, None  # (which keys called a model: `_new_model_takeover`)
        self._opened, self._extended = [], []
        for key in per_scope:
            if key not in self.scopes:
                self._admit(key, bucket)
        full, daily = full_slots(bucket), daily_slots(bucket)
        bucket_s = self.cfg.bucket_s
        for key, state in self.scopes.items():
            sb = per_scope.get(key)
            if sb is None and not state.open and not state.streaks:
                # Quiet scope: only the rate baselines learn that this hour is quiet (when next read: a stretch at once).
                quiet = state.quiet
                if quiet is not None and quiet[0] + quiet[1] * bucket_s == bucket and quiet[2] == bucket_s:
                    quiet[1] += 1  # (`owe_quiet`'s usual case, inline: ~50 quiet scopes a bucket close in the demo)
                else:
                    state.owe_quiet(bucket, bucket_s)
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
            self._restate()
        self._extended = []
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

    # Introspection and persistence ---------------------------------------------------------------------------
    def open_anomalies(self) -> list[dict]:
        return [self._public(a) for s in self.scopes.values() for a in s.open.values()]

    def snapshot(self) -> dict:
        """JSON-ready state (money as integer pico-dollars or decimal strings, never floats)."""
        return {"version": SNAPSHOT_VERSION, "config": asdict(self.cfg), "config_is_default": self.cfg == Config(),
                "next_close": self.next_close,
                "watermark": self.watermark, "started": self.started, "stats": dict(self.stats),
                "sources": {str(k): v for k, v in self.sources.items()},
                "open_buckets": {str(b): [[list(k[1:]), v] for k, v in raw.items()] for b, raw in self.agg.open.items()},
                "unpriced_reasons": self.agg.unpriced_reasons,
                "scopes": [s.to_json() for s in self.scopes.values()]}

    @classmethod
    def restore(cls, data: dict) -> "AnomalyEngine":
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"anomaly engine snapshot version {data.get('version')!r} is not {SNAPSHOT_VERSION}")
        config, engine_note = restored_config(data)
        engine = cls(config)
        engine.restored_note = engine_note
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
