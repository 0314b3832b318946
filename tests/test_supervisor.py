"""`tokenmeter up` as a supervisor, with real processes: a SIGKILLed child (worker, loader, alert dispatcher) is
restarted with back-off while the embedded broker keeps running, so nothing acknowledged is lost and warehouse
totals stay exact; a SIGKILLed `up` takes every child with it at once (the broker port is free again)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import orjson
import psutil
import pytest
from aiokafka import AIOKafkaProducer

from app.soak import expected_by_team
from process_support import processes_of_data_dir, wait_for, warehouse_totals

from tokenmeter import topics
from tokenmeter.settings import free_port

pytestmark = pytest.mark.slow(seconds=42)  # rough seconds: longest files first (tests/suite_order.py)
ROOT = Path(__file__).resolve().parents[1]


# roles37: what a stack test's `up` leaves out when its premise never touches those roles (each costs its start and
# its life: the dashboard ~1.4 CPU-s, finance-watch ~1.2, the anomaly runner ~0.9, the dispatcher ~0.8 of a ~13.5
# CPU-s stop-drain `up`, docs/rounds/testing.md suite36). `up --demo` and the screenshots keep every role.
WITHOUT_ALL_OPTIONAL = ("--without", "dashboard,alerts,anomalies,finance")


@contextmanager
def running_up(tmp_path: Path, up_args: tuple[str, ...] = (), **env_overrides: str):
    """`tokenmeter up UP_ARGS` on free ports in tmp_path; yields (process, env, log path); always stops it."""
    broker_port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENMETER_DATA_DIR=str(tmp_path / "data"),
               TOKENMETER_EMBEDDED_BROKER_PORT=str(broker_port), TOKENMETER_API_PORT=str(free_port()),
               TOKENMETER_DASH_PORT=str(free_port()), TOKENMETER_LOG_LEVEL="warning",
               TOKENMETER_LOAD_FLUSH_SECONDS="0.3", TOKENMETER_CHILD_RESTART_UNRESPONSIVE_SECONDS="3")
    env.update(env_overrides)
    log_path = tmp_path / "up.log"
    log = open(log_path, "w")
    up = subprocess.Popen([sys.executable, "-m", "app", "up", *up_args], env=env, stdout=log,
                          stderr=subprocess.STDOUT, cwd=tmp_path)
    family: list[psutil.Process] = []
    try:
        def started() -> bool:
            assert up.poll() is None, log_path.read_text()
            return "Press Ctrl-C" in log_path.read_text()

        wait_for(started, 120, "`up` to be ready", interval=0.5)
        family = psutil.Process(up.pid).children(recursive=True)
        yield up, env, log_path
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(40)
            except subprocess.TimeoutExpired:
                up.kill()
        log.close()
        for proc in family + processes_of_data_dir(env["TOKENMETER_DATA_DIR"]):  # (outliving a dead `up`)
            try:
                proc.kill()
            except psutil.Error:
                pass


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """ONE `tokenmeter up` for the file's stack tests (each start costs ~10 s, ~30 s on a loaded machine), in this
    order: the child-kill test (which needs a broker never restarted), the broker-crash test, then the test that
    SIGKILLs `up` itself. `sent` holds every event acknowledged so far: totals are checked against all of them.
    Without the dashboard, the anomaly runner and finance-watch: no test here reads them (the alert dispatcher stays,
    the first test kills and counts it); each is a child like the others for the SIGKILL of `up`."""
    from types import SimpleNamespace

    tmp_path = tmp_path_factory.mktemp("up")
    with socket.socket() as dash_port_taken:  # by another program: a dashboard started or awaited fails `up`
        dash_port_taken.bind(("127.0.0.1", 0))
        dash_port_taken.listen()
        with running_up(tmp_path, ("--without", "dashboard,anomalies,finance"),
                        TOKENMETER_DASH_PORT=str(dash_port_taken.getsockname()[1])) as (up, env, log_path):
            yield SimpleNamespace(up=up, env=env, log_path=log_path, data=tmp_path / "data", sent=[])


def child(up: subprocess.Popen, role: str) -> psutil.Process | None:
    """The live child of `up` whose command line ends with `role` (worker, load, dispatch, dash, broker)."""
    for proc in psutil.Process(up.pid).children():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.cmdline()[-1:] == [role]:
                return proc
        except psutil.Error:
            continue
    return None


def make_events(n: int, tag: str) -> list[dict]:
    now = datetime.now(timezone.utc).isoformat()
    models = [("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5"), ("gemini", "gemini-2.5-flash")]
    return [{"event_id": f"{tag}-{i}-{uuid.uuid4().hex[:8]}", "ts": now, "source": "test", "provider": models[i % 3][0],
             "model": models[i % 3][1], "attribution": {"org": "acme", "team": ["search", "support"][i % 2]},
             "usage": {"input_tokens": 1000 + i, "cached_input_tokens": i % 300, "output_tokens": 100 + i}}
            for i in range(n)]


async def produce(bootstrap: str, events: list[dict]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topics.USAGE, orjson.dumps([e]), key=e["attribution"]["team"].encode())
                   for e in events]
        await asyncio.gather(*futures)  # every event acknowledged by the broker
    finally:
        await producer.stop()


def served_by_team(env: dict) -> dict[str, tuple[int, Decimal]] | None:
    """What the running loader serves, asked from this process: cheap enough to poll (tests/process_support.py)."""
    return warehouse_totals(Path(env["TOKENMETER_DATA_DIR"]))


def report_by_team(env: dict) -> dict[str, tuple[int, Decimal]]:
    out = subprocess.run([sys.executable, "-m", "app", "report", "--format", "json", "--group-by", "team"],
                         env=env, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        return {"error": out.stderr[-500:]}  # type: ignore[dict-item]
    return {r["team"]: (r["events"], Decimal(r["cost_usd"])) for r in json.loads(out.stdout)}


def test_the_roles_left_out_are_not_started_nor_awaited_and_up_and_status_say_so(stack):
    """roles37: `up --without` leaves optional roles out; the fixture's `up` runs without the dashboard (whose port
    another program holds), the anomaly runner and finance-watch. Nobody may take them for roles that died."""
    children = {p.cmdline()[-1] for p in psutil.Process(stack.up.pid).children()}
    assert children == {"broker", "worker", "load", "dispatch"}, children
    text = stack.log_path.read_text()
    assert "left out (TOKENMETER_UP_WITHOUT or --without): dashboard, anomalies, finance" in text, text
    assert "tokenmeter is running (no dashboard: left out)." in text and "Dashboard:" not in text, text
    assert "dashboard login" not in text and "[4/" not in text and "[3/3] loader ready" in text, text
    assert "  alerts started" in text and "  not started (left out): dashboard, anomalies, finance" in text, text
    status = json.loads((stack.data / "supervisor.json").read_text())
    assert status["left_out"] == ["dashboard", "anomalies", "finance"]
    assert [c["name"] for c in status["children"]] == ["broker", "worker", "loader", "alerts"]
    shown = subprocess.run([sys.executable, "-m", "app", "status"], env=stack.env, capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0, shown.stdout + shown.stderr  # every child it started runs: nothing died
    assert "left out (not started: TOKENMETER_UP_WITHOUT or --without): dashboard, anomalies, finance" \
        in shown.stdout, shown.stdout


def test_sigkilled_children_are_restarted_and_totals_stay_exact(stack):
    up, env, log_path, sent = stack.up, stack.env, stack.log_path, stack.sent
    bootstrap = f"127.0.0.1:{env['TOKENMETER_EMBEDDED_BROKER_PORT']}"
    broker = child(up, "broker")
    for round_, role in enumerate(("worker", "load", "dispatch")):
        batch = make_events(150, f"{role}{round_}")
        asyncio.run(produce(bootstrap, batch))
        sent += batch
        victim = wait_for(lambda: child(up, role), 30, f"a running {role}")
        victim.kill()  # SIGKILL, mid-traffic
        wait_for(lambda: up.poll() is None and (c := child(up, role)) is not None and c.pid != victim.pid
                 or up.poll() is not None and pytest.fail(f"`up` exited:\n{log_path.read_text()[-3000:]}"),
                 60, f"{role} restarted by `up`")
        assert up.poll() is None, log_path.read_text()
    asyncio.run(produce(bootstrap, more := make_events(100, "after")))
    sent += more
    expected = expected_by_team(sent)
    try:
        wait_for(lambda: served_by_team(env) == expected, 180, "exact totals after the restarts", interval=0.5)
        assert report_by_team(env) == expected  # and `tokenmeter report` says so
    except AssertionError:
        print(log_path.read_text()[-6000:])
        raise
    assert child(up, "broker").pid == broker.pid  # the broker (and its data) were never restarted
    text = log_path.read_text()
    assert "worker exited" in text and "restarting" in text
    status = json.loads((stack.data / "supervisor.json").read_text())
    restarts = {c["name"]: c["restarts"] for c in status["children"]}
    assert restarts["worker"] >= 1 and restarts["loader"] >= 1 and restarts["alerts"] >= 1
    assert restarts["broker"] == 0


def test_a_sigstopped_worker_is_replaced_and_totals_stay_exact(stack):
    """oncall24: a suspended child was reported, not restarted (a SIGSTOPped worker priced nothing until someone
    killed it). Past its grace (3 s here, 60 s by default) `up` kills and restarts it; the usage produced while it was
    stopped is priced once by its successor (at-least-once, the warehouse keeps one row per event id)."""
    up, env, log_path, sent = stack.up, stack.env, stack.log_path, stack.sent
    bootstrap = f"127.0.0.1:{env['TOKENMETER_EMBEDDED_BROKER_PORT']}"
    asyncio.run(produce(bootstrap, before := make_events(100, "before-stop")))
    sent += before
    victim = wait_for(lambda: child(up, "worker"), 30, "a running worker")
    victim.suspend()  # SIGSTOP, mid-traffic
    try:
        asyncio.run(produce(bootstrap, during := make_events(150, "while-stopped")))
        sent += during
        wait_for(lambda: (c := child(up, "worker")) is not None and c.pid != victim.pid, 90, "the worker replaced")
    finally:
        try:
            victim.resume()  # (only if it is still there: then the test has failed already)
        except psutil.Error:
            pass
    expected = expected_by_team(sent)
    try:
        wait_for(lambda: served_by_team(env) == expected, 180, "exact totals after the replacement", interval=0.5)
    except AssertionError:
        print(log_path.read_text()[-6000:])
        raise
    text = log_path.read_text()
    assert "worker (pid %d) is suspended" % victim.pid in text and "has been suspended for" in text, text[-3000:]
    status = json.loads((stack.data / "supervisor.json").read_text())
    worker = next(c for c in status["children"] if c["name"] == "worker")
    assert worker["unresponsive_restarts"] == 1 and worker["state"] == "running", worker


def test_broker_crash_is_reported_with_its_backlog_and_the_stack_recovers(stack):
    up, env, log_path = stack.up, stack.env, stack.log_path
    bootstrap = f"127.0.0.1:{env['TOKENMETER_EMBEDDED_BROKER_PORT']}"
    before = stack.sent + make_events(60, "before")  # with what earlier tests of the stack sent
    asyncio.run(produce(bootstrap, before[len(stack.sent):]))
    stack.sent[:] = before
    wait_for(lambda: served_by_team(env) == expected_by_team(before), 120, "the first events loaded", interval=0.5)
    assert report_by_team(env) == expected_by_team(before)
    status_path = stack.data / "supervisor.json"
    wait_for(lambda: (sample := json.loads(status_path.read_text()).get("backlog")) and
             sample["backlog"][topics.USAGE] == sample["backlog"][topics.PRICED] == 0, 60,
             "a sample showing every acknowledged record committed by its consumer")
    broker = child(up, "broker")
    broker.kill()
    wait_for(lambda: (c := child(up, "broker")) is not None and c.pid != broker.pid, 60, "a new broker")
    # read until it is there: a run under load (three copies of this file at once) read the log before it had it
    wait_for(lambda: "acknowledged usage records not yet metered" in log_path.read_text(), 30, "the crash report")
    text = log_path.read_text()
    assert "BROKER CRASHED" in text and "acknowledged usage records not yet metered" in text
    wait_for(lambda: child(up, "worker") is not None and child(up, "load") is not None, 60, "children back")
    after = make_events(60, "after")
    asyncio.run(produce(bootstrap, after))  # topics were recreated: producing works at once
    stack.sent += after
    wait_for(lambda: served_by_team(env) == expected_by_team(before + after), 180,
             "events sent after the broker restart loaded", interval=0.5)
    assert report_by_team(env) == expected_by_team(before + after)
    status = json.loads(status_path.read_text())
    assert status["broker_restarts"] == 1 and status["broker_losses"][0]["at_risk_records"] == 0
    out = subprocess.run([sys.executable, "-m", "app", "status"], env=env, capture_output=True, text=True,
                         timeout=30)
    assert "broker crash at" in out.stdout and "broker restarts: 1" in out.stdout, out.stdout


def test_back_off_doubles_up_to_its_cap_and_starts_over_after_a_stable_run():
    from app.supervisor import BACKOFF_FIRST_S, BACKOFF_MAX_S, STABLE_AFTER_S, Child

    child = Child("worker", ["x"], Path("/dev/null"))
    delays = []
    for _ in range(10):
        child.started_at = 100.0
        delays.append(child.schedule_restart(101.0))
    assert delays[:3] == [BACKOFF_FIRST_S, BACKOFF_FIRST_S * 2, BACKOFF_FIRST_S * 4]
    assert max(delays) == BACKOFF_MAX_S == delays[-1]
    child.started_at = 0.0
    assert child.schedule_restart(STABLE_AFTER_S + 1) == BACKOFF_FIRST_S


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

def test_sigkilled_up_takes_every_child_with_it_at_once(stack):
    """Last of the stack's tests: it ends the stack."""
    up, env = stack.up, stack.env
    family = psutil.Process(up.pid).children(recursive=True)
    assert {"broker", "worker", "load", "dispatch"} <= {p.cmdline()[-1] for p in family}  # (the fixture's roles)
    up.kill()
    up.wait(5)
    gone, alive = psutil.wait_procs(family, timeout=2.0)
    # A zombie has exited: only its reaping by the new parent (here the sandbox's init) is pending; psutil still
    # lists it (a clean-clone CI run failed so, reading a zombie's cmdline)
    alive = [p for p in alive if _running(p)]
    assert not alive, f"children alive 2 s after `up` was SIGKILLed: {[p.cmdline() for p in alive]}"
    with socket.socket() as sock:  # a new `up` can take the broker port at once
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", int(env["TOKENMETER_EMBEDDED_BROKER_PORT"])))


CLIENT_STOPPING_SLOWLY = """
import signal, socket, sys, time

def on_term(*_):
    time.sleep(0.5)  # a clean stop's last commit and LeaveGroup, through the broker
    try:
        socket.create_connection(({host!r}, {port}), timeout=2).close()
        seen = "broker up"
    except OSError as exc:
        seen = f"broker gone ({{exc}})"
    open({seen_path!r}, "w").write(seen)
    sys.exit(0)

signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
while True:
    time.sleep(1)
"""


SUPERVISOR_UNTIL_SIGINT = """
import signal, sys, time
from app.supervisor import Supervisor
from tokenmeter.settings import load_settings

settings = load_settings(data_dir={data_dir!r}, embedded_broker_port={port})
sup = Supervisor(settings, demo=False, echo=lambda line: None)
sup.log_dir.mkdir(parents=True)
interrupted = []
signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))  # as `tokenmeter up` (run_up) handles it
try:
    sup.spawn("broker", None, uses_kafka=False)
    client = sup.spawn("worker", [sys.executable, "-c", {client!r}.format(
        host=settings.host, port=sup.broker_private_port, seen_path={seen_path!r})])
    print(client.log_path, flush=True)
    while not interrupted:
        time.sleep(0.05)
finally:
    sup.stop()
"""


def test_a_terminals_ctrl_c_reaches_the_supervisor_alone_so_the_broker_stops_last(tmp_path):
    """Ctrl-C in a terminal sends SIGINT to the whole foreground process group: with the children in `up`'s group the
    embedded broker died at once with everyone else, and the worker retried it until the 15 s deadline SIGKILLed it
    (`./scripts/demo` took 16 s to stop). The children have a process group of their own; `up` stops them in order."""
    seen = tmp_path / "seen"
    code = SUPERVISOR_UNTIL_SIGINT.format(data_dir=str(tmp_path / "data"), port=free_port(),
                                          client=CLIENT_STOPPING_SLOWLY, seen_path=str(seen))
    up = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                          start_new_session=True)  # the test's own group must not get the SIGINT
    try:
        client_log = Path(up.stdout.readline().strip())
        wait_for(lambda: client_log.exists() and "ready" in client_log.read_text(), 30, "the client's SIGTERM handler")
        os.killpg(up.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        assert up.wait(timeout=30) == 0
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
    assert seen.read_text() == "broker up"


def test_a_stop_stops_the_brokers_clients_before_the_broker(tmp_path):
    """A child's clean stop (its last commit, leaving its group) needs the broker. Both were sent SIGTERM at once:
    the worker then retried the dead broker in a tight loop until the 15 s deadline SIGKILLed it (15 s of each
    broker-loss test's teardown, thousands of connection errors in its log)."""
    from app.supervisor import Supervisor
    from tokenmeter.settings import load_settings

    settings = load_settings(data_dir=tmp_path / "data", embedded_broker_port=free_port())
    sup = Supervisor(settings, demo=False, echo=lambda line: None)
    sup.log_dir.mkdir(parents=True)
    seen = tmp_path / "seen"
    try:
        sup.spawn("broker", None, uses_kafka=False)
        client = sup.spawn("worker", [sys.executable, "-c", CLIENT_STOPPING_SLOWLY.format(
            host=settings.host, port=sup.broker_private_port, seen_path=str(seen))])
        wait_for(lambda: "ready" in client.log_path.read_text(), 30, "the client's SIGTERM handler")
    finally:
        sup.stop()
    assert seen.read_text() == "broker up"
    assert client.proc.returncode == 0  # stopped by itself, not SIGKILLed at the deadline
