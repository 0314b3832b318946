"""An anomaly alert's "Open dashboard" link opens the Anomalies page on that anomaly, however old it is.

anom32: the demo's inbox holds the history's alerts (2026-11-16 to 11-30, one anomaly of each kind); their links were
`/anomalies?id=<id>` only, so the page read the default range (the last 7 days), the anomaly was not among the rows,
and the page silently selected the newest anomaly of the week instead (`refresh_anomalies`: an id not in the list
falls back to the first row). On-call read another anomaly's band believing it was the one paged about. The same for
a week-old alert in Slack. The link now carries the anomaly's days (`start`, `end`), which the page reads."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest

from dash_seed import finance_warehouse
from dashboards.access import ScopedWarehouse
from dashboards.anomalies_data import list_anomalies
from dashboards.filters import Filters
from dashboards.users import Principal
from streams.anomalies.engine import AnomalyUpdate
from streams.anomalies.publish import alert_for
from tokenmeter import topics
from warehouse.records_load import record_to_row

pytestmark = pytest.mark.slow(seconds=4)  # rough seconds: longest files first (tests/suite_order.py)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _anomaly(anomaly_id: str, start: datetime, minutes: int, status: str) -> dict:
    return {"id": anomaly_id, "kind": "request_burst", "scope_dim": "api_key", "scope_value": "sk-glo-plat-kai",
            "severity": "error", "observed": "852", "expected": "20", "expected_low": "0", "expected_high": "620",
            "unit": "requests_per_hour", "start": _iso(start), "end": _iso(start + timedelta(minutes=minutes)),
            "status": status, "explanation": "api_key sk-glo-plat-kai is sending 852 requests/hour",
            "detected_at": _iso(start + timedelta(minutes=minutes + 1))}


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    with finance_warehouse(tmp_path_factory, "alert-link") as (_settings, wh):
        yield wh


def _page_rows_for(wh, url: str) -> tuple[str, list[str]]:
    """What the Anomalies page lists for the link: its `id`, and the rows of the range its `start`/`end` give (the
    page's callback reads the same Filters and list_anomalies)."""
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    filters = Filters.from_inputs(query.get("start"), query.get("end"), None)
    scoped = ScopedWarehouse(wh, Principal("fin", "finance"))
    return query["id"], [a["id"] for a in list_anomalies(scoped, filters.since, filters.until)]


def test_the_link_of_an_old_anomalys_alerts_lists_that_anomaly(warehouse):
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    old = _anomaly("anomaly-ten-days-ago", now - timedelta(days=10), 40, "closed")
    recent = _anomaly("anomaly-this-morning", now - timedelta(hours=3), 15, "closed")
    warehouse.insert_records(topics.ANOMALIES, [record_to_row(topics.ANOMALIES, r)[1] for r in (old, recent)])
    for update in (AnomalyUpdate("open", {**old, "status": "open", "end": _iso(now - timedelta(days=10, minutes=-5))}),
                   AnomalyUpdate("close", old)):
        url = alert_for(update, "http://127.0.0.1:8050/")["dashboard_url"]
        assert url.startswith("http://127.0.0.1:8050/anomalies?id=anomaly-ten-days-ago"), url
        anomaly_id, rows = _page_rows_for(warehouse, url)
        assert anomaly_id in rows, (url, rows)  # old code: only this morning's, so the page selected that one


def test_an_anomaly_over_midnight_is_in_its_links_range(warehouse):
    start = datetime.now(timezone.utc).replace(hour=23, minute=50, second=0, microsecond=0) - timedelta(days=9)
    over = _anomaly("anomaly-over-midnight", start, 30, "closed")
    warehouse.insert_records(topics.ANOMALIES, [record_to_row(topics.ANOMALIES, over)[1]])
    url = alert_for(AnomalyUpdate("close", over), "http://127.0.0.1:8050")["dashboard_url"]
    query = parse_qs(urlsplit(url).query)
    assert (query["start"], query["end"]) == ([start.date().isoformat()], [(start + timedelta(days=1)).date().isoformat()])
    anomaly_id, rows = _page_rows_for(warehouse, url)
    assert anomaly_id in rows
