"""Fold priced events into fixed event-time buckets: the only per-event work of the anomaly engine.

An event becomes one dictionary update keyed by (bucket, team, project, user, api_key, feature, model, error,
unpriced); the fan-out to the six scopes happens once per key when the bucket closes. Money stays exact as
integer pico-dollars (cost_usd carries 12 decimals).
"""

from __future__ import annotations

from datetime import datetime, timezone
from math import log1p

from tokenmeter.call_keys import call_keys
from tokenmeter.events import MAX_TOKENS
from tokenmeter.stored_money import MAX_STORED_COST_PICO

PICO = 10**12
SCOPE_DIMS = ("team", "project", "user", "api_key", "feature", "model")
# Raw key positions: 0 bucket, 1..5 attribution dims, 6 model, 7 is_error, 8 is_unpriced
# Aggregate positions: calls, input/output tokens, cost, and the largest single call's cost, input, output and
# total tokens (so a detector can ask whether a bucket is anomalous without its largest call: evidence, not one call),
# and the sum and sum of squares of log(1 + output tokens) of its calls (floats: statistics for the per-call test of
# tokens per request on quiet keys, where heavy-tailed sizes hide a shift of the plain mean), and a bit per minute of
# the bucket with a call in it (a steady stream of calls, minute after minute, is not a session: sustain by minutes)
REQ, TIN, TOUT, COST, MAXCOST, MAXIN, MAXOUT, MAXTOK, LOGOUT, LOGSQ, MINUTES = range(11)
AGG_SIZE = 11


class BadEvent(ValueError):
    """A priced event the engine cannot read (missing or malformed ts/cost); counted, never fatal."""


def parse_pico(value) -> int:
    """Decimal string -> integer pico-dollars, exactly (no float on the way)."""
    if value is None:
        return 0
    text = value if isinstance(value, str) else format(value, "f")
    negative = text.startswith("-")
    whole, _, frac = text.lstrip("+-").partition(".")
    if not whole.isdigit() and whole:
        raise BadEvent(f"cost_usd {value!r} is not a decimal")
    frac = (frac + "000000000000")[:12]
    if not frac.isdigit():
        raise BadEvent(f"cost_usd {value!r} is not a decimal")
    amount = int(whole or "0") * PICO + int(frac)
    return -amount if negative else amount


# The contract's bounds (tokenmeter.events; the loader letters what is outside them). Folded in, a 10^19-token or
# 40-digit-cost event from any producer to the priced topic made the saved state an integer past 64 bits that orjson
# cannot write: the detector exited, restarted from the same offsets and exited again (hostile32).
MAX_COST_PICO = MAX_STORED_COST_PICO  # the warehouse's Decimal(18,12) holds costs below 1,000,000 USD


def _amounts(event: dict) -> tuple[int, int, int]:
    """(input tokens, output tokens, cost in pico-dollars) of a priced event; BadEvent outside the contract."""
    usage = event.get("usage") or {}
    counts = []
    for name in ("input_tokens", "output_tokens"):
        count = usage.get(name) or 0
        if type(count) is not int or not 0 <= count <= MAX_TOKENS:
            raise BadEvent(f"usage.{name} {str(count)[:40]!r} is not a token count (0..{MAX_TOKENS})")
        counts.append(count)
    cost = event.get("cost_usd")
    cost_pico = parse_pico(cost) if cost and cost != "0.000000000000" else 0
    if abs(cost_pico) >= MAX_COST_PICO:
        raise BadEvent(f"cost_usd {str(cost)[:40]!r} is outside the warehouse's range (below 1,000,000 USD)")
    return counts[0], counts[1], cost_pico


def pico_to_str(amount: int) -> str:
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    return f"{sign}{amount // PICO}.{amount % PICO:012d}"


def epoch_seconds(ts) -> float:
    if isinstance(ts, datetime):
        return (ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)).timestamp()
    if not isinstance(ts, str):
        raise BadEvent(f"ts {ts!r} is not a time")
    try:
        parsed = datetime.fromisoformat(ts)
    except ValueError:
        raise BadEvent(f"ts {ts!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise BadEvent(f"ts {ts!r} has no offset")
    return parsed.timestamp()


def second_of(ts, minute: int) -> int:
    """Epoch second of an event time whose UTC minute is known (`minute_of`): its seconds read off a UTC string."""
    utc = isinstance(ts, str) and len(ts) >= 19 and ts[16] == ":" and (ts[-1] == "Z" or ts.endswith("+00:00"))
    if minute >= 0 and utc:
        seconds = ts[17:19]
        if seconds.isdigit():
            return minute + int(seconds)
    return int(epoch_seconds(ts))


class BucketAggregator:
    """Open buckets of raw aggregates, plus a cache from a UTC minute prefix to its epoch second."""

    def __init__(self, bucket_s: int, keep_calls: bool = False):
        self.bucket_s = bucket_s
        self.open: dict[int, dict[tuple, list[int]]] = {}
        # With `keep_calls`: per open bucket, its ok priced calls of an API key in arrival order, as (epoch second, raw
        # key, log(1 + output tokens)): tokens per request is judged after each call (early_sizes.py), and a bucket's
        # sums cannot say which call crossed the threshold, nor when it came. Dropped when the bucket closes.
        self.keep_calls = keep_calls
        self.calls: dict[int, list[tuple]] = {}
        # event ids per open bucket: an event delivered twice (at-least-once upstream) is counted once
        self.seen: dict[int, set] = {}
        self.duplicates = 0
        self.errors = 0  # failed calls folded so far (the engine's early check runs when new ones arrived)
        self.unpriced_reasons: dict[str, str] = {}
        self._minute: dict[str, int] = {}

    def minute_of(self, ts) -> int:
        """Epoch second of the UTC minute an event time falls in."""
        # Fast path: UTC strings share a minute prefix with thousands of other events; parse each minute once.
        if isinstance(ts, str) and len(ts) >= 17 and (ts[-1] == "Z" or ts.endswith("+00:00")):
            prefix = ts[:16]
            minute = self._minute.get(prefix)
            if minute is None:
                minute = int(epoch_seconds(prefix + ":00+00:00"))
                if len(self._minute) > 20000:  # bounded: two weeks of distinct minutes
                    self._minute.clear()
                self._minute[prefix] = minute
            return minute
        seconds = int(epoch_seconds(ts))
        return seconds - seconds % 60

    def add(self, event: dict, bucket: int, minute: int = -1) -> None:
        tin, tout, cost_pico = _amounts(event)  # first: a bad event changes nothing, not even the dedupe set
        event_id = event.get("event_id")
        if event_id is not None:
            seen = self.seen.get(bucket)
            if seen is None:
                seen = self.seen[bucket] = set()
            if event_id in seen:
                self.duplicates += 1
                return
            seen.add(event_id)
        correlation = event.get("correlation")
        if correlation:
            # One call seen by two sources (a gateway log and an OTel span with the same response id) is one call here
            # too, as in the warehouse: counted twice, its size was twice the evidence of a template change (the demo
            # month from 2026-11-08T09:00: an o4-mini answer of sk-glo-grow-ivy, scored twice, made the CUSUM page).
            keys = [("call", key) for key in call_keys(event.get("provider") or "", correlation)]
            if keys:
                seen = self.seen.get(bucket)
                if seen is None:
                    seen = self.seen[bucket] = set()
                if any(key in seen for key in keys):
                    self.duplicates += 1
                    return
                seen.update(keys)
        attribution = event.get("attribution") or {}
        error = event.get("status") == "error"
        unpriced = event.get("pricing_status") == "unpriced"
        model = event.get("model") or ""
        key = (bucket, attribution.get("team"), attribution.get("project"), attribution.get("user"),
               attribution.get("api_key"), attribution.get("feature"), model, error, unpriced)
        open_bucket = self.open.get(bucket)
        if open_bucket is None:
            open_bucket = self.open[bucket] = {}
        agg = open_bucket.get(key)
        if agg is None:
            agg = open_bucket[key] = [0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0]
        if minute >= bucket:  # (a late event counted in a later bucket marks no minute of it)
            agg[MINUTES] |= 1 << ((minute - bucket) // 60)
        agg[REQ] += 1
        if error:
            self.errors += 1
        agg[TIN] += tin
        agg[TOUT] += tout
        agg[COST] += cost_pico
        if cost_pico > agg[MAXCOST]:
            agg[MAXCOST] = cost_pico
        if tin > agg[MAXIN]:
            agg[MAXIN] = tin
        if tout > agg[MAXOUT]:
            agg[MAXOUT] = tout
        if tin + tout > agg[MAXTOK]:
            agg[MAXTOK] = tin + tout
        lo = 0.0
        if tout > 0:
            lo = log1p(tout)
            agg[LOGOUT] += lo
            agg[LOGSQ] += lo * lo
        if self.keep_calls and not error and not unpriced and key[4]:
            calls = self.calls.get(bucket)
            if calls is None:
                calls = self.calls[bucket] = []
            calls.append((second_of(event["ts"], minute), key, lo))
        if unpriced and model not in self.unpriced_reasons:
            self.unpriced_reasons[model] = str(event.get("unpriced_reason") or "no price for this model")
