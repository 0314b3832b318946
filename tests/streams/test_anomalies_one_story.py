"""One incident, one story: within one detection every scope's explanation agrees on where the incident was alerted
(explain37, from walk36's live demo).

The demo's search loop (key sk-acm-sear-chen, feature agent-loop, team search, project search-prod): the feature,
quiet, opened first as "Mostly the traffic of api_key sk-acm-sear-chen, within that key's own usual range (not
alerted)"; the team and the project opened as "Part of the anomaly of feature agent-loop (alerted there)", although
the feature never paged; when the key paged (104x), the feature's record of that same detection still said the key
was within its range, and the team and the project kept pointing at the feature until they closed.

The traffic here: key k1 (team search's, busy) runs a loop on feature agent under the quiet team labs, so the feature,
the team and the project are anomalous a bucket before the key, whose usual range is wider; the key pages ten
minutes later."""

from __future__ import annotations

import pytest

from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, traffic
from tests.streams.test_anomalies_detectors import feed
from tests.streams.test_anomalies_quiet_key_then_pages import LOOP_AT, _agent, _loop

pytestmark = pytest.mark.slow(seconds=6)  # rough seconds: longest files first (tests/suite_order.py)
QUIET_KEY = "within that key's own usual range"


def _in_labs(batches: list[list[dict]]) -> list[list[dict]]:
    return [[{**e, "attribution": {**e["attribution"], "team": "labs", "project": "labs-app"}} for e in batch]
            for batch in batches]


def _together(*streams: list[list[dict]]) -> list[list[dict]]:
    """The 5-minute batches of several traffics, batch by batch."""
    return [sum((s[i] for s in streams if i < len(s)), []) for i in range(max(len(s) for s in streams))]


def _loop_under_a_quiet_team() -> list:
    engine = AnomalyEngine()
    labs = {"keys": ("k3",), "team": "labs", "peak": 1}  # a quiet team: its own key calls a few times an hour
    assert feed(engine, _together(traffic(MONDAY, LOOP_AT, modify=_agent), traffic(MONDAY, LOOP_AT, seed=4, **labs))) \
        == []
    end = LOOP_AT + 3 * 3600
    return feed(engine, _together(_in_labs(_loop()), traffic(LOOP_AT, end, seed=9, modify=_agent),
                                  traffic(LOOP_AT, end, seed=6, **labs)))


def _contradictions(updates: list) -> list[str]:
    """Records that name as alerted a scope whose anomaly of the kind is not alerted, or call a key within its usual
    range while that key's anomaly of the kind is alerted, as of their own detection (its records read together)."""
    alerted: set[tuple[str, str]] = set()  # ("api_key k1", kind) of the alerted anomalies open
    found, detections = [], {}
    for u in updates:
        detections.setdefault(u.record["detected_at"], []).append(u)
    for at in sorted(detections):
        for u in detections[at]:
            r = u.record
            if u.action == "open" and u.notify:
                alerted.add((f"{r['scope_dim']} {r['scope_value']}", r["kind"]))
        for u in detections[at]:
            r, text = u.record, u.record["explanation"]
            if "Part of the anomaly of " in text and text.endswith(" (alerted there)."):
                named = text.rsplit("Part of the anomaly of ", 1)[1].removesuffix(" (alerted there).")
                if (named, r["kind"]) not in alerted:
                    found.append(f"{at} {r['scope_dim']} {r['scope_value']}: names {named}, not alerted")
            if QUIET_KEY in text:
                named = text.rsplit("Mostly the traffic of ", 1)[1].split(",")[0]
                if (named, r["kind"]) in alerted:
                    found.append(f"{at} {r['scope_dim']} {r['scope_value']}: {named} within its range, alerted")
        for u in detections[at]:
            if u.action == "close" and u.notify:
                alerted.discard((f"{u.record['scope_dim']} {u.record['scope_value']}", u.record["kind"]))
    return found


def test_every_record_of_a_detection_names_as_alerted_only_what_was_alerted():
    updates = _loop_under_a_quiet_team()
    spend = [u for u in updates if u.record["kind"] == "spend_rate"]
    key_page = next(u for u in spend if u.action == "open" and u.record["scope_value"] == "k1")
    assert key_page.notify and [u.record["scope_value"] for u in spend if u.action == "open" and u.notify] == ["k1"]
    first = spend[0].record["detected_at"]
    assert first < key_page.record["detected_at"]  # the case: the feature, the team and the project before the key
    assert {(u.record["scope_dim"], u.record["scope_value"]) for u in spend if u.record["detected_at"] == first} \
        == {("feature", "agent"), ("team", "labs"), ("project", "labs-app")}
    assert _contradictions(updates) == []


def test_the_chain_ends_at_the_key_once_it_pages():
    """Before the key pages, the team and the project say what the feature says (the key's traffic, within its range,
    not alerted), not "alerted there" on the feature; from the key's page on (its own detection included) all three
    are part of the key's anomaly, alerted there."""
    updates = _loop_under_a_quiet_team()
    spend = [u for u in updates if u.record["kind"] == "spend_rate"]
    paged_at = next(u for u in spend if u.action == "open" and u.notify).record["detected_at"]
    for dim, value in (("feature", "agent"), ("team", "labs"), ("project", "labs-app")):
        mine = [u.record for u in spend if (u.record["scope_dim"], u.record["scope_value"]) == (dim, value)]
        before = [r for r in mine if r["detected_at"] < paged_at]
        since = [r for r in mine if r["detected_at"] >= paged_at]
        assert before and since, (dim, value)
        for r in before:
            assert r["explanation"].endswith(f"Mostly the traffic of api_key k1, {QUIET_KEY} (not alerted)."), \
                (dim, value, r["detected_at"], r["explanation"])
        for r in since:
            assert r["explanation"].endswith("Part of the anomaly of api_key k1 (alerted there)."), \
                (dim, value, r["detected_at"], r["explanation"])


def test_the_key_paging_is_read_by_the_records_of_its_own_detection():
    """anom32's case (the feature first, then its key pages; no other team): the feature's record of the key's own
    detection said the key was within its range beside the key's page; the next one said it was part of it."""
    engine = AnomalyEngine()
    assert feed(engine, traffic(MONDAY, LOOP_AT, modify=_agent)) == []
    after = traffic(LOOP_AT, LOOP_AT + 3 * 3600, seed=9, modify=_agent)
    updates = feed(engine, [loop + rest for loop, rest in zip(_loop() + [[]] * len(after), after)])
    assert _contradictions(updates) == []
