"""`tokenmeter up` notices a child that is alive but not working (walk23): one stopped by SIGSTOP (state T) and one
whose health URL does not answer. Before, `status` said "running" for a worker SIGSTOPped for 60 s while its
API timed out and the usage backlog grew. Engine-level: a Supervisor with small stand-in children, no broker."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest
from process_support import wait_for

from tokenmeter.settings import free_port

# A child with a health URL: it answers GET / with 200 until it gets SIGUSR1, then holds every connection
# without answering (a deadlocked event loop: the process runs, the port accepts, nothing answers).
SERVER = """
import http.server, signal, threading, time
stuck = threading.Event()
signal.signal(signal.SIGUSR1, lambda *a: stuck.set())
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        while stuck.is_set():
            time.sleep(0.05)
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", {port}), H).serve_forever()
"""


@pytest.fixture
def supervisor(tmp_path):
    from app.supervisor import Supervisor
    from tokenmeter.settings import load_settings

    lines: list[str] = []
    sup = Supervisor(load_settings(data_dir=tmp_path / "data"), demo=False, echo=lines.append)
    sup.log_dir.mkdir(parents=True)
    sup.echoed = lines
    try:
        yield sup
    finally:
        sup.stop()  # stops the probe and every child, SIGCONT first for a stopped one


def _state(sup, name: str) -> dict:
    sup.tend()
    return next(c for c in sup.status()["children"] if c["name"] == name)


def test_a_sigstopped_child_is_reported_suspended_and_running_again_after_sigcont(supervisor):
    from app.supervisor import print_status

    child = supervisor.spawn("loader", [sys.executable, "-c", "import time; time.sleep(120)"])
    supervisor.start_liveness(every_s=0.2, hung_after_s=1.0)
    assert _state(supervisor, "loader")["state"] == "running"
    os.kill(child.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: _state(supervisor, "loader")["state"] == "suspended", 10, "suspended in status")
        supervisor.write_status(force=True)
        out: list[str] = []
        assert print_status(supervisor.settings, False, out.append) == 1  # not all running: exit 1
        assert any("loader" in line and "suspended" in line and "SIGSTOP" in line for line in out), out
        assert any("loader" in line and "suspended" in line for line in supervisor.echoed), supervisor.echoed
    finally:
        os.kill(child.proc.pid, signal.SIGCONT)
    wait_for(lambda: _state(supervisor, "loader")["state"] == "running", 10, "running again")
    assert any("loader" in line and "working again" in line for line in supervisor.echoed), supervisor.echoed
    assert child.restarts == 0  # noticed, not restarted


def test_a_child_whose_health_url_stops_answering_is_reported_hung(supervisor):
    from app.supervisor import _http_ok

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    child = supervisor.spawn("dashboard", [sys.executable, "-c", SERVER.format(port=port)], _http_ok(url),
                             uses_kafka=False, liveness=_http_ok(url))
    supervisor.wait_ready(child, 30)
    supervisor.start_liveness(every_s=0.2, hung_after_s=1.0)
    wait_for(lambda: child.answered_at is not None, 10, "a first answer (no answer yet is starting, not hung)")
    os.kill(child.proc.pid, signal.SIGUSR1)
    started = time.monotonic()
    status = wait_for(lambda: (s := _state(supervisor, "dashboard"))["state"] == "hung" and s, 15, "hung in status")
    assert time.monotonic() - started >= 1.0  # not before hung_after_s without an answer
    assert status["pid"] == child.proc.pid and status["unanswered_s"] >= 1.0
    assert any("dashboard" in line and "not answering" in line for line in supervisor.echoed), supervisor.echoed


def test_a_child_suspended_past_its_grace_is_killed_and_restarted(supervisor):
    """oncall24: a suspended (or hung) child was reported and left so: a SIGSTOPped worker did no work until someone
    killed it. Past TOKENMETER_CHILD_RESTART_UNRESPONSIVE_SECONDS it is killed and restarted, counted and logged
    (totals through a real worker: tests/test_supervisor.py)."""
    supervisor.settings = supervisor.settings.model_copy(update={"child_restart_unresponsive_seconds": 1.0})
    child = supervisor.spawn("loader", [sys.executable, "-c", "import time; time.sleep(120)"])
    supervisor.start_liveness(every_s=0.2, hung_after_s=1.0)
    first = child.proc.pid
    os.kill(first, signal.SIGSTOP)
    started = time.monotonic()
    wait_for(lambda: _state(supervisor, "loader")["pid"] not in (None, first), 20, "a new loader")
    assert time.monotonic() - started >= 1.0  # not before its grace
    status = _state(supervisor, "loader")
    assert status["restarts"] == 1 and status["unresponsive_restarts"] == 1, status
    assert status["last_exit_code"] == -signal.SIGKILL
    said = "\n".join(supervisor.echoed)
    assert "loader (pid %d) is suspended" % first in said and "restarted if it still is in 1 s" in said, said
    assert "has been suspended for" in said and "unresponsive restart #1" in said, said
    assert "loader restarted (pid" in said, said


# A service run as every tokenmeter role is (`run_service`) whose event loop blocks on SIGUSR1 (a deadlock or a
# blocking call: the process runs, serves nothing, touches nothing). SIGTERM is left deadly so the test stops it at once.
BLOCKING_SERVICE = """
import asyncio, signal, time
from tokenmeter.cli_support import run_service
async def service(stop):
    blocked = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, blocked.set)
    await blocked.wait()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    time.sleep(120)
run_service(service)
"""


def test_a_child_without_a_health_url_whose_loop_stops_turning_is_reported_hung(supervisor):
    """The loader, the detector, the alert dispatcher, the finance watch and the demo serve no health URL: one whose
    event loop blocked stayed "running" in `status` forever (the probe had nothing to ask). Every service run through
    `run_service` under `up` now touches a heartbeat file from its loop (tokenmeter/heartbeat.py)."""
    from app.supervisor import print_status

    supervisor.heartbeat_stale_s = 1.0
    child = supervisor.spawn("loader", [sys.executable, "-c", BLOCKING_SERVICE])
    supervisor.start_liveness(every_s=0.2, hung_after_s=1.0)
    wait_for(lambda: child.answered_at is not None, 30, "a first heartbeat")
    assert _state(supervisor, "loader")["state"] == "running"
    os.kill(child.proc.pid, signal.SIGUSR1)
    status = wait_for(lambda: (s := _state(supervisor, "loader"))["state"] == "hung" and s, 15, "hung in status")
    assert status["pid"] == child.proc.pid and status["health"].startswith("file://"), status
    said = "\n".join(supervisor.echoed)
    assert "loader (pid %d) has not touched its heartbeat file" % child.proc.pid in said, said
    assert "event loop stopped turning" in said, said
    supervisor.write_status(force=True)
    out: list[str] = []
    assert print_status(supervisor.settings, False, out.append) == 1
    assert any("loader" in line and "hung" in line and "event loop stopped turning" in line for line in out), out


def test_a_restarted_child_is_not_taken_for_alive_by_its_predecessors_heartbeat(supervisor):
    """The file of a killed child is removed before its successor starts: a fresh beat of the old process must not
    make a new one that never turned its loop look alive."""
    from app.child_liveness import FileHeartbeat

    beat = FileHeartbeat(supervisor.settings.data_dir.resolve() / "heartbeats" / "demo", stale_after_s=60)
    beat.path.parent.mkdir(parents=True)
    beat.path.touch()
    assert beat()
    supervisor.spawn("demo", [sys.executable, "-c", "import time; time.sleep(120)"], liveness=beat)
    assert not beat.path.exists() and not beat()


def test_a_heartbeat_file_that_cannot_be_removed_does_not_stop_a_restart(tmp_path):
    """`launch` removes a child's heartbeat file before starting it; on a read-only data directory that raised and
    the supervisor's restart of the child failed with it. Here the "file" is a non-empty directory: unlink fails."""
    from app.child_liveness import FileHeartbeat

    beat = FileHeartbeat(tmp_path / "loader")
    beat.path.mkdir()
    (beat.path / "x").touch()
    beat.reset()  # no error
    assert beat.path.exists()
