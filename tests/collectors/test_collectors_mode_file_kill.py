"""`tokenmeter collect file` killed with SIGKILL at the awkward moments, then restarted: every line reaches the
topics exactly once (events by id, the bad line's dead letter once). The process kills itself at a named point
through the TOKENMETER_COLLECT_FAULT hook (collectors.delivery.fault_point), so each moment is hit for sure."""

from __future__ import annotations

import signal
import uuid
from collections import Counter

import orjson
import pytest
from test_collectors_mode_support import canonical_event, cli_env, events_of, read_to_end, start_cli, stop_process

from tokenmeter import topics

pytestmark = pytest.mark.slow(seconds=22)  # rough seconds: longest files first (tests/suite_order.py)

BATCH = 40


def _write_log(path, n_good: int, bad_at: int) -> tuple[list[str], str]:
    """n_good canonical events with one unparseable line inserted as line `bad_at`."""
    ids, marker = [], f"broken-{uuid.uuid4().hex}"
    with open(path, "wb") as handle:
        for i in range(n_good):
            if i + 1 == bad_at:
                handle.write(f'{{"event_id": "{marker}", "model": 5}}\n'.encode())
            event = canonical_event(f"kill-{uuid.uuid4().hex}", team=f"t{i % 7}")
            ids.append(event["event_id"])
            handle.write(orjson.dumps(event) + b"\n")
    return ids, marker


def _assert_exactly_once(bootstrap: str, ids: list[str], marker: str) -> None:
    wanted = set(ids)
    counts = Counter(e["event_id"] for e in events_of(read_to_end(bootstrap, topics.USAGE))
                     if isinstance(e, dict) and e.get("event_id") in wanted)
    assert set(counts) == wanted, f"lost {len(wanted - set(counts))} of {len(wanted)} events"
    duplicated = {i: c for i, c in counts.items() if c > 1}
    assert not duplicated, f"{len(duplicated)} events written more than once"
    letters = [v for v in read_to_end(bootstrap, topics.DEADLETTER)
               if isinstance(v, dict) and marker in str(v.get("payload"))]
    assert len(letters) == 1, f"{len(letters)} dead letters for the bad line"
    assert letters[0]["stage"] == "collect:file" and "line" in letters[0]["reason"]


@pytest.mark.parametrize("point", ["after-pending", "after-publish", "after-ack", "after-checkpoint"])
def test_sigkill_at_each_point_then_restart_is_exactly_once(kafka_bootstrap, tmp_path, point):
    log_file, checkpoint = tmp_path / "gateway.log", tmp_path / "cp.json"
    # The bad line sits in the third batch, the one the fault kills: after-publish leaves its events
    # written but its dead letter not, after-ack leaves both written but not checkpointed.
    ids, marker = _write_log(log_file, 6 * BATCH, bad_at=2 * BATCH + 5)
    args = ["file", str(log_file), "--dialect", "canonical", "--checkpoint", str(checkpoint),
            "--batch-lines", str(BATCH), "--exit-at-eof"]
    proc = start_cli(args, cli_env(kafka_bootstrap, tmp_path, TOKENMETER_COLLECT_FAULT=f"{point}:3"),
                     tmp_path / "run1.log")
    try:
        assert proc.wait(60) == -signal.SIGKILL, (tmp_path / "run1.log").read_text()
    finally:
        stop_process(proc)
    # The restart reads the remaining lines with a different batch size: the pending batch is still
    # re-read as the exact byte range the killed run was producing.
    restart = [a if a != str(BATCH) else str(BATCH * 3) for a in args]
    proc = start_cli(restart, cli_env(kafka_bootstrap, tmp_path), tmp_path / "run2.log")
    try:
        assert proc.wait(60) == 0, (tmp_path / "run2.log").read_text()
    finally:
        stop_process(proc)
    _assert_exactly_once(kafka_bootstrap, ids, marker)
    if point in ("after-publish", "after-ack"):
        assert "already written" in (tmp_path / "run2.log").read_text()


def test_killed_twice_during_recovery(kafka_bootstrap, tmp_path):
    """A restart that is itself killed right after re-publishing the rest of the pending batch."""
    log_file, checkpoint = tmp_path / "gateway.log", tmp_path / "cp.json"
    ids, marker = _write_log(log_file, 4 * BATCH, bad_at=BATCH + 1)
    args = ["file", str(log_file), "--dialect", "canonical", "--checkpoint", str(checkpoint),
            "--batch-lines", str(BATCH), "--exit-at-eof"]
    for n, fault in enumerate(["after-publish:2", "after-ack:1", None]):
        extra = {"TOKENMETER_COLLECT_FAULT": fault} if fault else {}
        proc = start_cli(args, cli_env(kafka_bootstrap, tmp_path, **extra), tmp_path / f"run{n}.log")
        try:
            assert proc.wait(60) == (-signal.SIGKILL if fault else 0), (tmp_path / f"run{n}.log").read_text()
        finally:
            stop_process(proc)
    _assert_exactly_once(kafka_bootstrap, ids, marker)
