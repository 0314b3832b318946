"""hostile32: a canonical event too large for one Kafka message (a 700 KB team, which is also the partition key, so
the message holds it twice; or a long prompt sent for counting) was accepted by the parsers, then the producer
refused it (`MessageSizeTooLargeError`) and the sink called that "Kafka unavailable": `collect http` answered 503
"retry later" for ever (the good records of the request not written), and `collect file` / `collect kafka` retried
the batch for ever, every later line or record stuck behind it. Such an event is now a record error naming its
size and the limit (400 / a dead letter), the others of its record and batch written. (Since cap33 an attribution
value is at most 1,024 characters, refused as such: a 1.1 MB source stands in for the team here.)"""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest
from test_collectors_mode_support import (
    canonical_event,
    cli_env,
    count_ids,
    events_of,
    read_topic,
    start_cli,
    start_http,
    stop_process,
    wait_for,
)

from collectors import DialectError, parse_record
from tokenmeter.microbatch import MAX_MESSAGE_BYTES
from tokenmeter import topics

pytestmark = pytest.mark.slow(seconds=12)
TOO_LONG = "T" * 1_100_000  # a completion: no attribution value (cap33) nor name (trust34) can be this long


def _big(event_id: str) -> dict:
    return canonical_event(event_id, content={"completion": TOO_LONG})


def test_a_record_with_an_event_too_large_to_send_is_a_record_error_keeping_the_others():
    good, big = f"good-{uuid.uuid4().hex}", f"big-{uuid.uuid4().hex}"
    with pytest.raises(DialectError, match=r"event too large to send: 1100\d{3} bytes") as caught:
        parse_record(orjson.dumps([canonical_event(good), _big(big)]).decode(), "canonical", encoded=True)
    assert str(MAX_MESSAGE_BYTES) in caught.value.reason
    assert [e.event_id for e in caught.value.partial] == [good]


def test_a_long_prompt_sent_for_counting_is_a_record_error_too():
    event = canonical_event(f"prompt-{uuid.uuid4().hex}", content={"prompt": "hello " * 200_000})
    del event["usage"]
    with pytest.raises(DialectError, match="event too large to send"):
        parse_record(orjson.dumps(event), "canonical", encoded=True)


def test_collect_file_letters_the_oversized_line_and_reads_on(kafka_bootstrap, tmp_path):
    log_file = tmp_path / "gateway.log"
    big, good = f"big-{uuid.uuid4().hex}", f"good-{uuid.uuid4().hex}"
    log_file.write_bytes(orjson.dumps(_big(big)) + b"\n" + orjson.dumps(canonical_event(good)) + b"\n")
    proc = start_cli(["file", str(log_file), "--dialect", "canonical", "--checkpoint", str(tmp_path / "cp.json"),
                      "--exit-at-eof"], cli_env(kafka_bootstrap, tmp_path), tmp_path / "file.log")
    try:
        wait_for(lambda: proc.poll() is not None, 60, "collect file to reach the end and exit")
    finally:
        stop_process(proc)
    assert proc.returncode == 0, (tmp_path / "file.log").read_text()[-2000:]
    assert count_ids(kafka_bootstrap, topics.USAGE, {good}) == {good: 1}
    letters = read_topic(kafka_bootstrap, topics.DEADLETTER,
                         lambda values: any(str(log_file) == v.get("file") for v in values))
    mine = [v for v in letters if v.get("file") == str(log_file)]
    assert len(mine) == 1 and "event too large to send" in mine[0]["reason"] and mine[0]["line"] == 1


def test_collect_http_answers_400_naming_the_record_not_503(kafka_bootstrap, tmp_path):
    url, proc = start_http(tmp_path, kafka_bootstrap)
    try:
        big, good = f"big-{uuid.uuid4().hex}", f"good-{uuid.uuid4().hex}"
        response = httpx.post(url + "/v1/events", content=orjson.dumps([canonical_event(good), _big(big)]),
                              headers={"content-type": "application/json"}, timeout=60)
    finally:
        stop_process(proc)
    assert response.status_code == 400, response.text[:500]
    errors = response.json()["errors"]
    assert [e["index"] for e in errors] == [1] and "event too large to send" in errors[0]["reason"]
    assert TOO_LONG[:1000] not in response.text  # the answer names sizes, it does not echo the value
    assert good not in {e.get("event_id") for e in events_of(read_topic(kafka_bootstrap, topics.USAGE,
                                                                          lambda values: False, timeout=2))}
