"""Detector unit tests: each kind fires on its pattern, stays quiet on seasonality and noise, keeps one id while
an anomaly lasts, and resolves; cold start, bounded state and snapshot/restore."""

from __future__ import annotations

import orjson
import pytest

from streams.anomalies.detectors import Config
from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, event, traffic

pytestmark = pytest.mark.slow(seconds=15)  # rough seconds: longest files first (tests/suite_order.py)
DAY = 86400
HISTORY_END = MONDAY + 3 * DAY  # Thursday 00:00 UTC
_cache: dict[str, bytes] = {}


def feed(engine: AnomalyEngine, batches) -> list:
    updates = []
    for batch in batches:
        updates += engine.observe(batch, now=2e9)
    return updates


def warm_engine() -> AnomalyEngine:
    """Three days of seasonal traffic for team search (keys k1, k2), restored from a cached snapshot."""
    if "warm" not in _cache:
        engine = AnomalyEngine()
        updates = feed(engine, traffic(MONDAY, HISTORY_END))
        assert updates == [], [u.record["explanation"] for u in updates]
        _cache["warm"] = orjson.dumps(engine.snapshot())
    return AnomalyEngine.restore(orjson.loads(_cache["warm"]))


def run_with(modify, hours: float = 1.0, start_h: float = 13.0, after_h: float = 1.5, keys=("k1", "k2")):
    """Feed the day after the history, changing the events between start_h and start_h+hours with `modify`."""
    engine = warm_engine()
    t0, t1 = HISTORY_END + int(start_h * 3600), HISTORY_END + int((start_h + hours) * 3600)

    def change(e, t):
        return modify(e, t) if t0 <= t < t1 else e

    updates = feed(engine, traffic(HISTORY_END, t1 + int(after_h * 3600), seed=5, modify=change, keys=keys))
    updates += engine.advance_to(t1 + int(after_h * 3600) + 900)
    return engine, updates, t0


def opened(updates, kind, dim=None, value=None):
    return [u.record for u in updates if u.action == "open" and u.record["kind"] == kind
            and (dim is None or u.record["scope_dim"] == dim) and (value is None or u.record["scope_value"] == value)]


def lifecycle_ok(updates, record):
    """Same id from open to close, one open, one close, the close after the open."""
    mine = [u for u in updates if u.record["id"] == record["id"]]
    actions = [u.action for u in mine]
    assert actions[0] == "open" and actions[-1] == "close" and actions.count("open") == 1 == actions.count("close")
    assert mine[-1].record["status"] == "closed" and mine[-1].record["end"] > record["start"]


def test_quiet_on_seasonality_and_noise():
    engine = warm_engine()
    # a fourth weekday, then the weekend (lower traffic) and the next Monday: nothing to report
    updates = feed(engine, traffic(HISTORY_END, HISTORY_END + 5 * DAY, seed=9))
    assert [u.record["explanation"] for u in updates] == []


def test_spend_rate_runaway_loop_dedupes_and_resolves():
    engine = warm_engine()
    t0 = HISTORY_END + 3 * 3600  # 03:00 UTC: a runaway agent loop at night
    updates = feed(engine, traffic(HISTORY_END, t0, seed=5))
    for b in range(t0, t0 + 3600, 300):  # 120 calls per 5 minutes for an hour, with 3x the context
        updates += engine.observe([event(b + i * 2, "k1", model="gpt-4o", tin=3000, n=i) for i in range(120)], now=2e9)
    updates += feed(engine, traffic(t0 + 3600, t0 + 3 * 3600, seed=6))
    found = opened(updates, "spend_rate", "api_key", "k1")
    assert len(found) == 1
    record = found[0]
    assert record["start"] <= "2026-09-10T03:05:00Z" and record["unit"] == "usd_per_hour"
    assert record["detected_at"] <= "2026-09-10T03:15:00Z"  # within 15 minutes of onset
    assert float(record["observed"]) > 5 * float(record["expected"]) and record["severity"] in ("warning", "error", "critical")
    assert "api_key k1 is spending" in record["explanation"]
    lifecycle_ok(updates, record)
    assert opened(updates, "request_burst", "api_key", "k1")  # the same loop is also a burst from that key


def test_token_rate_bulk_job_on_cheap_model():
    def bulk(e, t):
        if e["attribution"]["api_key"] == "k2":
            e.update(model="gemini-2.0-flash", cost_usd="0.000100000000")
            e["usage"]["input_tokens"] *= 12
        return e

    _, updates, _ = run_with(bulk)
    found = opened(updates, "token_rate", "api_key", "k2")
    assert len(found) == 1 and found[0]["unit"] == "tokens_per_hour"
    assert not opened(updates, "spend_rate", "api_key", "k2")  # many tokens, little money
    lifecycle_ok(updates, found[0])


def test_tokens_per_request_template_doubles_output():
    def template(e, t):
        e["usage"]["output_tokens"] = int(e["usage"]["output_tokens"] * 2.4)
        return e

    _, updates, t0 = run_with(template, hours=2)
    found = opened(updates, "tokens_per_request", "team", "search")
    assert len(found) == 1 and "output tokens per request" in found[0]["explanation"]
    lifecycle_ok(updates, found[0])


def test_request_burst_warm_and_cold_key():
    engine = warm_engine()
    t0 = HISTORY_END + 13 * 3600
    updates = feed(engine, traffic(HISTORY_END, t0, seed=5))
    for b in range(t0, t0 + 1800, 300):  # k2 at ~3 req/s, and a never-seen key at the same rate
        updates += engine.observe([event(b + i % 300, "k2", tin=100, tout=20, n=i) for i in range(900)]
                                  + [event(b + i % 300, "leaked", tin=100, tout=20, n=i) for i in range(900)], now=2e9)
    updates += feed(engine, traffic(t0 + 1800, t0 + 3 * 3600, seed=6))
    assert len(opened(updates, "request_burst", "api_key", "k2")) == 1
    cold = opened(updates, "request_burst", "api_key", "leaked")
    assert len(cold) == 1 and "no history" in cold[0]["explanation"]
    # the leaked key's other kinds stay quiet: it is a cold scope
    assert {r["kind"] for r in opened(updates, None) if r["scope_value"] == "leaked"} <= {"request_burst"}


def test_new_model_once_and_severity():
    def opus(e, t):
        if e["attribution"]["api_key"] == "k1" and e["event_id"].endswith(("0", "1")):
            e["model"] = "claude-opus-4"
        return e

    _, updates, _ = run_with(opus, hours=3)
    found = opened(updates, "new_model", "api_key", "k1")
    assert len(found) == 1 and "claude-opus-4" in found[0]["explanation"]
    assert found[0]["severity"] in ("info", "warning")
    assert opened(updates, "new_model", "team", "search")
    lifecycle_ok(updates, found[0])


def test_new_model_cold_scope_is_silent():
    engine = AnomalyEngine()
    updates = feed(engine, traffic(MONDAY, MONDAY + DAY, models=(("gpt-4o-mini", 0.5), ("gpt-4o", 0.3), ("o1", 0.2))))
    assert not opened(updates, "new_model")


def test_error_rate_spike():
    def outage(e, t):
        if e["event_id"].endswith(("0", "2", "4", "6")):
            e.update(status="error", cost_usd="0.000000000000")
            e["usage"] = {"input_tokens": 0, "output_tokens": 0}
        return e

    _, updates, _ = run_with(outage)
    found = opened(updates, "error_rate", "team", "search")
    assert len(found) == 1 and found[0]["unit"] == "error_ratio" and float(found[0]["observed"]) > 0.2
    lifecycle_ok(updates, found[0])


def test_model_shift_to_pricier_model():
    def shift(e, t):
        if not e["event_id"].endswith("9"):
            pico = e["usage"]["input_tokens"] * 15_000_000 + e["usage"]["output_tokens"] * 60_000_000
            e.update(model="o1", cost_usd=f"{pico // 10**12}.{pico % 10**12:012d}")
        return e

    _, updates, _ = run_with(shift, hours=3)
    found = opened(updates, "model_shift", "team", "search")
    assert len(found) == 1 and "o1 now carries" in found[0]["explanation"]
    lifecycle_ok(updates, found[0])


def test_unpriced_usage_needs_no_history():
    engine = AnomalyEngine()
    t0 = MONDAY + 10 * 3600
    batches = [[event(b + i * 20, "k9", model="acme-llm", pricing="unpriced", n=i) for i in range(10)]
               for b in range(t0, t0 + 1800, 300)] + [[event(b, "k9", model="gpt-4o-mini")] for b in range(t0 + 1800, t0 + 7200, 300)]
    updates = feed(engine, batches)
    found = opened(updates, "unpriced_usage", "model", "acme-llm")
    assert len(found) == 1 and "cannot be priced" in found[0]["explanation"]
    assert "unknown model acme-llm" in found[0]["explanation"]
    lifecycle_ok(updates, found[0])


def test_cold_start_first_day_no_storm():
    engine = AnomalyEngine()
    spiky = traffic(MONDAY, MONDAY + DAY, peak=30, keys=("a", "b", "c"), seed=3)
    updates = feed(engine, spiky)
    assert updates == []


def test_bad_events_are_counted_not_raised():
    engine = AnomalyEngine()
    good = event(MONDAY, "k1")
    updates = engine.observe([{"ts": "yesterday"}, {"no": "ts"}, {**good, "cost_usd": "12x"}, good, None], now=2e9)
    assert updates == [] and engine.stats["bad_events"] == 4 and engine.stats["events"] == 5


def test_future_and_late_events():
    engine = AnomalyEngine()
    engine.observe([event(MONDAY + 3600, "k1")], now=MONDAY + 3600)
    engine.observe([event(MONDAY + 30 * 86400, "k1")], now=MONDAY + 3600)  # a client clock a month ahead
    assert engine.stats["future_events"] == 1 and engine.watermark < MONDAY + 2 * 3600
    engine.observe([event(MONDAY + 4000, "k1")], now=2e9)
    engine.observe([event(MONDAY, "k1")], now=2e9)  # its bucket already closed: counted in the oldest open one
    assert engine.stats["late_events"] == 1


def test_bounded_scopes():
    engine = AnomalyEngine(Config(max_scopes=20))
    batch = [event(MONDAY + i, f"key{i}", team=f"t{i}") for i in range(30)]
    engine.observe(batch, now=2e9)
    engine.advance_to(MONDAY + 3600)
    assert len(engine.scopes) <= 20 and engine.stats["scopes_evicted"] > 0


def test_snapshot_restore_round_trip():
    engine = warm_engine()
    t0 = HISTORY_END + 13 * 3600
    feed(engine, traffic(HISTORY_END, t0, seed=5))
    burst = [event(t0 + i % 300, "k2", tin=100, tout=20, n=i) for i in range(900)]
    first = engine.observe(burst, now=2e9)
    assert not first  # the bucket is still open
    text = orjson.dumps(engine.snapshot())
    assert b"Decimal" not in text
    copy = AnomalyEngine.restore(orjson.loads(text))
    assert orjson.dumps(copy.snapshot()) == text
    rest = traffic(t0 + 300, t0 + 3600, seed=8)
    a = feed(engine, rest)
    b = feed(copy, rest)
    assert [(u.action, u.record) for u in a] == [(u.action, u.record) for u in b]
    assert any(u.record["kind"] == "request_burst" for u in a)


def test_restore_rejects_unknown_version():
    with pytest.raises(ValueError):
        AnomalyEngine.restore({"version": 99})


def test_young_detector_does_not_flag_every_key_as_a_burst():
    """At the first start (a demo, a fresh deployment) every key is new and busy: none is a 'leaked key'."""
    engine = AnomalyEngine()
    batches = [[event(b + i % 300, f"key{k}", tin=100, tout=20, n=i) for k in range(4) for i in range(900)]
               for b in range(MONDAY, MONDAY + 3600, 300)]
    assert not opened(feed(engine, batches), "request_burst")


def test_one_incident_is_alerted_on_its_narrowest_scope():
    engine = warm_engine()
    t0 = HISTORY_END + 3 * 3600
    updates = feed(engine, traffic(HISTORY_END, t0, seed=5))
    for b in range(t0, t0 + 3600, 300):
        updates += engine.observe([event(b + i * 2, "k1", model="gpt-4o", tin=3000, n=i) for i in range(120)], now=2e9)
    updates += feed(engine, traffic(t0 + 3600, t0 + 3 * 3600, seed=6))
    spend = [u for u in updates if u.action == "open" and u.record["kind"] == "spend_rate"]
    assert len(spend) >= 3  # the key, its user, team, project, feature, model: all recorded
    alerted = [u.record["scope_dim"] for u in spend if u.notify]
    assert alerted == ["api_key"]
    quiet = [u for u in spend if not u.notify]
    assert all("Part of the anomaly of api_key k1" in u.record["explanation"] for u in quiet)
    closes = [u for u in updates if u.action == "close" and u.record["kind"] == "spend_rate"]
    assert [u.record["scope_dim"] for u in closes if u.notify] == ["api_key"]  # no resolve for the quiet ones


def test_out_of_contract_amounts_are_bad_events_and_the_state_still_saves():
    """hostile32: a priced event (any producer to tokenmeter.priced) with 10^19 input tokens or a 40-digit cost was
    folded into the detector's sums; its saved state then held an integer past 64 bits, orjson refused to write it
    (`TypeError: Integer exceeds 64-bit range` in save_state), and the detector exited, restarted from the same
    offsets and exited again: 23 restarts in 20 minutes on the demo, no anomaly detection. Counts and costs outside
    the contract (tokenmeter.events: at most 10^12 tokens, costs below 1,000,000 USD) are bad events, folded into
    nothing."""
    engine = AnomalyEngine()
    good = event(MONDAY, "k1")
    hostile = [{**good, "event_id": "t", "usage": {"input_tokens": 10**19, "output_tokens": 1}},
               {**good, "event_id": "c", "cost_usd": "1" * 40},
               {**good, "event_id": "n", "usage": {"input_tokens": -5, "output_tokens": True}},
               {**good, "event_id": "s", "usage": {"input_tokens": "12", "output_tokens": 1}}]
    engine.observe([*hostile, good], now=2e9)
    assert engine.stats["bad_events"] == 4 and engine.stats["events"] == 5, engine.stats
    orjson.dumps(engine.snapshot())  # what save_state writes
    only_good = AnomalyEngine()
    only_good.observe([good], now=2e9)
    state, expected = engine.snapshot(), only_good.snapshot()
    assert {k: v for k, v in state.items() if k != "stats"} == {k: v for k, v in expected.items() if k != "stats"}
