"""Cross-source dedup through the loader from a real broker (issue 16): the copies of one call arrive as
separate records on `tokenmeter.priced`, one loader batch each, in the order that counted a call twice before
source preference (the SDK event with the response id, the OTel span with the request id, then the gateway log
linking both) and in another; the loader counts each call once, as its gateway log, and a redelivery of every
copy changes nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.warehouse.test_cross_source_dedup import COSTS, linked_call
from tokenmeter import topics
from warehouse import run_loader

pytestmark = pytest.mark.slow(seconds=10)  # a broker of its own and the loader
WAIT_SECONDS = 60


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    """The loader reads tokenmeter.priced from its beginning: only this file's records on it."""
    return own_broker


async def _produce(bootstrap: str, events: list[dict]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(topics.PRICED, orjson.dumps(event))
    finally:
        await producer.stop()


def _stored(wh, team: str) -> list[tuple[str, Decimal]]:
    return wh.query("SELECT source, cost_usd FROM priced_events WHERE team = {t:String} ORDER BY source",
                    {"t": team}).rows()


async def _until(check, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"loader did not get there: {what}"
        await asyncio.sleep(0.1)


def test_the_loader_counts_each_call_once_as_its_preferred_copy(warehouse_settings, wh, kafka_bootstrap):
    settings = warehouse_settings.model_copy(update={"kafka_bootstrap": kafka_bootstrap})
    ts = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=2)
    first, second = f"l{uuid.uuid4().hex[:6]}", f"m{uuid.uuid4().hex[:6]}"
    calls = {first: linked_call(first, ts), second: linked_call(second, ts)}
    orders = {first: ("openai", "otel", "litellm"), second: ("litellm", "openai", "otel")}

    async def scenario() -> None:
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run_loader(settings, stop=stop, ready=ready.set))
        try:
            await asyncio.wait_for(ready.wait(), WAIT_SECONDS)
            for step in range(3):  # one copy of each call at a time, each loaded before the next is sent
                await _produce(kafka_bootstrap, [calls[team][orders[team][step]] for team in calls])
                expected = {first: (1, 2, 1)[step], second: 1}
                sources = {first: {"openai", "otel"} if step == 1 else None, second: {"litellm"}}

                def loaded() -> bool:
                    recorded = wh.query("SELECT count() AS n FROM cross_source_duplicates FINAL"
                                        " WHERE duplicate_event_id LIKE {p:String}", {"p": f"%-{second}"})["n"][0]
                    ok = recorded == step  # the second call's later copies are recorded as duplicates
                    for team in calls:
                        rows = _stored(wh, team)
                        ok = ok and len(rows) == expected[team]
                        if sources[team]:
                            ok = ok and {r[0] for r in rows} == sources[team]
                    return ok and (step < 2 or _stored(wh, first) == [("litellm", Decimal(COSTS["litellm"]))])

                await _until(loaded, f"step {step}")
            # every copy of both calls delivered again, then a sentinel copy of a third call to know it is loaded
            await _produce(kafka_bootstrap, [copy for call in calls.values() for copy in call.values()])
            sentinel = f"s{uuid.uuid4().hex[:6]}"
            await _produce(kafka_bootstrap, [linked_call(sentinel, ts)["otel"]])
            await _until(lambda: len(_stored(wh, sentinel)) == 1, "sentinel")
        finally:
            stop.set()
            await asyncio.wait_for(task, WAIT_SECONDS)

    asyncio.run(scenario())
    for team in calls:
        assert _stored(wh, team) == [("litellm", Decimal(COSTS["litellm"]))]
        totals = wh.query("SELECT sum(events) AS n, sum(cost_usd) AS c FROM spend_daily WHERE team = {t:String}",
                          {"t": team}).row(0)
        assert (int(totals[0]), totals[1]) == (1, Decimal(COSTS["litellm"]))
        dups = wh.query("SELECT duplicate_source, winner_source FROM cross_source_duplicates FINAL"
                        " WHERE duplicate_event_id LIKE {p:String} ORDER BY duplicate_source", {"p": f"%-{team}"}).rows()
        assert dups == [("openai", "litellm"), ("otel", "litellm")]
