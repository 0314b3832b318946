"""`collect file` of a path that is not there yet (walk21): without `--exit-at-eof` the tailer waits for the file
to appear, and says so once (a user who typed the path wrong saw nothing at all). Engine level: no broker is
reached, the sink connects lazily and nothing is sent."""

from __future__ import annotations

import asyncio
import logging

from collectors.file_tail import FileTailer
from collectors.sink import KafkaSink


def test_a_missing_file_is_waited_for_and_said_once(tmp_path, caplog):
    missing = tmp_path / "kong-ai.log"
    sink = KafkaSink("127.0.0.1:1", "collect:file")  # never connected: nothing to send
    tailer = FileTailer(missing, "kong", tmp_path / "cp.json", sink, poll_interval=0.01)

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(tailer.run(stop))
        for _ in range(500):  # until it has polled the missing path several times
            await asyncio.sleep(0.01)
            if task.done():
                break
        stop.set()
        await task

    with caplog.at_level(logging.INFO, logger="tokenmeter.collect.file"):
        asyncio.run(run())
    waiting = [r.getMessage() for r in caplog.records if "waiting for" in r.getMessage()]
    assert waiting == [f"{missing} does not exist (yet); waiting for it to appear (check the path; "
                       "--exit-at-eof reads only a file that is there)"], caplog.text
