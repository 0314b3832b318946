"""A mute decides whether an incident is paged, and the resolve follows the page (the real detector, a real broker).

On-call people mute from the page itself: the trigger's summary ends with the `tokenmeter anomalies mute …` command.
Until 2026-12-07 the resolve was silenced by whatever mute held when the anomaly closed, so
- a page muted after it went out never resolved: the PagerDuty incident stayed open (and escalating) for good, the
  Slack thread never said "back to normal";
- a page withheld by a mute that was lifted before the close sent a "Resolved" for something nobody was told about.
Now a resolve goes out exactly when its trigger did, across a restart of the detector (the withheld pages are in its
saved state)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from streams.anomalies.acks import publish_ack
from streams.anomalies.runner import Detector
from tests.streams.anomaly_traffic import event
from tests.streams.test_anomalies_runner import NOTIFY, Running, of, produce, wait_for
from tokenmeter.settings import load_settings
from tokenmeter.topics import ALERTS, ANOMALIES, PRICED

pytestmark = pytest.mark.slow(seconds=3)  # rough seconds: longest files first (tests/suite_order.py)


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    return own_broker


# History 4 hours old: further behind the wall clock than `live_lag_s` (2 h), so a quiet input cannot close its
# buckets by the wall clock; the anomalies stay open until the second phase's events move event time on.
START = (int(time.time()) - 4 * 3600) // 300 * 300


def unpriced(model: str) -> list[bytes]:
    return [orjson.dumps([event(b + i * 20, "k-" + model, team="mute-test", model=model, pricing="unpriced", n=i)
                          for i in range(10)]) for b in range(START, START + 3 * 300, 300)]


def later_priced(buckets: int = 12) -> list[bytes]:
    """An hour of priced calls after the unpriced ones (same substream): the buckets close, both anomalies resolve."""
    base = START + 3 * 300
    return [orjson.dumps([event(b + i * 20, "k-later", team="mute-test", n=i) for i in range(10)])
            for b in range(base, base + buckets * 300, 300)]


class History(Running):
    """The runner's Running, with partitions that never deliver not holding the watermark (`idle_after_s` 0): the
    history is on one partition, and a quiet input of history may not close buckets by the wall clock."""

    def __init__(self, settings, group: str):
        super().__init__(settings, group)
        self.detector = Detector(settings, group_id=group, snapshot_every_s=0.5, idle_after_s=0.0, trail_s=1.0)


def mute_record(action: str, model: str, anomaly_id: str = "anomaly-mute-test") -> dict:
    until = datetime.now(timezone.utc) + timedelta(hours=1)
    return {"anomaly_id": anomaly_id, "kind": "unpriced_usage", "scope_dim": "model", "scope_value": model,
            "action": action, "by": "oncall", "note": "known", "mute_until": until if action == "mute" else None}


@pytest.mark.timeout(150)
def test_a_resolve_goes_out_exactly_when_its_page_did(kafka_bootstrap, tmp_path):
    settings = load_settings(kafka_bootstrap=kafka_bootstrap, data_dir=tmp_path, anomaly_notify=NOTIFY)
    group = f"anomalies-mute-{uuid.uuid4().hex[:8]}"
    paged, silent = f"paged-{uuid.uuid4().hex[:6]}", f"silent-{uuid.uuid4().hex[:6]}"

    async def scenario():
        await publish_ack(kafka_bootstrap, mute_record("mute", silent))  # muted before it ever pages
        await produce(kafka_bootstrap, PRICED, unpriced(paged) + unpriced(silent))
        async with History(settings, group) as detector:
            await wait_for(kafka_bootstrap, ALERTS, lambda rs: any(of(paged)(a) and a["action"] == "trigger"
                                                                   for a in rs))
            await wait_for(kafka_bootstrap, ANOMALIES, lambda rs: any(of(silent)(r) and r["status"] == "open"
                                                                      for r in rs))
            assert detector.counters["alerts_muted"] >= 1  # the silent one's page
        # Between the page and the close, with the detector down: on-call mutes the paged scope (the command in the
        # page), and the other mute is lifted.
        await publish_ack(kafka_bootstrap, mute_record("mute", paged))
        await publish_ack(kafka_bootstrap, mute_record("unmute", silent))
        await produce(kafka_bootstrap, PRICED, later_priced())
        async with History(settings, group):
            closed = await wait_for(kafka_bootstrap, ANOMALIES, lambda rs: all(
                any(of(m)(r) and r["status"] == "closed" for r in rs) for m in (paged, silent)))
            assert {r["kind"] for r in closed if of(paged)(r) or of(silent)(r)} == {"unpriced_usage"}
            alerts = await wait_for(kafka_bootstrap, ALERTS, lambda rs: any(
                of(paged)(a) and a["action"] == "resolve" for a in rs), timeout=20)
        assert sorted(a["action"] for a in alerts if of(paged)(a)) == ["resolve", "trigger"]
        assert [a for a in alerts if of(silent)(a)] == []  # never paged: no "Resolved" for it either

    asyncio.run(scenario())


def test_an_unreadable_withheld_entry_costs_its_resolve_not_the_engine(tmp_path):
    """The saved state's withheld pages are read entry by entry: a wrong-typed one (a hand-edited or foreign file) is
    dropped alone; the engine and offsets are restored (a bad entry used to mean starting fresh)."""
    from streams.anomalies.engine import AnomalyEngine
    from streams.anomalies.runner import load_state, save_state

    path = tmp_path / "engine.json"
    save_state(path, AnomalyEngine(), {0: 42}, {"a:page": 1_796_000_000})
    data = orjson.loads(path.read_bytes())
    data["withheld"].update({"b": "soon", "c": None, "d": [1], "e": True, "f": 1_796_000_001})
    path.write_bytes(orjson.dumps(data))
    _, offsets, withheld = load_state(path)
    assert offsets == {0: 42} and withheld == {"a:page": 1_796_000_000, "f": 1_796_000_001}
    data["withheld"] = ["not", "a", "mapping"]
    path.write_bytes(orjson.dumps(data))
    assert load_state(path)[1:] == ({0: 42}, {})
