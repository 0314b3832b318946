"""The mute state the Anomalies page and `/api/v1/anomalies` show is the detector's: a mute silences a kind on a
scope (docs/anomalies.md, "Acknowledge / mute"), whichever anomaly it was clicked on, until an unmute or its end.

walk31: on-call muted an unpriced_usage anomaly (`tokenmeter anomalies mute ...`, as the alert says), a colleague
then acknowledged it: the page said "acknowledged by ..." and the API `mute_until: null`, while
`tokenmeter anomalies mutes` listed the mute and the detector kept the kind silent for 24 hours. The acks table keeps
one row per anomaly id (the newest record), so the mute was gone from it; and a later anomaly of the same kind and
scope, silenced by that mute, showed no mute at all."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest

from dashboards import create_app
from dash_seed import finance_warehouse
from tokenmeter import topics
from warehouse.records_load import record_to_row

pytestmark = pytest.mark.slow(seconds=6)  # rough seconds: longest files first (tests/suite_order.py)

FIN = {"Authorization": "Basic " + base64.b64encode(b"fin:fin-pass").decode()}


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _anomaly(anomaly_id: str, start: datetime, model: str = "llm-x") -> dict:
    return {"id": anomaly_id, "kind": "unpriced_usage", "scope_dim": "model", "scope_value": model,
            "severity": "warning", "observed": "66000", "expected": "0", "expected_low": "0", "expected_high": "0",
            "unit": "unpriced_tokens_per_hour", "start": _iso(start), "end": _iso(start + timedelta(minutes=5)),
            "status": "open", "explanation": "llm-x cannot be priced",
            "detected_at": _iso(start + timedelta(minutes=6))}


def _ack(anomaly_id: str, action: str, by: str, at: datetime, hours: float = 24, model: str = "llm-x") -> dict:
    return {"anomaly_id": anomaly_id, "kind": "unpriced_usage", "scope_dim": "model", "scope_value": model,
            "action": action, "by": by, "note": "",
            "mute_until": _iso(at + timedelta(hours=hours)) if action == "mute" else None, "at": _iso(at)}


@pytest.fixture(scope="module")
def app_and_warehouse(tmp_path_factory):  # one app a process: Dash registers its pages once
    with finance_warehouse(tmp_path_factory, "mute-state") as (settings, warehouse):
        yield create_app(settings, warehouse=warehouse), warehouse


def _store(wh, topic, records):
    wh.insert_records(topic, [record_to_row(topic, record)[1] for record in records])


def _shown(app) -> dict[str, dict]:
    response = app.server.test_client().get("/api/v1/anomalies", headers=FIN)
    assert response.status_code == 200, response.data[:300]
    return {a["id"]: a for a in response.get_json()["anomalies"]}


def test_a_mute_stays_shown_after_an_ack_and_on_every_anomaly_of_its_kind_and_scope(app_and_warehouse):
    app, wh = app_and_warehouse
    now = datetime.now(timezone.utc).replace(microsecond=0)
    _store(wh, topics.ANOMALIES, [_anomaly("an-first", now - timedelta(hours=2)),
                                  _anomaly("an-later", now - timedelta(minutes=30))])
    _store(wh, topics.ANOMALY_ACKS, [_ack("an-first", "mute", "ann", now - timedelta(hours=1))])
    _store(wh, topics.ANOMALY_ACKS, [_ack("an-first", "ack", "bob", now - timedelta(minutes=50))])
    shown = _shown(app)
    until = (now + timedelta(hours=23)).strftime("%Y-%m-%dT%H:%M:%SZ")  # the API's form
    first, later = shown["an-first"], shown["an-later"]
    assert (first["ack_action"], first["ack_by"]) == ("ack", "bob")  # the anomaly's own newest record
    assert first["mute_until"] == until, first  # ... and the mute of its kind and scope, still in force
    assert later["mute_until"] == until and later["muted_by"] == "ann", later  # silenced by that mute too
    page = {a["id"]: a for a in _page_rows(wh)}
    first_state = _ack_state(page["an-first"])
    assert first_state.startswith("open; muted until") and "acknowledged by bob" in first_state
    assert _ack_state(page["an-later"]).startswith("open; muted until") and "by ann" in _ack_state(page["an-later"])

    # An unmute clicked on the later anomaly lifts the mute for both (the detector's rule: newest mute/unmute wins).
    _store(wh, topics.ANOMALY_ACKS, [_ack("an-later", "unmute", "cy", now - timedelta(minutes=10))])
    shown = _shown(app)
    assert shown["an-first"]["mute_until"] is None and shown["an-later"]["mute_until"] is None
    page = {a["id"]: a for a in _page_rows(wh)}
    assert _ack_state(page["an-first"]) == "open; acknowledged by bob" and "muted" not in _ack_state(page["an-later"])


def test_a_mute_that_ended_is_not_shown(app_and_warehouse):
    app, wh = app_and_warehouse
    now = datetime.now(timezone.utc).replace(microsecond=0)
    _store(wh, topics.ANOMALIES, [_anomaly("an-old", now - timedelta(hours=30), model="llm-y")])
    _store(wh, topics.ANOMALY_ACKS, [_ack("an-old", "mute", "ann", now - timedelta(hours=29), hours=1, model="llm-y")])
    assert _shown(app)["an-old"]["mute_until"] is None
    assert "muted" not in _ack_state({a["id"]: a for a in _page_rows(wh)}["an-old"])


def _ack_state(anomaly: dict) -> str:
    """The page module as the app loaded it (Dash names it `pages.anomalies`): importing `dashboards.pages.anomalies`
    registered its path a second time, and a later app in this process answered 500 (tests/dash_pages.py)."""
    import sys

    return sys.modules["pages.anomalies"]._ack_state(anomaly)


def _page_rows(wh) -> list[dict]:
    from dashboards.access import ScopedWarehouse
    from dashboards.anomalies_data import list_anomalies
    from dashboards.users import Principal

    now = datetime.now(timezone.utc)
    return list_anomalies(ScopedWarehouse(wh, Principal("fin", "finance")), now - timedelta(days=3),
                          now + timedelta(hours=1))


def test_the_rows_keep_the_anomalies_own_columns(app_and_warehouse):
    """The page's table reads `scope_dim`, `kind`, ... by name: the mutes' join must not rename them."""
    _, wh = app_and_warehouse
    rows = _page_rows(wh)
    assert rows and all({"id", "kind", "scope_dim", "scope_value", "severity", "unit"} <= set(row) for row in rows)


def test_an_acknowledgement_stays_shown_after_a_mute_and_an_unmute(app_and_warehouse):
    """anom32: on-call acknowledged the live spend anomaly (`anomalies ack`), then muted and later unmuted it: the acks
    table keeps one row per anomaly id (its newest record), so the page read "open" and the API `ack_action` "unmute":
    who is on it was gone, while nobody had taken it back. The newest acknowledgement per anomaly is kept on its own
    (migration 0024) and shown beside the mute state."""
    app, wh = app_and_warehouse
    now = datetime.now(timezone.utc).replace(microsecond=0)
    _store(wh, topics.ANOMALIES, [_anomaly("an-acked", now - timedelta(hours=1), model="llm-ack")])
    _store(wh, topics.ANOMALY_ACKS, [_ack("an-acked", "ack", "bob", now - timedelta(minutes=40), model="llm-ack")])
    _store(wh, topics.ANOMALY_ACKS, [_ack("an-acked", "mute", "ann", now - timedelta(minutes=30), model="llm-ack")])
    row = {a["id"]: a for a in _page_rows(wh)}["an-acked"]
    assert _ack_state(row).startswith("open; muted until") and "acknowledged by bob" in _ack_state(row), _ack_state(row)
    _store(wh, topics.ANOMALY_ACKS, [_ack("an-acked", "unmute", "ann", now - timedelta(minutes=20), model="llm-ack")])
    assert _ack_state({a["id"]: a for a in _page_rows(wh)}["an-acked"]) == "open; acknowledged by bob"
    shown = _shown(app)["an-acked"]
    assert (shown["acknowledged_by"], shown["ack_action"], shown["mute_until"]) == ("bob", "unmute", None), shown
    assert shown["acknowledged_at"].startswith((now - timedelta(minutes=40)).strftime("%Y-%m-%dT%H:%M")), shown


def test_the_status_stays_shown_beside_a_mute_and_an_acknowledgement(app_and_warehouse):
    """walk36: on-call muted and acknowledged the demo's request burst of 2026-11-30 (`anomalies mute`, `ack`, as its
    alert says) after it had resolved: the Status column read "muted until 2026-12-08 22:24 by root; acknowledged by
    root", so nobody could tell from the page whether the burst was still going on (an un-muted row reads "closed").
    The anomaly's own status comes first, the mute and the acknowledgement after it."""
    _, wh = app_and_warehouse
    now = datetime.now(timezone.utc).replace(microsecond=0)
    _store(wh, topics.ANOMALIES, [{**_anomaly("an-ended", now - timedelta(hours=3), model="llm-end"),
                                   "status": "closed"},
                                  _anomaly("an-going", now - timedelta(hours=2), model="llm-on")])
    _store(wh, topics.ANOMALY_ACKS, [_ack("an-ended", "mute", "ann", now - timedelta(minutes=30), model="llm-end"),
                                     _ack("an-ended", "ack", "bob", now - timedelta(minutes=20), model="llm-end"),
                                     _ack("an-going", "ack", "cy", now - timedelta(minutes=20), model="llm-on")])
    page = {a["id"]: a for a in _page_rows(wh)}
    ended, going = _ack_state(page["an-ended"]), _ack_state(page["an-going"])
    assert ended.startswith("closed; muted until") and ended.endswith("; acknowledged by bob"), ended
    assert going == "open; acknowledged by cy", going
