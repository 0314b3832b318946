"""What evaluate.py measures a template change's detectability by: each API key's own clean distribution of log
output (its ok calls before the first tokens-per-request change that touches it), the changed calls each change drew,
and the optimal sequential test for the known shift (optimal_test.py), in expectation and on those calls."""

from __future__ import annotations

import math
from datetime import datetime, timezone

from .error_evidence import first_start_per_key
from .optimal_test import BUDGET_DAYS, calls_needed, optimal_first_alarm


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _ts(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class OutputSpread:
    """Per API key: calls, sum and sum of squares of log(1 + output tokens) of its ok calls before the first
    tokens-per-request change that touches it (its own clean distribution), and the time they span; per change, its
    keys' ok calls while it lasts (time, key, log output)."""

    def __init__(self, labels: list[dict], start: float):
        self.cutoff = first_start_per_key(labels, "tokens_per_request")
        self.stats: dict[str, list] = {k: [0, 0.0, 0.0] for k in self.cutoff}
        self.start = start
        # api key -> [(change start, change end, the change's calls)] as event `ts` strings (compared as the cutoff is)
        self.windows: dict[str, list] = {}
        self.changed: dict[int, list] = {}  # id of a change's label -> its calls
        for lab in labels:
            if lab["kind"] == "tokens_per_request":
                calls = self.changed[id(lab)] = []
                for dim, value in lab["scopes"]:
                    if dim == "api_key":
                        end = _ts(lab["end"]) if lab.get("end") else "9999"  # (a label without an end: open)
                        self.windows.setdefault(value, []).append((_ts(lab["start"]), end, calls))

    def add(self, batch: list[dict]) -> None:
        cutoff, stats = self.cutoff, self.stats
        for e in batch:
            key = e["attribution"].get("api_key")
            # The family's own calls only (not a loop's or a leaked client's, whose sizes are the incident's).
            if key not in cutoff or e["status"] != "ok" or e.get("source") == "incident":
                continue
            x = math.log1p(e["usage"].get("output_tokens") or 0)
            if e["ts"] < cutoff[key]:
                s = stats[key]
                s[0] += 1
                s[1] += x
                s[2] += x * x
                continue
            for lo, hi, calls in self.windows[key]:
                if lo <= e["ts"] < hi:
                    calls.append((e["ts"], key, x))

    def detectability(self, lab: dict) -> dict | None:
        """The changed calls an optimal sequential test needs to find this change at the false-alert budget. The test:
        Page's CUSUM of the exact log-likelihood ratio for the known shift (the mean of log output moved by
        ln(multiplier), each key against its own spread sigma; delta = ln(multiplier) / sigma), which no test beats on
        its worst-case delay at a given rate of chance alarms (Moustakides 1986). Its threshold is set so that it alarms
        by chance once per BUDGET_DAYS days of the scope's calls, and the figure is its expected delay in calls
        (`optimal_cusum_calls`: Siegmund's approximations, exact to a few per cent for Gaussian steps, where the
        asymptotic A / KL of the earlier rounds overstated it by 2-3 calls at these run lengths). Beside it, the same
        test run on the calls this change drew (each against its key's own mean), judged after every call: when it
        would have alarmed, after the first changed call (tpr20: the expectation alone hid that a change's unchanged
        sizes may happen to be small, which no test sees through)."""
        mult = lab.get("output_multiplier")
        keys = [v for d, v in lab["scopes"] if d == "api_key" and v in self.stats and self.stats[v][0] >= 2]
        if not mult or not keys:
            return None
        calls = sum(self.stats[k][0] for k in keys)
        pooled = sum(s[2] - s[1] * s[1] / s[0] for s in (self.stats[k] for k in keys)) / max(calls - len(keys), 1)
        sigma = math.sqrt(max(pooled, 1e-6))
        # Each key's calls over the days they were counted in (up to its *first* change): divided by the days to this
        # change, a key's later changes read a lower rate (tpr20: 81-612 calls a day for a key pair of ~680).
        per_day = sum(self.stats[k][0] / max((_epoch(self.cutoff[k]) - self.start) / 86400, 1.0) for k in keys)
        delta = math.log(mult) / sigma
        needed = calls_needed(mult, sigma, per_day)
        drawn = sorted(c for c in self.changed.get(id(lab), []) if c[1] in keys)
        means = {k: self.stats[k][1] / self.stats[k][0] for k in keys}
        scores = [(x - means[k]) / sigma for _, k, x in drawn]
        alarm = optimal_first_alarm(scores, delta, max(per_day * BUDGET_DAYS, 2.0))
        first = lab.get("first_affected") or (_epoch(drawn[0][0]) if drawn else None)
        delay = round(max(0.0, _epoch(drawn[alarm - 1][0]) - first)) if alarm else None
        return {"sigma": round(sigma, 3), "shift_sd": round(delta, 3), "calls_per_day": round(per_day, 1),
                "calls_needed": needed, "changed_first_15m": lab["affected_first_15m"], "changed": lab["affected"],
                "detectable_in_15m": lab["affected_first_15m"] >= needed, "detectable": lab["affected"] >= needed,
                "optimal_test_calls": alarm, "optimal_test_delay_s": delay}
