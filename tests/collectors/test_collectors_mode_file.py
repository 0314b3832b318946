"""`tokenmeter collect file` as a subprocess: kill -9 + restart (exactly once), clean restart, rotation and truncation."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections import Counter

import orjson
import pytest
from test_collectors_mode_support import (
    canonical_event,
    cli_env,
    count_ids,
    events_of,
    read_to_end,
    read_topic,
    start_cli,
    stop_process,
    wait_for,
)

from tokenmeter import topics

pytestmark = pytest.mark.slow(seconds=15)  # rough seconds: longest files first (tests/suite_order.py)


def _append(path, events) -> list[str]:
    with open(path, "ab") as handle:
        for event in events:
            handle.write(orjson.dumps(event) + b"\n")
    return [e["event_id"] for e in events]


def _events(prefix: str, n: int) -> list[dict]:
    return [canonical_event(f"{prefix}-{uuid.uuid4().hex}", team=f"t{i % 7}") for i in range(n)]


def _checkpoint(path):
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def test_kill_9_and_restart_lose_nothing(kafka_bootstrap, tmp_path):
    log_file, checkpoint = tmp_path / "gateway.log", tmp_path / "cp.json"
    env = cli_env(kafka_bootstrap, tmp_path)
    args = ["file", str(log_file), "--dialect", "canonical", "--checkpoint", str(checkpoint), "--batch-lines", "50"]
    ids = _append(log_file, _events("kill", 2000))
    marker = f"broken-{uuid.uuid4().hex}"
    with open(log_file, "ab") as handle:
        handle.write(f'{{"event_id": "{marker}", "model": 5}}\n'.encode())  # line 2001: a bad line
    proc = start_cli(args, env, tmp_path / "run1.log")
    try:
        wait_for(lambda: (_checkpoint(checkpoint) or {}).get("offset", 0) > 0, 60, "first checkpoint")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    ids += _append(log_file, _events("after", 300))
    proc = start_cli([*args, "--exit-at-eof"], env, tmp_path / "run2.log")
    try:
        assert proc.wait(120) == 0, (tmp_path / "run2.log").read_text()
    finally:
        stop_process(proc)

    wanted = set(ids)
    counts = Counter(e["event_id"] for e in events_of(read_to_end(kafka_bootstrap, topics.USAGE))
                     if isinstance(e, dict) and e.get("event_id") in wanted)
    assert set(counts) == wanted, f"lost {len(wanted - set(counts))} events"
    # The batch in flight at the kill was recorded as pending and checked against the topic: none twice.
    assert set(counts.values()) == {1}, f"{sum(c - 1 for c in counts.values())} duplicates"
    assert _checkpoint(checkpoint)["offset"] == log_file.stat().st_size

    letters = read_topic(kafka_bootstrap, topics.DEADLETTER,
                         lambda vs: any(marker in str(v.get("payload")) for v in vs if isinstance(v, dict)))
    [letter] = {json.dumps(v, sort_keys=True): v for v in letters
                if isinstance(v, dict) and marker in str(v.get("payload"))}.values() or [None]
    assert letter["stage"] == "collect:file" and letter["line"] == 2001 and "line 2001" in letter["reason"]


def test_clean_stop_and_restart_is_exactly_once(kafka_bootstrap, tmp_path):
    log_file, checkpoint = tmp_path / "app.log", tmp_path / "cp.json"
    env = cli_env(kafka_bootstrap, tmp_path)
    args = ["file", str(log_file), "--dialect", "canonical", "--checkpoint", str(checkpoint), "--batch-lines", "20"]
    ids = _append(log_file, _events("clean", 400))
    proc = start_cli(args, env, tmp_path / "run1.log")
    try:
        wait_for(lambda: (_checkpoint(checkpoint) or {}).get("offset", 0) > 0, 60, "first checkpoint")
    finally:
        assert stop_process(proc) == 0  # SIGTERM: the batch in flight is finished and checkpointed
    ids += _append(log_file, _events("clean2", 50))
    proc = start_cli([*args, "--exit-at-eof"], env, tmp_path / "run2.log")
    try:
        assert proc.wait(60) == 0
    finally:
        stop_process(proc)
    counts = count_ids(kafka_bootstrap, topics.USAGE, set(ids), timeout=60)
    assert set(counts) == set(ids) and set(counts.values()) == {1}


def test_rotation_and_truncation(kafka_bootstrap, tmp_path):
    log_file, checkpoint = tmp_path / "kong.log", tmp_path / "cp.json"
    args = ["file", str(log_file), "--dialect", "canonical", "--checkpoint", str(checkpoint),
            "--poll-interval", "0.05"]
    first = _append(log_file, _events("rot-a", 5))
    proc = start_cli(args, cli_env(kafka_bootstrap, tmp_path), tmp_path / "run.log")
    try:
        wait_for(lambda: (_checkpoint(checkpoint) or {}).get("offset") == log_file.stat().st_size, 60, "first lines")
        os.rename(log_file, tmp_path / "kong.log.1")  # logrotate: rename, the writer keeps its open file...
        late = _append(tmp_path / "kong.log.1", _events("rot-late", 2))
        with open(tmp_path / "kong.log.1", "ab") as handle:  # ...and a last line without its newline
            last = canonical_event(f"rot-last-{uuid.uuid4().hex}")
            handle.write(orjson.dumps(last))
        second = _append(log_file, _events("rot-b", 3))  # ...then the new file appears
        new_inode = os.stat(log_file).st_ino
        wait_for(lambda: (_checkpoint(checkpoint) or {}).get("inode") == new_inode
                 and _checkpoint(checkpoint)["offset"] == log_file.stat().st_size, 60, "new file read")
        with open(log_file, "wb"):  # copytruncate
            pass
        third = _append(log_file, _events("rot-c", 1))
        ids = set(first + late + [last["event_id"]] + second + third)
        counts = count_ids(kafka_bootstrap, topics.USAGE, ids, timeout=60)
    finally:
        assert stop_process(proc) == 0
    assert set(counts) == ids and set(counts.values()) == {1}
