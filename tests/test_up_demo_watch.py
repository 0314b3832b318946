"""`up --demo` starts its finance watch (drift, completeness) with a first check that waits until the demo's live
traffic has caught up with the clock. Checked at once, as before, the demo's history (which ends at the top of the
hour) was the whole of the last hour: a fresh demo at 06:07 raised "Source demo is dropping: 3 events in the last
hour (usually 10)" before the live sender had sent the hour's first minutes."""

from __future__ import annotations

import asyncio
import logging
import time

from tokenmeter.settings import Settings


def test_the_demo_finance_watch_waits_before_its_first_check():
    from app.supervisor import DEMO_FIRST_FINANCE_CHECK_S, watch_services

    demo = dict((name, args) for name, _, args in watch_services(True))
    assert demo["finance"] == ["finance-watch", "--first-check-after", f"{DEMO_FIRST_FINANCE_CHECK_S:g}"]
    assert DEMO_FIRST_FINANCE_CHECK_S >= 60  # the sender's first tick, the worker and the loader
    plain = dict((name, args) for name, _, args in watch_services(False))
    assert plain["finance"] == ["finance-watch"]  # outside the demo: checked at once


def test_the_first_check_comes_after_the_wait_and_a_stop_ends_the_wait(tmp_path, caplog):
    from warehouse.finance_watch import watch

    settings = Settings(data_dir=tmp_path)  # nothing serves this warehouse: each round logs that it skips

    async def run(first: float, stop_after: float) -> list[float]:
        stop, started, rounds = asyncio.Event(), time.monotonic(), []

        class Rounds(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "skipping this round" in record.getMessage():
                    rounds.append(time.monotonic() - started)

        handler = Rounds()
        logging.getLogger("tokenmeter").addHandler(handler)
        try:
            asyncio.get_running_loop().call_later(stop_after, stop.set)
            await asyncio.wait_for(watch(settings, stop, interval=60, first_check_after=first), 10)
        finally:
            logging.getLogger("tokenmeter").removeHandler(handler)
        return rounds

    caplog.set_level(logging.INFO)
    import warehouse.endpoint  # noqa: F401 - imported by the first round: not timed here

    rounds = asyncio.run(run(first=1.0, stop_after=4.0))
    assert len(rounds) == 1 and rounds[0] >= 1.0
    started = time.monotonic()
    assert asyncio.run(run(first=30.0, stop_after=0.2)) == []  # stopped while waiting: no check, no hang
    assert time.monotonic() - started < 5
