"""An error storm the error rule cannot see by its own bar is unobservable, and evaluate says why (storm19): sparse
seed 21's storm on sk-sparse-31 failed 5 calls in all, in a row; the key failed 54 of its 1,319 calls before it
(4.1 %), where 5 failures in a row happen by chance 1.1e-7 of the time, above the rule's 1e-7 per scope and bucket:
the rule needs 6. It was counted as a miss. A storm with the failures its key's share asks for is still scored."""

from __future__ import annotations

from streams.anomalies.error_evidence import ErrorShare, failures_needed
from streams.anomalies.evaluate import format_table, score

STORM = 1_774_386_000  # 2026-03-24 21:00 UTC


def _event(t: str, key: str, status: str, source: str = "family") -> dict:
    return {"ts": t, "status": status, "source": source, "attribution": {"api_key": key}}


def storm(key: str, first_15m: int, start: int = STORM) -> dict:
    return {"kind": "error_rate", "start": start, "end": start + 1980, "allowed": ["error_rate"],
            "scopes": [["api_key", key], ["team", "t"]], "description": f"error storm on {key}", "affected": first_15m,
            "first_affected": start + 161, "affected_first_15m": first_15m, "affected_busiest_hour": first_15m}


def test_the_failures_a_storm_needs_follow_its_keys_usual_share():
    assert failures_needed(0.0179) == 5  # sparse seed 8's key: 0.0179^5 = 1.8e-9
    assert failures_needed(0.0398) == 5 and failures_needed(0.0399) == 6  # 0.0398^5 = 0.99e-7
    assert failures_needed(0.0409) == 6  # sk-sparse-31: 0.0409^5 = 1.14e-7
    assert failures_needed(0.0) == 5  # the rule's floor of 0.5 %


def test_the_share_is_the_keys_own_calls_before_its_first_storm():
    labels = [storm("k", 5)]
    shares = ErrorShare(labels)
    before = "2026-03-24T20:59:00Z"
    shares.add([_event(before, "k", "error")] * 2 + [_event(before, "k", "ok")] * 47
               + [_event(before, "k", "error", source="incident")] * 10  # a loop's calls are not the key's usual
               + [_event("2026-03-24T21:01:00Z", "k", "error")] * 5  # the storm's own
               + [_event(before, "other", "error")])
    ev = shares.evidence(labels[0])
    assert (ev["calls_before"], ev["errors_before"], ev["failures_needed"]) == (49, 2, 6), ev


def test_a_storm_under_its_keys_bar_is_unobservable_and_named():
    flaky = {**storm("sk-sparse-31", 5), "error_evidence": {"key": "sk-sparse-31", "calls_before": 1319,
             "errors_before": 54, "usual_share": 0.0409, "failures_needed": 6, "chance_of_min_run": 0.0409 ** 5}}
    steady = {**storm("sk-sparse-51", 6, STORM + 86400), "error_evidence": {
        "key": "sk-sparse-51", "calls_before": 2508, "errors_before": 115, "usual_share": 0.0459,
        "failures_needed": 6, "chance_of_min_run": 0.0459 ** 5}}
    figures = score([], [flaky, steady], {})["error_rate"]
    assert (figures["injected"], figures["unobservable"], figures["recall"]) == (1, 1, 0.0), figures
    table = format_table({"kinds": {"error_rate": figures}, "cold_start": {"anomalies_first_day": 0, "kinds": []},
                          "seed": 21, "days": 30, "events": 1, "injections": 2, "anomalies": 0,
                          "observe_events_per_s": 1, "targets_met": False})
    assert ("error_rate: UNOBSERVABLE by the rule's own bar: error storm on sk-sparse-31 at 2026-03-24 21:00:00: 5 "
            "failed calls in its first 15 minutes (5 in all); the key failed 54 of its 1319 calls before it (4.1%), "
            "where 5 failures in a row happen by chance 1.1e-07 of the time: the rule's bar (1e-07) needs 6") in table
