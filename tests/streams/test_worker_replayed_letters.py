"""A record `tokenmeter deadletters replay` re-sent to tokenmeter.usage that the worker letters again: the new
letter says it is a replay (`replayed_from`: the letter it was re-sent from), and completeness counts the record's
rejection once. Before, the header the replay sets was not carried into the letter: the re-sent record is at a new
Kafka position, so `completeness` counted it as a second rejection of the source (walk29: worker 12 letters in the
last hour for 9 bad events)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from click.testing import CliRunner

from app.cli import main
from streams.batch import RawRecord, process_batch
from streams.pricing import load_price_book
from streams.topic_reader import read_topic
from tests.streams.test_worker_poison import event, health, produce, start_worker, stop, wait_for
from tokenmeter import topics
from tokenmeter.settings import Settings, free_port

pytestmark = pytest.mark.slow(seconds=30)  # rough seconds: longest files first (tests/suite_order.py)

MARK = b"tokenmeter.deadletter:3:41"


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    """Bad usage records and their letters stay on a broker of this file's own."""
    return own_broker


def _letters(bootstrap: str, team: str) -> list[tuple[int, int, dict]]:
    """(letter partition, letter offset, letter) of the worker's letters about `team`'s records."""
    out = []
    for record in asyncio.run(read_topic(bootstrap, topics.DEADLETTER)):
        letter = orjson.loads(record.value)
        if letter.get("stage") == "worker" and team in str(letter.get("payload")):
            out.append((record.partition, record.offset, letter))
    return out


def _dead_letters_last_hour(data_dir, letters: list[dict]) -> int:
    from warehouse import open_warehouse
    from warehouse.completeness import source_health
    from warehouse.records_load import record_to_row

    wh = open_warehouse(Settings(data_dir=data_dir), writer=True, serve=False)
    try:
        wh.insert_records(topics.DEADLETTER, [record_to_row(topics.DEADLETTER, item)[1] for item in letters])
        # the event's own source ("test"), not the stage, since words37 (tokenmeter/deadletters.py letter_source)
        return {h.source: h for h in source_health(wh)}["test"].deadletters_last_hour
    finally:
        wh.close()


def test_a_replayed_record_lettered_again_is_marked_and_counted_once(kafka_bootstrap, tmp_path):
    team = f"replayed-{uuid.uuid4().hex[:8]}"
    since = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()
    bad = orjson.dumps({**event(team, 1), "usage": {"input_tokens": -5, "output_tokens": 1}})
    [(partition, offset)] = asyncio.run(produce(kafka_bootstrap, f"team:{team}".encode(), [bad]))
    port = free_port()
    worker = start_worker(kafka_bootstrap, tmp_path, port)
    try:
        wait_for(lambda: health(port)[0] == 200, what="worker health")
        [(letter_partition, letter_offset, first)] = wait_for(lambda: _letters(kafka_bootstrap, team),
                                                              what="the first letter")
        assert (first["topic"], first["partition"], first["offset"]) == (topics.USAGE, partition, offset)
        assert "replayed_from" not in first
        env = {"TOKENMETER_KAFKA_BOOTSTRAP": kafka_bootstrap, "TOKENMETER_DATA_DIR": str(tmp_path / "cli")}
        out = CliRunner().invoke(main, ["deadletters", "replay", "--stage", "worker", "--since", since,
                                        "--format", "json"], env=env, catch_exceptions=False)
        assert orjson.loads(out.stdout)["replayed"] == 1, out.output
        letters = wait_for(lambda: _letters(kafka_bootstrap, team)[1:] and _letters(kafka_bootstrap, team),
                           what="the replayed record's letter")
    finally:
        stop(worker)
        print((tmp_path / "worker.log").read_text()[-3000:])
    again = letters[1][2]
    assert again["reason"] == first["reason"] and again["payload_sha256"] == first["payload_sha256"]
    assert again["offset"] != offset  # re-sent: a new position on tokenmeter.usage
    assert _dead_letters_last_hour(tmp_path / "wh", [first, again]) == 1
    assert again["replayed_from"] == f"{topics.DEADLETTER}:{letter_partition}:{letter_offset}"


@pytest.mark.parametrize("columnar", [False, True])
def test_every_letter_of_a_replayed_record_carries_its_mark(columnar):
    """Both pricing paths (the dict one and the Arrow workers' columnar one), every kind of letter."""
    from streams.columnar.pipeline import process_batch_columnar

    step = process_batch_columnar if columnar else process_batch
    values = [b"{not json", orjson.dumps([{**event("t", 1), "usage": {"input_tokens": -1, "output_tokens": 1}}]),
              None, orjson.dumps([event("t", 2)])]
    records = [RawRecord(value, topics.USAGE, 1, n, MARK.decode()) for n, value in enumerate(values)]
    result = step(records + [RawRecord(values[0], topics.USAGE, 1, 9)], load_price_book())
    marks = [letter.get("replayed_from") for letter in result.deadletters]
    assert marks == [MARK.decode()] * 3 + [None]  # a record not replayed: no such field, its letter as before
    assert result.priced_count == 1


def test_the_mark_is_read_from_a_kafka_records_headers():
    from streams.batch import replayed_from

    assert replayed_from([("other", b"x"), ("tokenmeter-replayed-from", MARK)]) == MARK.decode()
    assert replayed_from({"tokenmeter-replayed-from": MARK}) == MARK.decode()  # a driver giving a mapping
    assert replayed_from(None) == replayed_from([]) == replayed_from([("other", b"x")]) == ""
    assert replayed_from([("tokenmeter-replayed-from", b"\xff" * 5000)]) == "\ufffd" * 200  # bounded, text
