"""A key's learnt output sizes keep settling past its first 30 calls (demo17).

A key's mean log output was a running mean over its first `tpr_key_min_calls` (30) calls, then an EWMA at 0.01 per
call: from call 31 on each call moved it by 1 %, not by 1/31, 1/32, ... So whatever error its first 30 calls left
(a 30-call mean's standard error is sd / sqrt(30), ~0.15 at sd 0.8) was held for about 100 calls, days on a quiet
key, and each of its usual calls scored that much high in the tokens-per-request CUSUM. The demo month started on
Friday 2026-10-30 14:00 (`tokenmeter up --demo` at 2026-11-29T14:00): sk-acm-data-gus's first 30 calls averaged 5.59
in log output (its calls over the month: 5.94), the learnt mean was still 5.66 at its 51st call, its Monday calls
(o4-mini, gemini-2.5-pro, gpt-5: its usual models, drawn as every day) scored +1.3 on average and the CUSUM paged the
key at 12:50 (and its project at 11:20: 3 of the month's 4 tokens_per_request alerts, 1 injected). Now the running
mean carries on until it is as slow as the EWMA (100 calls), then the EWMA; the cap of 10 calls per bucket while
young and the clipping of a bucket's mean and spread are unchanged."""

from __future__ import annotations

from datetime import datetime, timezone

from streams.anomalies.engine import AnomalyEngine

START = datetime(2026, 11, 29, 14, 0, tzinfo=timezone.utc)  # the demo's `now`: its month begins on a Friday
KEY, UNTIL = "sk-acm-data-gus", "2026-11-02T14:00"  # the key's calls up to the Monday afternoon it was paged


def test_a_keys_usual_calls_are_not_a_template_change_after_its_first_30_calls():
    from warehouse.demo_history import history_events, priced_history

    mine = [e for e in history_events(START) if e["attribution"]["api_key"] == KEY and e["ts"] < UNTIL]
    engine = AnomalyEngine()
    pages = [u.record for u in engine.observe(priced_history(mine), now=START.timestamp())
             if u.action == "open" and u.notify and u.record["kind"] == "tokens_per_request"]
    pages += [u.record for u in engine.advance_to(datetime.fromisoformat(UNTIL + "+00:00").timestamp() + 600)
              if u.action == "open" and u.notify and u.record["kind"] == "tokens_per_request"]
    seen, mu, _ = engine.scopes[("api_key", KEY)].out_log
    assert seen > 50
    assert pages == [], [p["start"] + " " + p["explanation"] for p in pages]
    assert mu > 5.75, mu  # its calls' mean (old: 5.66, the first 30 calls' 5.59 hardly moved)
