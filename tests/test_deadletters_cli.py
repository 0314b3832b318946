"""`tokenmeter deadletters` summary / show / replay on a real broker (a broker of this file's own: it writes hostile
records to tokenmeter.deadletter) and a real chDB warehouse, in process (CliRunner): no stack is started.

Hostile letters: a 1 MB reason, a record that is not JSON, a payload 400 lists deep, credentials redacted (shown
redacted, refused for replay), a reason with terminal escapes. Replay: only whole payloads; an event already
stored is not re-sent, and one re-sent anyway (a race with a gateway's own re-send) is stored once."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner

from app.cli import main
from app.deadletters_read import Filters, Newest, read_letters
from app.deadletters_replay import (REFUSED_CUT, REFUSED_EMPTY, REFUSED_HASH, REFUSED_NOT_JSON, REFUSED_REDACTED,
                                    plan, publish)
from streams.batch import RawRecord, process_batch
from streams.pricing import load_price_book
from streams.topic_reader import read_topic
from tokenmeter import deadletters, topics
from tokenmeter.settings import Settings
from warehouse_template import empty_warehouse_in

SECRET = "sk-proj-EndUserSecret0123456789"


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    """Hostile records on tokenmeter.deadletter stay on a broker of this file's own."""
    return own_broker


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """One warehouse for the file: its migrations cost ~1.7 s wall per fresh directory."""
    return empty_warehouse_in(tmp_path_factory.mktemp("deadletters"), tmp_path_factory)


def event(n: str) -> dict:
    return {"event_id": f"replay-{n}", "ts": datetime.now(timezone.utc).isoformat(), "source": "test",
            "provider": "openai", "model": "gpt-4o", "attribution": {"team": "replay"},
            "usage": {"input_tokens": 1000, "output_tokens": 10}}


def worker_letter(reason: str, payload, offset: int, stage: str = "worker") -> bytes:
    return deadletters.encode(deadletters.dead_letter(reason, payload, stage, topic=topics.USAGE, partition=0,
                                                      offset=offset))


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4_000_000)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"worker")
    finally:
        await producer.stop()


def produce(bootstrap: str, values: list[bytes], topic: str = topics.DEADLETTER) -> None:
    asyncio.run(_produce(bootstrap, topic, values))


def cli(bootstrap: str, data_dir, *args: str):
    env = {"TOKENMETER_KAFKA_BOOTSTRAP": bootstrap, "TOKENMETER_DATA_DIR": str(data_dir)}
    return CliRunner().invoke(main, ["deadletters", *args], env=env, catch_exceptions=False)


def store(data_dir, values: list[bytes]) -> int:
    """Price `values` (usage records) with the worker's engine and store them as the loader does; rows added."""
    from warehouse import open_warehouse

    result = process_batch([RawRecord(v, topics.USAGE, 0, i) for i, v in enumerate(values)], load_price_book())
    assert not result.deadletters, result.deadletters
    priced = [orjson.loads(e) for encoded in result.priced.values() for e in encoded]
    wh = open_warehouse(Settings(data_dir=data_dir), writer=True, serve=False)
    try:
        return wh.insert_priced(priced)
    finally:
        wh.close()


def stored_counts(data_dir, *event_ids: str) -> list[int]:
    from warehouse import open_warehouse

    wh = open_warehouse(Settings(data_dir=data_dir), serve=False)
    try:
        return [int(wh.query("SELECT count() AS n FROM priced_events FINAL WHERE event_id = {id:String}",
                             {"id": event_id})["n"][0]) for event_id in event_ids]
    finally:
        wh.close()


def test_show_keeps_hostile_letters_bounded_and_secrets_redacted(kafka_bootstrap, tmp_path):
    mark = f"show-{uuid.uuid4().hex[:8]}"
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    deep = b"[" * 400 + b"]" * 400
    produce(kafka_bootstrap, [
        worker_letter(f"{mark} invalid event", {**event("s1"), "headers": {"Authorization": f"Bearer {SECRET}"}}, 1),
        orjson.dumps({"reason": f"{mark} " + "y" * 1_000_000, "stage": "worker", "payload": None}),  # not our builder
        b'{"reason": "' + mark.encode() + b' deep", "stage": "worker", "payload": ' + deep + b"}",
        b"\x00not json " + SECRET.encode(),  # not a letter: only its position and size are shown
        orjson.dumps({"reason": f"{mark} \x1b[31mred\x1b[0m", "stage": "worker", "payload": "x",
                      "dialect": "d" * 1_000_000}),
    ])
    out = cli(kafka_bootstrap, tmp_path, "show", "--since", since.isoformat(), "--limit", "50", "--format", "json")
    assert out.exit_code == 0, out.output
    assert SECRET not in out.output
    assert len(out.output) < 100_000  # a 1 MB reason, a 1 MB dialect, a 400-deep payload: each cut
    shown = orjson.loads(out.output)
    ours = {e["reason"].split(" ")[1][:4]: e for e in shown["letters"] if e["reason"].startswith(mark)}
    assert "[REDACTED]" in orjson.dumps(ours["inva"]["payload"]).decode() and ours["inva"]["payload_redacted"] == 1
    assert (ours["inva"]["topic"], ours["inva"]["partition"], ours["inva"]["offset"]) == (topics.USAGE, 0, 1)
    assert len(ours["yyyy"]["reason"]) < 1_000 and "more characters" in ours["yyyy"]["reason"]
    assert isinstance(ours["deep"]["payload"], str) and len(ours["deep"]["payload"]) < 1_000
    unreadable = [e for e in shown["letters"] if e["reason"] == "not a dead letter: not JSON"]
    assert len(unreadable) == 1 and set(unreadable[0]) == {"letter_partition", "letter_offset", "written", "source",
                                                           "stage", "reason", "letter_bytes"}
    table = cli(kafka_bootstrap, tmp_path, "show", "--since", since.isoformat(), "--reason-contains", mark).output
    assert "\x1b" not in table and "\\x1b[31mred" in table and SECRET not in table
    assert "5 letter(s) match" not in table and "4 letter(s) match" in table  # the non-letter has no such reason


def test_show_after_the_last_letter_reads_nothing(kafka_bootstrap):
    """The embedded broker answers a time after a partition's last record with offset 0 (Kafka: none); taken as a
    start, every letter of the partition was read again."""
    produce(kafka_bootstrap, [worker_letter("before", event("b"), 1)])
    after = datetime.now(timezone.utc) + timedelta(seconds=1)
    newest = Newest(10)
    read = asyncio.run(read_letters(kafka_bootstrap, Filters(since=after), newest))
    assert (read, newest.matched) == (0, 0)


def test_replay_resends_only_whole_payloads_once_and_skips_stored_events(kafka_bootstrap, data_dir):
    mark = f"replay-{uuid.uuid4().hex[:8]}"
    since = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()
    fresh, priced_already = event(f"{mark}-fresh"), event(f"{mark}-stored")
    assert store(data_dir, [orjson.dumps(priced_already)]) == 1
    edited = orjson.loads(worker_letter(f"{mark} edited", event(f"{mark}-edited"), 9))
    edited["payload"]["usage"]["input_tokens"] = 1  # its hash no longer matches: not the record read
    produce(kafka_bootstrap, [
        worker_letter(f"{mark} cannot meter", fresh, 1),
        worker_letter(f"{mark} cannot meter", fresh, 1),  # the same record lettered again after a redelivery
        worker_letter(f"{mark} cannot meter", priced_already, 2),
        worker_letter(f"{mark} redacted", {**event(f"{mark}-r"), "headers": {"authorization": SECRET}}, 3),
        worker_letter(f"{mark} cut", {**event(f"{mark}-cut"), "tags": {"t": "z" * 20_000}}, 4),
        worker_letter(f"{mark} not JSON", b"{not json", 5),
        worker_letter(f"{mark} tombstone", None, 6),
        orjson.dumps(edited),
        orjson.dumps({"reason": f"{mark} deep", "stage": "worker", "payload": [[[[1]]]], "payload_bytes": 9,
                      "payload_sha256": "0" * 64, "payload_truncated": False, "payload_redacted": 0}),
        worker_letter(f"{mark} loader's", event(f"{mark}-load"), 7, stage="load"),  # another stage: not touched
        b"\xffnot a letter",
    ])
    args = ("replay", "--stage", "worker", "--since", since, "--reason-contains", mark, "--format", "json")
    out = cli(kafka_bootstrap, data_dir, *args, "--dry-run")
    assert out.exit_code == 0, out.output
    dry = orjson.loads(out.output)
    assert dry["would_replay"] == 1 and dry["already_ok"] == 1 and dry["repeated_letters"] == 1
    assert dry["refused"] == {REFUSED_REDACTED: 1, REFUSED_CUT: 1, REFUSED_NOT_JSON: 1, REFUSED_EMPTY: 1,
                              REFUSED_HASH: 2}
    assert replayed(kafka_bootstrap, mark) == []
    out = cli(kafka_bootstrap, data_dir, *args)
    assert "replayed 1 of 1 to tokenmeter.usage" in out.stderr
    done = orjson.loads(out.stdout)
    assert done["replayed"] == 1 and done["refused"] == dry["refused"]
    resent = replayed(kafka_bootstrap, mark)
    assert [orjson.loads(r.value)["event_id"] for r in resent] == [fresh["event_id"]]
    assert resent[0].value == orjson.dumps(fresh)  # the record as the worker first read it
    # The worker prices the replayed event; the stored one re-sent anyway (say a fixed gateway re-sent it while
    # the replay ran) is not counted twice.
    assert store(data_dir, [resent[0].value, orjson.dumps(priced_already)]) == 1
    assert stored_counts(data_dir, fresh["event_id"], priced_already["event_id"]) == [1, 1]


def replayed(bootstrap: str, mark: str) -> list:
    return [r for r in asyncio.run(read_topic(bootstrap, topics.USAGE))
            if dict(r.headers).get("tokenmeter-replayed-from") and mark.encode() in (r.value or b"")]


def test_replay_refuses_stages_whose_letters_are_not_usage(kafka_bootstrap):
    for stage, said in (("load", "tokenmeter.priced"), ("alerts", "not usage"),
                        ("nonsense", "replayable: worker, collect:http, collect:file, collect:kafka")):
        out = CliRunner().invoke(main, ["deadletters", "replay", "--stage", stage],
                                 env={"TOKENMETER_KAFKA_BOOTSTRAP": kafka_bootstrap})
        assert out.exit_code == 1 and said in out.output, out.output


def test_plan_counts_a_hash_mismatch_and_sends_nothing_to_a_stage_without_letters(kafka_bootstrap):
    chosen, outcome = plan([], lambda ids: set())
    assert chosen == [] and outcome.as_dict(False)["replayed"] == 0
    assert asyncio.run(publish(kafka_bootstrap, topics.USAGE, [])) == 0


def test_summary_groups_reasons_and_counts_a_redelivered_letter_once(data_dir):
    from warehouse import open_warehouse
    from warehouse.records_load import record_to_row

    now = datetime.now(timezone.utc)

    def letter(reason: str, offset: int, minutes: int, **extra) -> dict:
        return {"reason": reason, "stage": "worker", "topic": topics.USAGE, "partition": 1, "offset": offset,
                "payload_sha256": hashlib.sha256(str(offset).encode()).hexdigest(),
                "at": (now - timedelta(minutes=minutes)).isoformat(), **extra}

    letters = [letter("invalid event: usage.input_tokens: -5 is negative", 1, 50),
               letter("invalid event: usage.input_tokens: -5 is negative", 1, 20),  # redelivered: once
               letter("invalid event: usage.input_tokens: -17 is negative", 2, 10),
               letter("cannot meter: no price for model 'gpt-9' on 2026-12-01", 3, 5),
               letter("cannot meter: \x1b[2J no price for model 'x-1' on 2026-12-02", 4, 4),
               letter("line 3: not JSON", 5, 3, stage="collect:file", dialect="kong"),
               letter("too old", 6, 60 * 48)]
    wh = open_warehouse(Settings(data_dir=data_dir), writer=True, serve=False)
    try:
        wh.insert_records(topics.DEADLETTER, [record_to_row(topics.DEADLETTER, x)[1] for x in letters])
    finally:
        wh.close()
    out = cli("127.0.0.1:9", data_dir, "summary", "--format", "json")
    assert out.exit_code == 0, out.output
    groups = {(g["source"], g["kind"]): g for g in orjson.loads(out.output)["groups"]}
    assert {k: g["letters"] for k, g in groups.items()} == {
        ("worker", "invalid event: usage.input_tokens: -N is negative"): 2,
        ("worker", "cannot meter: no price for model '…' on N-N-N"): 1,
        ("worker", "cannot meter: \x1b[NJ no price for model '…' on N-N-N"): 1,
        ("kong", "line N: not JSON"): 1}
    invalid = groups[("worker", "invalid event: usage.input_tokens: -N is negative")]
    assert invalid["first_at"][:19] == letters[0]["at"][:19] and invalid["last_at"][:19] == letters[2]["at"][:19]
    only = orjson.loads(cli("127.0.0.1:9", data_dir, "summary", "--stage", "collect:file", "--format",
                            "json").output)["groups"]
    assert [g["source"] for g in only] == ["kong"]
    table = cli("127.0.0.1:9", data_dir, "summary", "--since", "7d").output
    assert "\x1b" not in table and "too old" in table and "6 letter(s) in 5 group(s)" in table


def collector_letter(stage: str, reason: str, payload, **where) -> bytes:
    return deadletters.encode(deadletters.dead_letter(reason, payload, stage, **where))


def test_a_collector_letter_is_collected_again_and_only_its_unstored_events_are_sent(kafka_bootstrap, data_dir):
    """A gateway's record the collector rejected then (say a collector bug, since fixed) is collected again with
    today's collectors; of a batch whose good entries were published at the time, only the others are sent."""
    mark = f"collect-{uuid.uuid4().hex[:8]}"
    since = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()
    new, published, stored_http = event(f"{mark}-new"), event(f"{mark}-published"), event(f"{mark}-http")
    assert store(data_dir, [orjson.dumps(published), orjson.dumps(stored_http)]) == 2
    line = orjson.dumps([published, event(f"{mark}-batch")])  # one line, two events: the first published then
    produce(kafka_bootstrap, [
        collector_letter("collect:file", f"{mark} line 1", orjson.dumps(new), file="/var/log/gw.log", line=1,
                         dialect="auto"),
        collector_letter("collect:file", f"{mark} line 2", line, file="/var/log/gw.log", line=2, dialect="canonical"),
        collector_letter("collect:file", f"{mark} line 3", b'{"no": "usage here", "n": 3}', file="/var/log/gw.log",
                         line=3, dialect="auto"),
        collector_letter("collect:http", f"{mark} record 0", stored_http, route="/v1/events", index=0,
                         dialect="canonical"),
    ])
    args = ("--since", since, "--reason-contains", mark, "--format", "json")
    http = orjson.loads(cli(kafka_bootstrap, data_dir, "replay", "--stage", "collect:http", "--dry-run", *args).stdout)
    assert (http["would_replay"], http["already_ok"], http["refused"]) == (0, 1, {})
    out = cli(kafka_bootstrap, data_dir, "replay", "--stage", "collect:file", *args)
    done = orjson.loads(out.stdout)
    assert (done["letters"], done["replayed"], done["already_ok"]) == (3, 2, 1), done
    [(reason, count)] = done["refused"].items()
    assert count == 1 and reason.startswith("the collectors still reject it: ")
    sent = sorted(orjson.loads(r.value)["event_id"] for r in replayed(kafka_bootstrap, mark))
    assert sent == sorted([new["event_id"], f"replay-{mark}-batch"])


def test_since_reads_spans_and_times_and_refuses_a_span_before_year_one():
    from click import BadParameter

    from app.deadletters_cli import since_option

    now = datetime(2026, 12, 7, 12, tzinfo=timezone.utc)
    assert since_option("90m", now=now) == now - timedelta(minutes=90)
    assert since_option("2026-12-01", now=now) == datetime(2026, 12, 1, tzinfo=timezone.utc)
    for wrong in ("999999w", "yesterday", "x" * 10_000):
        with pytest.raises(BadParameter) as caught:
            since_option(wrong, now=now)
        assert len(str(caught.value)) < 300


def test_replay_help_names_every_stage_it_replays():
    """walk29: `deadletters replay --help` said "--stage ... (replayable: worker)" while the collectors' letters
    (collect:http, collect:file, collect:kafka) are replayed too, as its own error for a wrong stage lists."""
    from app.deadletters_replay import REPLAY_TARGETS

    from app.deadletters_cli import deadletters as group

    (stage_option,) = [p for p in group.commands["replay"].params if p.name == "stage"]
    assert all(stage in stage_option.help for stage in REPLAY_TARGETS), stage_option.help
