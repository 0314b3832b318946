"""`tokenmeter finance-watch` (warehouse/finance_watch.py) when nothing serves the warehouse."""

from __future__ import annotations

import asyncio
import logging

from tokenmeter.settings import load_settings
from warehouse.finance_watch import watch


def test_a_round_without_a_loader_says_none_runs_and_what_to_start(tmp_path, caplog):
    """walk30: with no loader running, every round logged "warehouse not served yet (the loader owns it)": no
    process owned it, and nothing said that finance-watch reads only through a running loader (or a ClickHouse
    server), so drift and completeness were never checked."""
    settings = load_settings(data_dir=tmp_path, clickhouse_url=None, kafka_bootstrap="127.0.0.1:1")

    async def one_round() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(watch(settings, stop, interval=60))
        while not any("skipping this round" in r.getMessage() for r in caplog.records):  # the round's log line
            await asyncio.sleep(0.01)
        stop.set()
        await task

    with caplog.at_level(logging.INFO, logger="tokenmeter.finance"):
        asyncio.run(asyncio.wait_for(one_round(), 30))
    [line] = [r.getMessage() for r in caplog.records if "skipping this round" in r.getMessage()]
    assert "owns it" not in line
    assert "no loader" in line and "tokenmeter load" in line and "TOKENMETER_CLICKHOUSE_URL" in line, line
