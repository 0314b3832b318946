"""What an error storm must show before the error rule may speak, by the rule's own bar (evaluate.py).

The rule (detectors.error_verdict) opens when the binomial tail of a window's failures, at the scope's usual error
share p0, is below `Config.error_p_value` (1e-7 per scope and bucket). The most any window can show with k failures
is k of k (no call of the key succeeding between them, nothing else in the window): a tail of p0^k. So a storm on a
key that usually fails a share s of its calls needs the least k >= `error_min_errors` with s^k < the bar: 5 up to
s = 3.98 %, 6 up to 6.8 %. The sparse family's keys fail 1.3-5 % of their calls (sparse.py: 1-4 % and a retry that
fails 30 % of the time), so on its flakier keys five failures in a row are chance at the bar (sparse seed 21,
sk-sparse-31: 4.1 % before its storm, 0.041^5 = 1.1e-7; its storm failed 5 calls in all).

The share is measured as `OutputSpread` measures output sizes: on the key's own calls (not an incident's) before the
first error storm that touches it. The detector's own p0 is its learnt level for the time of day or all day,
whichever is higher (never below 0.5 %): sometimes above this share (sk-sparse-31 at 21:00: 5.3 %), so this is the
least the rule needs, not what the detector needed.
"""

from __future__ import annotations

import math
from datetime import datetime

from .detectors import ERROR_P0_FLOOR as P0_FLOOR, Config


def failures_needed(share: float, cfg: Config = Config()) -> int:
    """The least k >= error_min_errors failures in a row whose chance at this usual share is below the bar."""
    p0 = min(max(share, P0_FLOOR), 0.9)
    return max(cfg.error_min_errors, math.floor(math.log(cfg.error_p_value) / math.log(p0)) + 1)


def first_start_per_key(labels: list[dict], kind: str) -> dict[str, str]:
    """Per API key touched by an injection of `kind`: the start of its first one, as an event `ts` string (the calls
    before it are the key's own, clean)."""
    cutoff: dict[str, str] = {}
    for lab in labels:
        if lab["kind"] == kind:
            cut = datetime.utcfromtimestamp(lab["start"]).strftime("%Y-%m-%dT%H:%M:%SZ")
            for dim, value in lab["scopes"]:
                if dim == "api_key" and (value not in cutoff or cut < cutoff[value]):
                    cutoff[value] = cut
    return cutoff


class ErrorShare:
    """Per API key of an error storm: its calls and failures before the first storm that touches it."""

    def __init__(self, labels: list[dict], cfg: Config = Config()):
        self.cfg = cfg
        self.cutoff = first_start_per_key(labels, "error_rate")
        self.stats: dict[str, list[int]] = {k: [0, 0] for k in self.cutoff}

    def add(self, batch: list[dict]) -> None:
        cutoff, stats = self.cutoff, self.stats
        for e in batch:
            key = e["attribution"].get("api_key")
            if key in cutoff and e["ts"] < cutoff[key] and e.get("source") != "incident":
                s = stats[key]
                s[0] += 1
                s[1] += e["status"] == "error"

    def evidence(self, lab: dict) -> dict | None:
        """The storm key's usual share and the failures the rule needs there (None without a key or its calls)."""
        keys = [v for d, v in lab["scopes"] if d == "api_key" and self.stats.get(v, (0,))[0]]
        if not keys:
            return None
        calls, errors = self.stats[keys[0]]
        share = errors / calls
        needed = failures_needed(share, self.cfg)
        return {"key": keys[0], "calls_before": calls, "errors_before": errors, "usual_share": round(share, 4),
                "failures_needed": needed, "chance_of_min_run": max(share, P0_FLOOR) ** self.cfg.error_min_errors}
