"""Early tokens-per-request checks: the CUSUM of a scope's standardized log output (rules.py, `_output_shift`) judged
on the running (not yet closed) bucket as its calls arrive, instead of at its close. A template change's calls come
in bursts (sparse seed 8, 03-16: 4 calls in its first minute, 6 more six minutes later), and the close added the
rest of the bucket plus the 2-minute grace to every detection (docs/anomalies.md, shift19).

The same statistic as at the close (`_cusum_step`: the scope's CUSUM, faded over its pause, plus this bucket's calls
so far, each against its own key's distribution, the step clipped to 3 sqrt(n)), and only what opens at the close
opens here: S >= h with a positive step. Not the per-bucket mean rule of busy scopes (a bucket's mean needs the
bucket). Opened through the same lifecycle and gating as at the close (`_open_early`); the close then extends it,
and keeps the CUSUM (nothing is learnt or kept early). Only the oldest open bucket is judged, as for model shifts.
"""

from __future__ import annotations

from .aggregate import LOGOUT, REQ
from .detectors import KIND_DIMS
from .gating import AnomalyUpdate

DIMS = ("team", "project", "user", "api_key", "feature")  # positions 1..5 of a raw aggregate key


class EarlySizes:
    """Mixin of AnomalyEngine (uses `self.cfg`, `self.agg`, `self.scopes`, the rules' CUSUM, `_open_early`)."""

    _early_scored = (0, 0)  # (bucket, ok calls of keys with a distribution) at the last early size check

    def _early_sizes(self, updates: list[AnomalyUpdate]) -> None:
        cfg, bucket, scopes = self.cfg, self.next_close, self.scopes
        if "tokens_per_request" not in cfg.early_kinds or bucket is None:
            return
        raw = self.agg.open.get(bucket)
        if not raw:
            return
        # Per scope: calls scored against their own key, the sum of their scores, of their log outputs and of their
        # keys' means (as the fan-out sums them, in the same order).
        sums: dict[tuple[str, str], list] = {}
        scored, min_calls = 0, cfg.tpr_key_min_calls
        for key, row in raw.items():
            if key[7] or key[8] or not key[4]:
                continue  # failures and unpriced calls have no size of their key's (as in the fan-out)
            owner = scopes.get(("api_key", key[4]))
            if owner is None or owner.out_log[0] < min_calls:
                continue
            n, mu = row[REQ], owner.out_log[1]
            z, log_out, mu_sum = (row[LOGOUT] - n * mu) / owner.out_sd(), row[LOGOUT], n * mu
            scored += n
            for dim, value in zip(DIMS, key[1:6]):
                if value:
                    s = sums.get((dim, value))
                    if s is None:
                        sums[(dim, value)] = [n, z, log_out, mu_sum]
                    else:
                        s[0] += n
                        s[1] += z
                        s[2] += log_out
                        s[3] += mu_sum
        if not scored or (bucket, scored) == self._early_scored:
            return
        self._early_scored = (bucket, scored)
        found, dims, warmup = [], KIND_DIMS["tokens_per_request"], self.cfg.warmup_buckets
        for scope, (n, zsum, log_sum, mu_sum) in sums.items():
            st = scopes.get(scope)
            if st is None or scope[0] not in dims or st.age < warmup or "tokens_per_request" in st.open:
                continue
            cusum, step, h = self._cusum_step(st, n, zsum, bucket)
            if cusum >= h and step > 0:
                found.append((st, bucket, self._size_verdict("strong", n, log_sum, mu_sum)))
        if found:
            self._open_early(sorted(found, key=lambda f: (f[0].dim, f[0].value)), "tokens_per_request", raw, updates)
