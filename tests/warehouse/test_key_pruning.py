"""trust35: the dedupe keys (`priced_event_ids`, EmbeddedRocksDB: no TTL) were pruned past the raw retention only
when a writer opened, so a loader running for weeks kept every key (and its in-process filter of them only grew).
A running loader now prunes them every PRUNE_EVERY_SECONDS and builds its filter again from the keys left."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from tokenmeter.settings import Settings
from warehouse import loader, open_warehouse, run_loader
from warehouse_template import empty_warehouse_in

pytestmark = pytest.mark.slow(seconds=10)


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    """A loader group of its own offsets: on a broker of this file's own."""
    return own_broker


@pytest.fixture
def settings(tmp_path_factory, kafka_bootstrap) -> Settings:
    data_dir = empty_warehouse_in(tmp_path_factory.mktemp("pruned-keys"), tmp_path_factory)
    return Settings(data_dir=data_dir, load_flush_seconds=0.2, raw_retention_days=1, kafka_bootstrap=kafka_bootstrap)


def _keys(wh) -> set[str]:
    return {r["event_id"] for r in wh.backend.query_arrow("SELECT event_id FROM priced_event_ids").to_pylist()}


def test_a_running_loader_prunes_the_keys_past_the_raw_retention(settings, monkeypatch):
    monkeypatch.setattr(loader, "PRUNE_EVERY_SECONDS", 0.5, raising=False)  # absent before trust35
    now = datetime.now(timezone.utc)
    aged = [f"aged-{uuid.uuid4().hex[:8]}-{i}" for i in range(3)]  # stored 3 days ago: past the 1 day kept
    fresh = [f"fresh-{uuid.uuid4().hex[:8]}-{i}" for i in range(2)]

    async def scenario() -> tuple[set[str], int]:
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run_loader(settings, stop=stop, ready=ready.set))
        try:
            await asyncio.wait_for(ready.wait(), 60)
            wh = await asyncio.to_thread(open_warehouse, settings, True)  # the loader's chDB (one path per process)
            try:
                keys = pa.table({"event_id": aged + fresh,
                                 "ts": pa.array([now - timedelta(days=3)] * 3 + [now] * 2, pa.timestamp("ms", "UTC"))})
                await asyncio.to_thread(wh.backend.insert_arrow, "priced_event_ids", keys)
                deadline = asyncio.get_running_loop().time() + 30
                while (left := await asyncio.to_thread(_keys, wh)) & set(aged):
                    assert asyncio.get_running_loop().time() < deadline, f"aged keys still stored: {sorted(left)}"
                    await asyncio.sleep(0.1)
                return left, wh.backend.stored_id_filter.count
            finally:
                wh.close()
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)

    left, filtered = asyncio.run(scenario())
    assert left == set(fresh)
    assert filtered == len(fresh)  # the filter was built again from the keys left, not the 5 it had seen
