"""An anomaly's `detected_at` (an alert's `at`) is when the detector could know (oncall24): the event-time moment its
bucket closed, never after the newest event the detector had read when it said so. A bucket closes once the watermark
(the minute of the newest event) reaches its end plus the grace less a minute; it was stamped at its end plus the whole
grace, a minute later than the close (anom24 saw an alert stamped 13:32:00 in the inbox before 13:31:19)."""

from __future__ import annotations

from datetime import datetime, timezone

from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, event


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


def test_a_close_is_stamped_when_it_happened_not_a_minute_later():
    engine = AnomalyEngine()
    bucket = MONDAY + 12 * 3600
    engine.observe([event(bucket + 60, "k1", model="mystery-model", pricing="unpriced")], now=2e9)
    newest = bucket
    for second in range(bucket + 300, bucket + 600, 10):  # another key's calls carry the clock on, one by one
        updates = engine.observe([event(second, "k2")], now=2e9)
        if updates:
            newest = second
            break
    opened = [u.record for u in updates if u.action == "open"]
    assert [(r["kind"], r["scope_value"]) for r in opened] == [("unpriced_usage", "mystery-model")]
    # the close ran when the detector read the call at `newest`: stamped then, not in that call's future
    assert newest == bucket + 300 + engine.cfg.grace_s - 60
    assert opened[0]["detected_at"] == _iso(newest)
    assert engine.close_time(bucket) == newest

