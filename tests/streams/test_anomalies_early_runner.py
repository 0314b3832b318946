"""The live runner publishes an early error alert like any other (issue 17, seventh round): a warm key's storm whose
bucket never closes (no later events, and the wall clock cannot close history) is alerted from the running bucket,
on `tokenmeter.anomalies` and `tokenmeter.alerts`, once; a restart from the saved state does not alert it again."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from streams.anomalies.runner import save_state, state_path
from tests.streams.test_anomalies_early import STORM_CALLS
from tests.streams.test_anomalies_error_window import warm_key
from tests.streams.test_anomalies_runner import NOTIFY, Running, no_route_on_topic, produce, wait_for
from tokenmeter.settings import load_settings
from tokenmeter.topics import ALERTS, ANOMALIES, PRICED

pytestmark = pytest.mark.slow(seconds=10)


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    """Its own broker: the key's events must be the only ones the pre-warmed detector reads."""
    return own_broker


def is_key_storm(record: dict) -> bool:
    return record.get("kind") == "error_rate" and (record.get("scope_dim") == "api_key"
                                                    or (record.get("scope") or {}).get("api_key") == "k1")


@pytest.mark.timeout(120)
def test_an_early_error_alert_is_published_once_and_not_again_after_a_restart(kafka_bootstrap, tmp_path):
    settings = load_settings(kafka_bootstrap=kafka_bootstrap, data_dir=tmp_path, anomaly_notify=NOTIFY)
    state_path(settings).parent.mkdir(parents=True, exist_ok=True)
    save_state(state_path(settings), warm_key(), {})  # three days of the key's history, already learnt
    group = f"anomalies-early-{uuid.uuid4().hex[:8]}"

    async def scenario():
        await produce(kafka_bootstrap, PRICED, [orjson.dumps([call]) for call in STORM_CALLS])
        async with Running(settings, group) as detector:
            anomalies = await wait_for(kafka_bootstrap, ANOMALIES, lambda rs: any(is_key_storm(r) for r in rs))
            opened = [r for r in anomalies if is_key_storm(r)]
            assert len(opened) == 1 and opened[0]["status"] == "open", opened
            assert opened[0]["detected_at"] == "2026-09-10T18:16:00Z"
            alerts = await wait_for(kafka_bootstrap, ALERTS, lambda rs: any(is_key_storm(a) for a in rs))
            mine = [a for a in alerts if is_key_storm(a)]
            assert [a["action"] for a in mine] == ["trigger"] and mine[0]["dedup_key"] == opened[0]["id"]
            assert no_route_on_topic(mine[0])
            # Early: the bucket of the fifth failure (18:15) is still running.
            assert detector.engine.next_close <= 1_789_064_100 and detector.engine.stats["early_alerts"] >= 1
        async with Running(settings, group) as detector:
            assert detector.engine.stats["events"] >= len(STORM_CALLS)
            await asyncio.sleep(1.5)  # a few polls: nothing new for this group
            alerts = await wait_for(kafka_bootstrap, ALERTS, lambda rs: True, timeout=2)
            assert [a["action"] for a in alerts if is_key_storm(a)] == ["trigger"]
            assert "error_rate" in detector.engine.scopes[("api_key", "k1")].open

    asyncio.run(scenario())
