"""Finance alerts (drift, completeness) go through the same dispatcher as budget alerts: routed by
Settings.finance_notify when they carry no routes, delivered once per alert id and route to a real HTTP endpoint,
rendered with their own fields (Slack) and signed (webhook)."""

from __future__ import annotations

import asyncio
from datetime import date
from decimal import Decimal

from test_alerts_support import (SECRET, alert_settings, deliveries, endpoint, new_topics, produce,
                                 running_dispatcher, wait_until)

from streams.alerts.payloads import verify
from warehouse.drift import DriftRow, Thresholds, drift_alert


def _drift() -> dict:
    row = DriftRow(day=date(2026, 11, 20), provider="anthropic", model="claude-sonnet-4-5",
                   metered_cost=Decimal("80.5"), reported_cost=Decimal("100.25"), metered_tokens=9_000_000,
                   reported_tokens=9_000_000, unpriced_events=0, explained=Decimal("80.5"), cause="price_change")
    return drift_alert(row, Thresholds())


def test_drift_alert_reaches_the_finance_routes_once(kafka_bootstrap):
    async def run():
        names = await new_topics(kafka_bootstrap)
        async with endpoint() as ep:
            settings = alert_settings(kafka_bootstrap, finance_notify=[f"webhook={ep.url('/finance')}",
                                                                       f"slack={ep.url('/services/T/B/s3cret')}"])
            alert = _drift()
            assert alert["notify"] == []  # as finance-watch publishes it: the routes are the dispatcher's (leak21)
            await produce(kafka_bootstrap, names.alerts, [alert, alert])  # a re-run of the check: same id
            async with running_dispatcher(settings, names):
                await ep.wait_for(2)

                async def both_final() -> bool:
                    states = await deliveries(kafka_bootstrap, names.deliveries)
                    return len(states) == 2 and all(s["status"] == "delivered" for s in states.values())

                await wait_until(both_final, what="2 delivered states")
            assert len(ep.on("/finance")) == 1 and len(ep.on("/services/T/B/s3cret")) == 1
            hook = ep.on("/finance")[0]
            assert verify(SECRET, hook.headers["X-Tokenmeter-Timestamp"], hook.body,
                          hook.headers["X-Tokenmeter-Signature"])
            body = hook.json()
            assert body["source"] == "drift" and body["details"]["cause"] == "price_change"
            assert body["details"]["gap"] == "19.75" and body["details"]["coverage_pct"] == "80.30"
            slack = str(ep.on("/services/T/B/s3cret")[0].json())
            assert "Likely cause" in slack and "Coverage of the bill" in slack and "$19.75" in slack

    asyncio.run(run())
