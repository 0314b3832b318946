"""A priced batch's spend for one budget may be several `tokenmeter.budget-spend` messages (routing.MAX_ENTRIES_PER_
MESSAGE entries each, and one per pricing chunk). The owner skips a budget's entries whose usage offset is at or
below the highest it applied (owner.py): so if the broker refused the first message and stored the second (later
usage offsets), the retry's copy of the first looked applied and its spend was lost (trust35: 17.514 USD counted
as 0.014). Now a budget's next message of a batch is sent only once the one before it is acknowledged
(service.send_spend).

The broker itself refuses here: tansu validates records against a JSON schema while `<schemas>/<topic>.json`
exists (tests/kafka_support.schema_checked_broker); the test deletes it and the worker's retry is stored."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from kafka_support import schema_checked_broker
from reserve_support import call, ready, start_worker, stop, usage_event, wait_for, worker_env, zone_at_noon

from streams.budgets import parse_budget, write_budgets
from streams.budgets.routing import MAX_ENTRIES_PER_MESSAGE
from streams.topic_reader import read_compacted
from tokenmeter import topics
from tokenmeter.settings import free_port

pytestmark = pytest.mark.slow(seconds=40)
EVENT_COST = Decimal("0.0035")  # gpt-4o, 1,000 input and 100 output tokens
RECORD_EVENTS = 500  # what a collector puts in one usage record (tokenmeter.microbatch)
# a message holding the first MAX_ENTRIES_PER_MESSAGE entries is refused, the second one (3 entries) stored
REFUSE_LONG = {"type": "object", "properties": {"value": {"type": "object", "properties": {
    "entries": {"type": "array", "maxItems": MAX_ENTRIES_PER_MESSAGE - 1}}}}}
REFUSE_ALL = {"type": "object", "properties": {"value": {"not": {}}}}


@pytest.fixture(scope="module")
def schemas(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("schema-broker") / "schemas"


@pytest.fixture(scope="module")
def kafka_bootstrap(schemas):
    """This file's own broker, refusing what a schema file in `schemas` says while it exists."""
    with schema_checked_broker(schemas) as bootstrap:
        yield bootstrap


class _Worker:
    """One worker for the file (role all), started by the first test once its usage is on the topic."""

    def __init__(self, bootstrap: str, tmp: Path):
        self.port = free_port()
        # uncompressed: tansu's schema check cannot read the worker's snappy batches (it refuses every one of them)
        self.env = worker_env(bootstrap, tmp / "data", self.port, TOKENMETER_WORKER_BATCH_SECONDS="0.5",
                              TOKENMETER_WORKER_COMPRESSION="none")
        self.log = tmp / "worker.log"
        self.proc = None

    def start(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = start_worker(self.env, self.log)
        wait_for(lambda: call("GET", f"http://127.0.0.1:{self.port}/health")[0] != 0, what="the worker answering")
        return self.port

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


@pytest.fixture(scope="module")
def worker(kafka_bootstrap, tmp_path_factory):
    held = _Worker(kafka_bootstrap, tmp_path_factory.mktemp("spend-worker"))
    try:
        yield held
    finally:
        held.stop()


def _budget(team: str) -> tuple[str, object]:
    name = f"b-{uuid.uuid4().hex[:8]}"
    return name, parse_budget({"name": name, "scope": {"team": team}, "period": "month", "tz": zone_at_noon(),
                               "limit": "1000", "action": "alert"})


async def _produce(bootstrap: str, team: str, records: list[list[dict]]) -> tuple[int, int]:
    """Each list of events as one usage record, all under the team's key (one usage partition, consecutive
    offsets); returns (partition, offset) of the last."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4_000_000)
    await producer.start()
    try:
        for events in records:
            sent = await producer.send_and_wait(topics.USAGE, key=f"team:{team}".encode(), value=orjson.dumps(events))
        return sent.partition, sent.offset
    finally:
        await producer.stop()


def _events(team: str, *counts: int) -> list[list[dict]]:
    return [[usage_event(team, 1000, 100) for _ in range(count)] for count in counts]


def _failing(port: int) -> bool:
    return "meter_and_price" in call("GET", f"http://127.0.0.1:{port}/health")[1].get("failing", {})


def _spend_through(bootstrap: str, name: str, position: tuple[int, int]) -> Decimal | None:
    """The budget's spend in its stored state once the owner applied usage up to `position`; None before."""
    value = asyncio.run(read_compacted(bootstrap, topics.BUDGET_STATE)).get(name)
    state = orjson.loads(value) if value else {}
    partition, offset = position
    if state.get("applied", {}).get(str(partition), -1) < offset:
        return None
    return sum((Decimal(v) for v in state["ledger"]["spend"].get(name, {}).values()), Decimal(0))


def test_spend_message_the_broker_refused_is_not_lost_behind_a_later_one_it_stored(kafka_bootstrap, schemas, worker):
    team = f"team-{uuid.uuid4().hex[:6]}"
    name, budget = _budget(team)
    write_budgets(kafka_bootstrap, [budget])
    refusal = schemas / f"{topics.BUDGET_SPEND}.json"
    refusal.write_bytes(orjson.dumps(REFUSE_LONG))
    # one record of 5,000 events (one message's worth: always refused, in whatever batch it lands) then one of 3: two
    # spend messages of one batch when both records are in it (the worker is not running yet, so its first fetch
    # has both). Ten records of 500 were split across batches by a quiet gap in one clean-clone CI run: no message
    # reached 5,000 entries, nothing was refused, and the test timed out waiting for the refusal.
    asyncio.run(_produce(kafka_bootstrap, team, _events(team, MAX_ENTRIES_PER_MESSAGE, 3)))
    port = worker.start()
    wait_for(lambda: _failing(port), what="the worker failing to store the batch's spend (first message refused)")
    refusal.unlink()  # the retry is stored
    last = asyncio.run(_produce(kafka_bootstrap, team, _events(team, 1)))  # applied after all the batch's spend
    spend = wait_for(lambda: _spend_through(kafka_bootstrap, name, last), timeout=90, what="the owner at the last")
    assert spend == EVENT_COST * 5004


def test_batch_sent_again_after_all_its_spend_was_stored_counts_it_once(kafka_bootstrap, schemas, worker):
    team = f"team-{uuid.uuid4().hex[:6]}"
    name, budget = _budget(team)
    write_budgets(kafka_bootstrap, [budget])
    port = worker.start()
    wait_for(lambda: ready(port) and not _failing(port), what="the worker ready")
    wait_for(lambda: name in {b["name"] for b in call("GET", f"http://127.0.0.1:{port}/v1/budgets")[1]["budgets"]},
             what="the budget followed")
    skipped = call("GET", f"http://127.0.0.1:{port}/v1/stats")[1]["budgets"]["skipped_redelivered"]
    refusal = schemas / f"{topics.PRICED}.json"
    refusal.write_bytes(orjson.dumps(REFUSE_ALL))  # priced messages refused: the batch is retried, spend stored
    try:
        asyncio.run(_produce(kafka_bootstrap, team, _events(team, *[RECORD_EVENTS] * 10, 3)))
        wait_for(lambda: call("GET", f"http://127.0.0.1:{port}/v1/stats")[1]["budgets"]["skipped_redelivered"]
                 > skipped, timeout=90, what="a retry re-sending spend the owner had applied")
    finally:
        refusal.unlink()
    last = asyncio.run(_produce(kafka_bootstrap, team, _events(team, 1)))
    spend = wait_for(lambda: _spend_through(kafka_bootstrap, name, last), timeout=90, what="the owner at the last")
    assert spend == EVENT_COST * 5004
