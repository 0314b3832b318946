"""What a stopped worker says (ops34): SIGTERM under traffic gave ~40 lines of Faust's `Stopping...` and `Closing
event loop`, nothing of what this worker had done, so an operator reading the log of a stopped or restarted
replica could not tell what it had priced or dead-lettered. Now one line with its role and its counts."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid

import orjson
import pytest

from app.process import child_preexec
from tests.streams.test_worker_poison import ROOT, event, health, produce, priced_ids, wait_for
from tokenmeter.settings import free_port


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    """A broker of its own: the worker's counts are the premise (on the session broker it also priced what earlier
    files left on tokenmeter.usage: 22 messages for 2 in CI), and the file produces a non-JSON record."""
    return own_broker


def test_a_stopped_worker_says_what_it_did(kafka_bootstrap, tmp_path):
    team = f"stop-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENMETER_KAFKA_BOOTSTRAP=kafka_bootstrap,
               TOKENMETER_DATA_DIR=str(tmp_path / "data"), TOKENMETER_API_PORT=str(port), TOKENMETER_LOG_LEVEL="info",
               TOKENMETER_WORKER_BATCH_SECONDS="0.2", TOKENMETER_WORKER_ROLE="pricing")
    log_path = tmp_path / "worker.log"
    with open(log_path, "ab") as log:
        worker = subprocess.Popen([sys.executable, "-m", "app", "worker"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, preexec_fn=child_preexec)
    try:
        wait_for(lambda: health(port)[0] == 200, what="worker health")
        asyncio.run(produce(kafka_bootstrap, f"team:{team}".encode(),
                            [orjson.dumps([event(team, 1), event(team, 2)]), b"not json"]))
        wait_for(lambda: len(priced_ids(kafka_bootstrap, team)) == 2, what="the two events priced")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    said = [line for line in log_path.read_text().splitlines() if "worker stopped" in line]
    assert len(said) == 1, log_path.read_text()[-3000:]
    assert "(role pricing)" in said[0] and "2 message(s), 2 event(s) in, 2 priced (0 unpriced)" in said[0], said
    assert "1 dead letter(s)" in said[0], said
