"""`tokenmeter collect kafka` killed with SIGKILL between producing and committing, then restarted in the same
group: every source record reaches the topics exactly once (Kong entries by event id, the bad record's dead
letter once). The process kills itself through the TOKENMETER_COLLECT_FAULT hook."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter

import orjson
import pytest
from kafka_support import create_topic, produce_values
from test_collectors_mode_support import cli_env, events_of, read_to_end, start_cli, stop_process

from tokenmeter import topics

pytestmark = pytest.mark.slow(seconds=10)  # rough seconds: longest files first (tests/suite_order.py)


def _produce_one_partition(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """One partition, so the bridge's batches (--batch-records) are predictable offset ranges."""

    async def run() -> None:
        await create_topic(bootstrap, topic, partitions=1)
        await produce_values(bootstrap, topic, values)

    asyncio.run(run())


def test_sigkill_before_commit_then_restart_is_exactly_once(kafka_bootstrap, tmp_path, payload):
    # Killed after the batch's events were acknowledged but before its dead letter was sent and before the
    # commit: the restart must skip the events and still send the letter. (One point only: each restart in
    # the same group waits ~20 s for the killed member to time out of the group.)
    _killed_then_restarted(kafka_bootstrap, tmp_path, payload, "after-publish:2")


def test_sigkill_while_the_next_batch_is_converted_ahead_is_exactly_once(kafka_bootstrap, tmp_path, payload):
    # The bridge converts batch N+1 while N is produced and committed (KafkaBridge._prepare): killed when N is
    # acknowledged, not committed, and N+1 already converted. N's pending record must still be the one on disk
    # (a version that recorded N+1's while converting it resent N: duplicates).
    _killed_then_restarted(kafka_bootstrap, tmp_path, payload, "after-ack-next-prepared")


def _killed_then_restarted(kafka_bootstrap, tmp_path, payload, fault: str) -> None:
    topic, group = f"kong-kill-{uuid.uuid4().hex[:8]}", f"bridge-{uuid.uuid4().hex}"
    ids, values = [], []
    marker = uuid.uuid4().hex
    for n in range(20):
        if n == 7:  # in the second batch of 5, the one the fault kills
            values.append(orjson.dumps({"ai": {"proxy": {"usage": {"prompt_tokens": -3}}}, "marker": marker}))
        batch = []
        for _ in range(3):
            entry = payload("kong_openai")
            entry["request"]["id"] = uuid.uuid4().hex
            ids.append(entry["request"]["id"])
            batch.append(entry)
        values.append(orjson.dumps(batch))
    _produce_one_partition(kafka_bootstrap, topic, values)

    args = ["kafka", "--topic", topic, "--dialect", "kong", "--group", group, "--from-beginning",
            "--batch-records", "5", "--exit-when-idle", "2", "--state-file", str(tmp_path / "state.json")]
    proc = start_cli(args, cli_env(kafka_bootstrap, tmp_path, TOKENMETER_COLLECT_FAULT=fault),
                     tmp_path / "run1.log")
    try:
        assert proc.wait(90) == -signal.SIGKILL, (tmp_path / "run1.log").read_text()
    finally:
        stop_process(proc)
    proc = start_cli(args, cli_env(kafka_bootstrap, tmp_path), tmp_path / "run2.log")
    try:
        assert proc.wait(120) == 0, (tmp_path / "run2.log").read_text()
    finally:
        stop_process(proc)

    wanted = set(ids)
    counts = Counter(e["event_id"] for e in events_of(read_to_end(kafka_bootstrap, topics.USAGE))
                     if isinstance(e, dict) and e.get("event_id") in wanted)
    assert set(counts) == wanted, f"lost {len(wanted - set(counts))} of {len(wanted)} events"
    assert set(counts.values()) == {1}, f"{sum(c - 1 for c in counts.values())} duplicates"
    letters = [v for v in read_to_end(kafka_bootstrap, topics.DEADLETTER)
               if isinstance(v, dict) and marker in str(v.get("payload"))]
    assert len(letters) == 1 and letters[0]["topic"] == topic and letters[0]["offset"] == 7
