"""What a clean stop could not drain from the memory-only broker says why (app/broker_drain.py, soak35): the records
were not consumed in time (and by whom), the worker or the loader was not running, or the broker answered no
sample. Before, `stop_loss` held only the counts; the reason was in `up`'s log line alone, and the soak's result
had no field for it."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from app.broker_drain import drain_broker
from tokenmeter import topics
from tokenmeter.settings import fetch_wait, free_port


def _produce(bootstrap: str, n: int) -> None:
    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for i in range(n):
                await producer.send_and_wait(topics.USAGE, b"{}", partition=i % 4)
        finally:
            await producer.stop()

    asyncio.run(go())


def test_an_undrained_stop_says_who_did_not_consume_or_was_not_running(own_broker):
    _produce(own_broker, 6)  # no worker group consumes them here
    lines: list[str] = []
    timed_out = drain_broker(own_broker, 4, fetch_wait(), 0.6, lambda: True, lines.append)
    assert timed_out["waiting"][topics.USAGE] >= 6
    assert timed_out["why"] == "not consumed within 1 s (the worker still behind)", timed_out
    assert lines[-1].endswith(": not consumed within 1 s (the worker still behind). They are lost with this stop; "
                              "re-send that range from its source if you can."), lines
    down = drain_broker(own_broker, 4, fetch_wait(), 30, lambda: False, lines.append)
    assert down["why"].startswith("the worker or the loader is not running (gave up after "), down


def test_a_broker_that_answers_no_sample_is_said_so():
    nowhere = f"127.0.0.1:{free_port()}"
    loss = drain_broker(nowhere, 4, fetch_wait(), 0.2, lambda: True, lambda line: None)
    assert loss["waiting"] is None and loss["at_risk_records"] is None
    assert loss["why"].startswith("the broker answered no sample in "), loss
