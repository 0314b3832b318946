"""`tokenmeter up`: start broker, worker, loader, dashboard (and demo traffic) as child processes, show progress,
keep them running, and stop every child on Ctrl-C or SIGTERM. The optional roles (dashboard, alert dispatcher,
anomaly detector, finance-watch, the demo's inbox) can be left out (TOKENMETER_UP_WITHOUT, `up --without`).

A crashed child is restarted with exponential back-off (counted, logged, in `<data_dir>/supervisor.json`, shown by
`tokenmeter status`) while the memory-only embedded broker keeps running, so nothing it acknowledged is lost. A
crashed broker is restarted too, loudly, with what its loss may have cost (the records it had acknowledged that
no consumer had committed yet, at the last sample); its topics and the budgets are recreated and the children
that talk to Kafka restarted. Children get PDEATHSIG=SIGKILL, so even a SIGKILLed `up` leaves no orphan."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from app.broker import BACKLOG_STAGES, BacklogWatcher, BrokerError, ensure_topics, start_broker
from app.broker_drain import drain_broker
from app.broker_gate import BrokerGate, create_topics_direct
from app.child_liveness import (HEARTBEAT_STALE_S, HUNG_AFTER_S, PROBE_EVERY_S, FileHeartbeat, LivenessProbe,
                                liveness_changes, unresponsive_for)
from app.process import child_preexec
from tokenmeter.child_process import BACKOFF_FIRST_S, BACKOFF_MAX_S, STABLE_AFTER_S, RestartingChild  # noqa: F401
from tokenmeter.heartbeat import HEARTBEAT_FILE_ENV
from tokenmeter.settings import Settings, SettingsError, ensure_port_free, free_port
from tokenmeter.timefmt import iso_utc


STATUS_FILE = "supervisor.json"
# `up --demo`: the finance watch's first check waits until the demo's live traffic has caught up with the clock. The
# history ends at the top of the hour and the demo sends the rest of the hour on its first tick; checked before
# that was stored, completeness judged the demo source "dropping" at every start (at 06:08: 3 events in the last
# hour against a usual 10; later in an hour, less of it is history).
DEMO_FIRST_FINANCE_CHECK_S = 90.0


def watch_services(demo: bool) -> tuple[tuple[str, str, list[str]], ...]:
    """The alerting children: (name, module, arguments)."""
    finance = ["finance-watch"] + (["--first-check-after", f"{DEMO_FIRST_FINANCE_CHECK_S:g}"] if demo else [])
    return (("alerts", "streams.alerts.cli", ["alerts", "dispatch"]),  # own process: a dead
            ("anomalies", "streams.anomalies.cli", ["anomalies", "run"]),  # endpoint never slows metering
            ("finance", "warehouse.finance_watch", finance))  # drift, completeness


class StartInterrupted(Exception):
    """Ctrl-C or SIGTERM while `up` was starting: nothing more is started or awaited, what runs is stopped (until
    roles37 noticed it, `up` went on starting and awaiting every remaining role, the dashboard up to 60 s)."""


@dataclass
class Child(RestartingChild):
    """One of up's children (args None: the embedded broker, tansu, started by app.broker)."""
    log_path: Path
    ready: Callable[[], bool] = field(default=lambda: True)
    uses_kafka: bool = True  # restarted with the broker, which forgets consumer groups and topics
    liveness: Callable[[], bool] | None = None  # a health check while it runs (app.child_liveness)
    suspended: bool = False  # set by the liveness probe
    suspended_since: float | None = None  # monotonic; set by the liveness probe
    traced: bool = False  # stopped by a debugger (state t): never restarted for it
    unresponsive_restarts: int = 0  # restarts because it was suspended or hung (counted in `restarts` too)
    answered_at: float | None = None  # monotonic; None: no answer since its (re)start
    unanswered_since: float | None = None
    reported: str | None = None  # "suspended" or "hung" once said, so it is said once

    def condition(self, now: float, hung_after_s: float = HUNG_AFTER_S) -> str:
        if not self.alive():
            return "backoff" if self.restart_at is not None else "stopped"
        if self.suspended:
            return "suspended"
        if self.unanswered_since is not None and now - self.unanswered_since >= hung_after_s:
            return "hung"
        return "running"

    def status(self, now: float, hung_after_s: float = HUNG_AFTER_S) -> dict:
        state = self.condition(now, hung_after_s)
        unanswered = round(now - self.unanswered_since, 1) if state == "hung" else None
        return {"name": self.name, "pid": self.proc.pid if self.alive() else None, "state": state,
                "unanswered_s": unanswered, "health": getattr(self.liveness, "url", None),
                "restarts": self.restarts, "unresponsive_restarts": self.unresponsive_restarts,
                "last_exit_code": self.last_exit_code,
                "last_exit_at": _iso(self.last_exit_at), "uptime_s": round(now - self.started_at, 1)
                if self.alive() else None, "next_restart_in_s": round(max(0.0, self.restart_at - now), 1)
                if self.restart_at is not None else None, "log": str(self.log_path)}


def _iso(unix: float | None) -> str | None:
    """Unix time as the house's ISO text in whole seconds (tokenmeter.timefmt); none yet stays None."""
    return iso_utc(datetime.fromtimestamp(unix, timezone.utc), "seconds") if unix else None


def describe_backlog(sample: dict | None) -> str:
    """One sentence on what only the broker held at its last sample (see app.broker.BACKLOG_STAGES)."""
    if not sample:
        return "no sample of the broker's backlog was taken, so the loss cannot be sized"
    parts = [f"{sample['backlog'].get(topic, 0)} {what}" for topic, _, what in BACKLOG_STAGES]
    age = time.time() - sample["at"]
    return (f"at the last sample ({age:.0f} s earlier) the broker alone held " + "; ".join(parts)
            + ". Records acknowledged after that sample are gone too and cannot be counted")

STALLED_S = 60  # records waiting and no commit for this long: said in `status` (a dispatcher retrying is one cause)


def describe_stages(sample: dict, now: float, left_out: tuple[str, ...] = ()) -> str:
    """`status`'s backlog line: records waiting per stage, and a stage that committed nothing for STALLED_S while
    records waited (its child may be running, heartbeat and all, with a stuck consumer). A stage whose consumer this
    `up` left out (the alerts' dispatcher) is said so instead: nothing here consumes it, nothing is stuck."""
    parts = []
    for topic, group, _ in BACKLOG_STAGES:
        stage = group.removeprefix("tokenmeter-")
        waiting = sample.get("backlog", {}).get(topic, 0)
        idle = now - sample.get("progress_at", {}).get(topic, sample["at"])
        stalled = f" (nothing committed for {idle:.0f} s)" if waiting and idle >= STALLED_S else ""
        if stage in left_out:
            stalled = " (left out of this `up`)"
        parts.append(f"{stage} {waiting:,}{stalled}")
    return (f"  waiting in the broker (sampled {max(0.0, now - sample['at']):.0f} s ago; a lower bound): "
            + ", ".join(parts))


def _http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return resp.status < 500
        except OSError:
            return False

    check.url = url  # named in the "not answering" report
    return check


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Supervisor:
    def __init__(self, settings: Settings, demo: bool, echo: Callable[[str], None] = print):
        self.settings = settings
        self.demo = demo
        self.echo = echo
        self.children: list[Child] = []
        self.log_dir = settings.data_dir.resolve() / "logs"
        self.status_path = settings.data_dir.resolve() / STATUS_FILE
        self.stopping = False
        self.history: subprocess.Popen | None = None  # `up --demo`'s history writer, while the start waits for it
        self.state = "starting"
        self.liveness: LivenessProbe | None = None
        self.heartbeat_stale_s = HEARTBEAT_STALE_S
        self.hung_after_s = HUNG_AFTER_S
        self.broker_restarts = 0
        self.broker_losses: list[dict] = []  # one entry per broker crash: what may have been lost
        self.previous_run: dict | None = None  # an earlier `up` that did not stop cleanly
        self.stop_loss: dict | None = None  # what a clean stop could not drain from the memory-only broker
        self.watcher: BacklogWatcher | None = None
        self.gate: BrokerGate | None = None  # the public broker port, open only while the broker has its topics
        self.broker_private_port = 0  # where the embedded broker really listens (the gate forwards to it)
        self._status_written = 0.0
        # roles37: the optional roles TOKENMETER_UP_WITHOUT (or `up --without`) leaves out, of those this `up` would
        # start (the inbox only with --demo): never spawned, so no restart, probe or stop looks for them
        self.left_out = tuple(role for role in settings.up_without if role != "inbox" or demo)

    def starts(self, role: str) -> bool:
        """Whether this `up` runs an optional role (dashboard, alerts, anomalies, finance, inbox)."""
        return role not in self.left_out

    # -- lifecycle -------------------------------------------------------------------------------------
    def preflight(self) -> None:
        s = self.settings
        if s.embedded_broker:
            ensure_port_free(s.host, s.embedded_broker_port, "embedded_broker_port")
        ensure_port_free(s.host, s.api_port, "api_port")
        if self.starts("dashboard"):
            ensure_port_free(s.host, s.dash_port, "dash_port")
        if self.demo and self.starts("inbox"):
            ensure_port_free(s.host, s.demo_inbox_port, "demo_inbox_port")

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["TOKENMETER_KAFKA_BOOTSTRAP"] = self.settings.bootstrap_servers
        env["TOKENMETER_DATA_DIR"] = str(self.settings.data_dir.resolve())
        env["PYTHONUNBUFFERED"] = "1"
        env["TOKENMETER_UP_WITHOUT"] = ",".join(self.settings.up_without)  # `up --without`'s, not a variable's
        # (a child reads its settings again: an invalid variable the option overrode would stop it)
        if self.demo and "TOKENMETER_DRIFT_MIN_USD" not in env and self.settings.drift_min_usd == 1:
            from warehouse.demo_history import DEMO_DRIFT_MIN_USD  # the demo spends a few USD a day

            env["TOKENMETER_DRIFT_MIN_USD"] = DEMO_DRIFT_MIN_USD
        if (self.demo and "TOKENMETER_COST_CENTERS_FILE" not in env and "TOKENMETER_ALLOCATION_FILE" not in env
                and not self.settings.cost_centers_file and not self.settings.allocation_file):
            from warehouse.demo_history import demo_finance_file  # the demo's cost centers and allocation rule

            env["TOKENMETER_COST_CENTERS_FILE"] = str(demo_finance_file(self.settings.data_dir.resolve()))
        if self.demo and self.starts("inbox"):  # every alert of the demo goes to its local inbox, unless the user
            # routes it elsewhere (left out: the routes the user set, if any)
            from collectors.demo_inbox import inbox_url

            route = json.dumps([f"webhook={inbox_url(self.settings)}"])
            for name, routes in (("TOKENMETER_ANOMALY_NOTIFY", self.settings.anomaly_notify),
                                 ("TOKENMETER_FINANCE_NOTIFY", self.settings.finance_notify)):
                if name not in env and not routes:
                    env[name] = route
        return env

    def child(self, name: str) -> Child | None:
        return next((c for c in self.children if c.name == name), None)

    def launch(self, child: Child) -> None:
        s = self.settings
        if child.args is None:  # a private port: clients reach it through the gate once its topics exist
            if self.gate is None:
                self.gate = BrokerGate(s.host, s.embedded_broker_port)
            self.gate.close()
            self.broker_private_port = free_port()
            child.proc = start_broker(s.host, self.broker_private_port, str(child.log_path),
                                      advertised_port=s.embedded_broker_port)
        else:
            env = self.child_env()
            env.pop(HEARTBEAT_FILE_ENV, None)  # never a file inherited from whoever started `up`
            if isinstance(child.liveness, FileHeartbeat):
                child.liveness.reset()
                env[HEARTBEAT_FILE_ENV] = str(child.liveness.path)
            with open(child.log_path, "ab") as out:
                child.proc = subprocess.Popen(
                    child.args, env=env, stdout=out, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, preexec_fn=child_preexec,
                )
        child.started_at = time.monotonic()
        child.restart_at = None
        child.suspended, child.answered_at, child.unanswered_since = False, None, None
        child.suspended_since, child.traced = None, False

    def spawn(self, name: str, args: list[str] | None, ready: Callable[[], bool] = lambda: True,
              uses_kafka: bool = True, liveness: Callable[[], bool] | None = None) -> Child:
        self.stop_if_asked()
        if liveness is None and args is not None:  # no health URL: its event loop's heartbeat file
            liveness = FileHeartbeat(self.settings.data_dir.resolve() / "heartbeats" / name, self.heartbeat_stale_s)
        child = Child(name, args, self.log_dir / f"{name}.log", ready, uses_kafka, liveness=liveness)
        self.children.append(child)
        self.launch(child)
        return child

    def stop_if_asked(self) -> None:
        """During the start: a stop asked for (a signal) ends it here."""
        if self.stopping and self.state != "running":
            raise StartInterrupted()

    def wait_ready(self, child: Child, timeout: float) -> None:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            self.stop_if_asked()  # before the exit check: a terminal's Ctrl-C reaches the child too
            if child.proc.poll() is not None:
                raise SettingsError(
                    f"{child.name} exited with code {child.proc.returncode}; last log lines "
                    f"({child.log_path}):\n{_tail(child.log_path)}"
                )
            if child.ready():
                return
            time.sleep(0.2)
        raise SettingsError(f"{child.name} not ready after {timeout:.0f} s; see {child.log_path}")

    def wait_history(self, history: subprocess.Popen) -> None:
        """Wait for `demo-history` (at most 120 s) and echo its summary or its failure."""
        deadline = time.monotonic() + 120
        while (code := history.poll()) is None and time.monotonic() < deadline and not self.stopping:
            time.sleep(0.2)
        if code is None:  # too long, or a stop asked for
            history.kill()
            code = history.wait()
            self.stop_if_asked()
        self.echo(f"      {(self.log_dir / 'demo-history.log').read_text().strip()[-300:]}"
                  if code == 0 else f"      demo history failed (exit {code}); see {self.log_dir / 'demo-history.log'}")

    def start(self) -> None:
        s = self.settings
        self.preflight()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.report_unclean_previous_run()
        self.write_status(force=True)
        me = [sys.executable, "-m", "app"]
        steps = (["broker", "worker", "loader"] + (["dashboard"] if self.starts("dashboard") else [])
                 + (["demo traffic"] if self.demo else []))
        total = len(steps)
        number = {name: i for i, name in enumerate(steps, 1)}

        def step(i: int, what: str, action: Callable[[], None]) -> None:
            self.stop_if_asked()
            t0 = time.monotonic()
            self.echo(f"[{i}/{total}] starting {what} ...")
            action()
            self.echo(f"[{i}/{total}] {what} ready in {time.monotonic() - t0:.1f} s")

        if self.left_out:  # said first, so nobody takes a role missing from `status` for one that died
            self.echo(f"      left out (TOKENMETER_UP_WITHOUT or --without): {', '.join(self.left_out)}")

        history = None
        if self.demo and not s.clickhouse_url:  # 30 days of back-filled history, written while the broker starts;
            # the budget rebuild (its spend of the current periods), the worker and the loader (the warehouse's
            # owner) start after it (warehouse/demo_history.py)
            history = self.history = subprocess.Popen(me + ["demo-history", "--publish"], env=self.child_env(),
                                       stdout=open(self.log_dir / "demo-history.log", "w"), stderr=subprocess.STDOUT)

        if s.embedded_broker:
            def broker() -> None:
                proc = self.spawn("broker", None, uses_kafka=False).proc
                self.prepare_broker()
                if proc.poll() is not None:
                    raise SettingsError(f"embedded broker exited with code {proc.returncode}; see "
                                        f"{self.log_dir / 'broker.log'}")

            step(1, f"embedded broker on {s.bootstrap_servers}", broker)
        else:
            step(1, f"topics on {s.bootstrap_servers}", lambda: ensure_topics(s.bootstrap_servers, s.partitions))
        if history is not None:  # before the budget rebuild: the history's spend of the current periods counts
            self.wait_history(history)
        self.restore_budgets()
        # The worker and the loader start together (each spends seconds importing and joining its group); their
        # readiness is still awaited and reported one after the other.
        t0 = time.monotonic()
        self.echo(f"[2/{total}] starting worker (API http://{s.host}:{s.api_port}) ...")
        health = _http_ok(f"http://{s.host}:{s.api_port}/health")
        worker = self.spawn("worker", me + ["worker"], health, liveness=health)
        from tokenmeter.redaction import redact_url  # the URL's password is never shown (walk32: it was printed)

        warehouse = redact_url(s.clickhouse_url) if s.clickhouse_url else str(s.warehouse_path)
        endpoint_file = s.data_dir.resolve() / "warehouse.endpoint"
        loader_ready = (lambda: True) if s.clickhouse_url else endpoint_file.exists
        if not s.clickhouse_url:
            endpoint_file.unlink(missing_ok=True)
        self.echo(f"[3/{total}] starting loader into {warehouse} ...")
        loader = self.spawn("loader", me + ["load"], loader_ready)
        self.wait_ready(worker, 90)
        self.echo(f"[2/{total}] worker ready in {time.monotonic() - t0:.1f} s")
        self.wait_ready(loader, 60)
        self.echo(f"[3/{total}] loader ready in {time.monotonic() - t0:.1f} s")
        dashboard_login: list[str] = []
        if self.starts("dashboard"):  # without one, no login to make or print (a later `up` with it prints it)
            from dashboards.users import UsersFileError, ensure_users_file  # the login is printed here, once

            try:
                dashboard_login = ensure_users_file(s, demo=self.demo)
            except UsersFileError as exc:
                raise SettingsError(str(exc)) from None
        inbox = None
        if self.demo and self.starts("inbox"):  # before the alert dispatcher: the demo's alerts are routed to this
            # local inbox; it starts with the dashboard (neither needs the other)
            inbox_ok = _http_ok(f"http://{s.host}:{s.demo_inbox_port}/")
            inbox = self.spawn("inbox", me + ["demo-inbox"], inbox_ok, uses_kafka=False, liveness=inbox_ok)
        if self.starts("dashboard"):  # its Kafka clients reconnect alone (uses_kafka False)
            dash_ok = _http_ok(s.dashboard_url + "healthz")  # no sign-in redirect, no page rendered per probe
            step(number["dashboard"], f"dashboard on {s.dashboard_url}", lambda: self.wait_ready(
                self.spawn("dashboard", me + ["dash"], dash_ok, uses_kafka=False, liveness=dash_ok), 60))
        import importlib.util

        if inbox is not None:
            from collectors.demo_inbox import inbox_url

            self.wait_ready(inbox, 30)
            self.echo(f"      alert inbox on {inbox_url(s)} (alerts also in "
                      f"{s.data_dir.resolve() / 'demo-inbox.jsonl'})")
        for name, module, args in watch_services(self.demo):
            if self.starts(name) and importlib.util.find_spec(module) is not None:
                self.spawn(name, me + args)
                self.echo(f"      {name} started (log {self.log_dir / (name + '.log')})")
        if self.demo and history is not None and "demo_events_per_s" not in s.model_fields_set:
            # The history's calendar continued (collectors/demo_live.py): a flat 40 events/s after a month at ~70
            # calls an hour is a cliff every anomaly detector flags. TOKENMETER_DEMO_EVENTS_PER_S asks for the flat
            # load generator. --started: a restarted demo keeps its incident's schedule.
            step(number["demo traffic"], "demo traffic (the history's weekday/hour calendar continued, one live "
                 "incident)", lambda: self.spawn("demo", me + ["demo", "--calendar", "--started",
                                                              f"{time.time():.3f}"]))
        elif self.demo:
            step(number["demo traffic"], f"demo traffic (~{s.demo_events_per_s:g} events/s)",
                 lambda: self.spawn("demo", me + ["demo"]))
        if s.embedded_broker:
            self.watcher = BacklogWatcher(s.bootstrap_servers, s.partitions).start()
        self.start_liveness()
        self.state = "running"
        self.write_status(force=True)
        self.echo("")
        self.echo(f"tokenmeter is running. Dashboard: {s.dashboard_url}" if self.starts("dashboard") else
                  "tokenmeter is running (no dashboard: left out).")
        for line in dashboard_login:
            self.echo(f"  {line}")
        self.echo(f"  send events to Kafka {s.bootstrap_servers} topic tokenmeter.usage")
        self.echo(f"  worker API: http://{s.host}:{s.api_port}/v1/stats   logs: {self.log_dir}")
        self.echo("  numbers on the command line: tokenmeter report --group-by team,model")
        self.echo("  children, restarts and broker losses: tokenmeter status")
        if self.left_out:
            self.echo(f"  not started (left out): {', '.join(self.left_out)}")
        self.echo("Press Ctrl-C to stop.")

    def prepare_broker(self) -> None:
        """Create the topics on the just launched broker, then open the public port (app.broker_gate: a
        client producing to a topic tansu does not have yet is acknowledged and loses the records)."""
        s = self.settings
        create_topics_direct(s.host, self.broker_private_port, s.partitions)
        self.gate.open(self.broker_private_port)
        ensure_topics(s.bootstrap_servers, s.partitions)  # through the public port: the path clients take

    def restore_budgets(self) -> None:
        """The embedded broker keeps nothing across restarts: re-publish the budget definitions the worker
        mirrored to the data directory, or the demo's budgets on a first demo run."""
        from streams.budgets import write_budgets
        from streams.budgets.service import demo_budgets, load_mirror

        s = self.settings
        budgets = load_mirror(s.data_dir) if s.embedded_broker else []
        if not budgets and self.demo:
            from collectors.demo_inbox import inbox_url

            budgets = demo_budgets()
            if self.starts("inbox"):  # else their alerts have no route: none to an inbox nobody runs
                budgets = [b.model_copy(update={"notify": (f"webhook={inbox_url(s)}",)}) for b in budgets]
        if budgets:
            write_budgets(s.bootstrap_servers, budgets)
            self.echo(f"      budgets: {', '.join(b.name for b in budgets)}")
        if budgets and s.embedded_broker and not s.clickhouse_url and s.warehouse_path.exists():
            # Spend of the current periods from the warehouse, before the loader takes the chDB lock.
            out = subprocess.run([sys.executable, "-m", "app", "budget", "rebuild"], env=self.child_env(),
                                 capture_output=True, text=True, timeout=120, preexec_fn=child_preexec)
            if out.returncode != 0:
                raise SettingsError(f"budget rebuild from the warehouse failed:\n{out.stderr[-2000:]}")
            for line in out.stdout.splitlines():
                self.echo(f"      rebuilt from the warehouse: {line}")

    # -- keeping children alive ------------------------------------------------------------------------
    def start_liveness(self, every_s: float = PROBE_EVERY_S, hung_after_s: float = HUNG_AFTER_S) -> None:
        self.hung_after_s = hung_after_s
        self.liveness = LivenessProbe(lambda: self.children, every_s)
        self.liveness.start()

    def watch(self) -> int:
        """Restart crashed children until a signal; returns the exit code for `up` (0: stopped on request)."""
        while not self.stopping:
            self.tend()
            time.sleep(0.2)
        return 0

    def tend(self) -> None:
        now = time.monotonic()
        broker = self.child("broker")
        if broker is not None and not broker.alive() and broker.restart_at is None:
            self.broker_crashed(broker, now)
        if broker is not None and broker.restart_at is not None:
            if now >= broker.restart_at:
                self.restart_broker(broker)
            self.write_status()
            return  # the others wait for the broker
        for child in self.children:
            if self.stopping:  # Ctrl-C reaches the children too: do not restart what is being stopped
                return
            self.kill_unresponsive(child, now)
            if child.restart_at is None and not child.alive():
                code = child.proc.returncode
                child.last_exit_code, child.last_exit_at = code, time.time()
                uptime = now - child.started_at
                delay = child.schedule_restart(now)
                self.echo(f"{child.name} exited with code {code} after {uptime:.1f} s; restarting in {delay:.1f} s "
                          f"(restart #{child.restarts + 1}); last log lines ({child.log_path}):\n{_tail(child.log_path)}")
            elif child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self.launch(child)
                self.echo(f"{child.name} restarted (pid {child.proc.pid}, restart #{child.restarts})")
        for line in liveness_changes(self.children, now, self.hung_after_s,
                                     self.settings.child_restart_unresponsive_seconds):
            self.echo(line)
        self.write_status()

    def kill_unresponsive(self, child: Child, now: float) -> None:
        """SIGKILL a child suspended or hung for longer than its grace; the crash path below restarts it. Nothing is
        lost: every child is at-least-once (offsets committed after its outputs) with idempotent outputs."""
        grace = self.settings.child_restart_unresponsive_seconds
        if not grace or child.args is None or not child.alive():
            return  # (the broker: memory-only, its loss is handled as a crash, never provoked)
        since = unresponsive_for(child, now, self.hung_after_s)
        if since is None or since < grace:
            return
        condition = child.condition(now, self.hung_after_s)
        child.unresponsive_restarts += 1
        what = (f"suspended for {since:.0f} s" if condition == "suspended" else
                f"hung (no answer for {since + self.hung_after_s:.0f} s)")
        self.echo(f"{child.name} (pid {child.proc.pid}) has been {what}, past its {grace:.0f} s grace: killing it "
                  f"so that it restarts (unresponsive restart #{child.unresponsive_restarts}; nothing is lost: "
                  f"it resumes from its committed offsets)")
        child.proc.kill()  # SIGKILL ends a stopped process too
        child.proc.wait()

    def broker_crashed(self, broker: Child, now: float) -> None:
        """Say loudly what the memory-only broker took with it, stop the children that talk to Kafka (their
        groups, offsets and topics are gone) and schedule the broker's restart."""
        code = broker.proc.returncode if broker.proc is not None else None
        broker.last_exit_code, broker.last_exit_at = code, time.time()
        sample = self.watcher.latest if self.watcher else None
        loss = {"at": _iso(time.time()), "exit_code": code, "backlog_sample": sample,
                "at_risk_records": sum(sample["backlog"].values()) if sample else None}
        self.broker_losses.append(loss)
        if self.watcher:
            self.watcher.latest = None  # describes the dead broker: never report it for a later crash
        if self.gate is not None:
            self.gate.close()  # refuse clients until the next broker has its topics
        self.echo(f"!!! BROKER CRASHED (exit code {code}). The embedded broker keeps everything in memory: every "
                  f"record it held is gone.")
        self.echo(f"!!! {describe_backlog(sample)}.")
        self.echo("!!! The warehouse stays exact for what was loaded; re-send the lost range from its source if you "
                  "can. Restarting the broker, recreating topics and budgets, reconnecting the children.")
        for child in self.children:  # SIGKILL: a graceful stop would only wait on the dead broker (Faust: seconds)
            if child.uses_kafka and child.alive():
                child.proc.kill()
        for child in self.children:
            if child.uses_kafka and child.proc is not None:
                child.proc.wait()
                child.restart_at = None
        delay = broker.schedule_restart(now)
        self.echo(f"broker restarting in {delay:.1f} s (restart #{broker.restarts + 1})")

    def restart_broker(self, broker: Child) -> None:
        broker.restarts += 1
        self.broker_restarts += 1
        try:
            self.launch(broker)
            self.prepare_broker()
            self.restore_budgets()
        except (BrokerError, SettingsError, OSError, subprocess.SubprocessError) as exc:
            if self.gate is not None:
                self.gate.close()
            if broker.alive():
                broker.proc.kill()
                broker.proc.wait()
            delay = broker.schedule_restart(time.monotonic())
            self.echo(f"broker restart failed ({exc}); trying again in {delay:.1f} s")
            return
        self.echo(f"broker restarted (pid {broker.proc.pid}, restart #{broker.restarts}); topics recreated")
        for child in self.children:
            if child.uses_kafka and not child.alive():
                child.restarts += 1
                self.launch(child)
                self.echo(f"{child.name} restarted after the broker (pid {child.proc.pid})")

    # -- status ----------------------------------------------------------------------------------------
    def report_unclean_previous_run(self) -> None:
        """A previous `up` that was killed left its status file in state "running": its broker died with it, so
        say what was at risk then (this run starts with an empty broker)."""
        try:
            previous = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return
        if previous.get("state") not in ("starting", "running") or _pid_alive(previous.get("pid")):
            return
        self.previous_run = {"pid": previous.get("pid"), "last_update": previous.get("updated_at"),
                             "backlog_sample": previous.get("backlog")}
        self.echo(f"!!! the previous `tokenmeter up` (pid {previous.get('pid')}) did not stop cleanly (last seen "
                  f"{previous.get('updated_at')}); its memory-only broker died with it.")
        if self.settings.embedded_broker:
            self.echo(f"!!! {describe_backlog(previous.get('backlog'))}.")

    def status(self, now: float | None = None) -> dict:
        """What `tokenmeter status` prints (written to `<data_dir>/supervisor.json`)."""
        now = time.monotonic() if now is None else now
        return {"pid": os.getpid(), "state": self.state, "updated_at": _iso(time.time()),
                "bootstrap": self.settings.bootstrap_servers, "left_out": list(self.left_out),
                "children": [c.status(now, self.hung_after_s) for c in self.children],
                "broker_restarts": self.broker_restarts, "broker_losses": self.broker_losses,
                "backlog": self.watcher.latest if self.watcher else None, "previous_run": self.previous_run,
                "stop_loss": self.stop_loss}

    def write_status(self, force: bool = False) -> None:
        """`<data_dir>/supervisor.json`, about once a second: what `tokenmeter status` prints."""
        now = time.monotonic()
        if not force and now - self._status_written < 1.0:
            return
        self._status_written = now
        tmp = self.status_path.with_suffix(".json.tmp")
        try:
            tmp.write_text(json.dumps(self.status(now), indent=1))
            os.replace(tmp, self.status_path)
        except OSError:
            pass

    def drain_before_stop(self) -> None:
        """The embedded broker keeps nothing across a stop: let the worker and the loader consume what it
        acknowledged first (app/broker_drain.py); what they cannot is reported (`stop_loss`), as a crash's loss is."""
        s, broker = self.settings, self.child("broker")
        if not (s.embedded_broker and s.stop_drain_seconds > 0 and broker is not None and broker.alive()
                and self.gate is not None and self.gate.is_open):
            return
        consumers = [c for c in self.children if c.name in ("worker", "loader")]

        def consumers_run() -> bool:  # a stop during the start, or after a crash: nobody would drain it
            return broker.alive() and len(consumers) == 2 and all(c.alive() for c in consumers)

        self.stop_loss = drain_broker(s.bootstrap_servers, s.partitions, s.fetch_wait, s.stop_drain_seconds,
                                      consumers_run, self.echo)
        if self.stop_loss is not None:
            self.stop_loss["at"] = _iso(self.stop_loss["at"])

    def stop(self) -> None:
        """Drain the embedded broker (drain_before_stop), then SIGTERM the children, the embedded broker's clients
        first and the broker once they are gone (15 s in all, then SIGKILL): a client's clean stop commits and
        leaves its group through the broker. Stopped at once, a worker retried the dead broker in a tight loop
        until the deadline killed it."""
        self.stopping = True
        if self.history is not None and self.history.poll() is None:  # a stop or an error during the start
            self.history.kill()
            self.history.wait()
        if self.watcher:
            self.watcher.stop()
        if self.liveness:
            self.liveness.stop()
        self.drain_before_stop()
        deadline = time.monotonic() + 15
        clients = [c for c in reversed(self.children) if c.args is not None]
        for group in (clients, [c for c in reversed(self.children) if c.args is None]):
            for child in group:
                if child.alive():
                    child.proc.terminate()
                    child.proc.send_signal(signal.SIGCONT)  # a suspended child handles its SIGTERM only then
            for child in group:
                if child.proc is None:
                    continue
                try:
                    child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait()
                child.restart_at = None
        if self.gate is not None:  # after the children: their clean stop still commits through it
            self.gate.close()
        self.state = "stopped"
        if self.status_path.parent.exists():
            self.write_status(force=True)


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_up(settings: Settings, demo: bool) -> int:
    supervisor = Supervisor(settings, demo)

    def on_signal(signum, frame):  # noqa: ANN001
        supervisor.stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        supervisor.start()
        code = supervisor.watch()
    except StartInterrupted:
        print("stopped during the start (Ctrl-C or SIGTERM)", file=sys.stderr)
        code = 0
    except (SettingsError, BrokerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    finally:
        print("stopping ...", file=sys.stderr)
        supervisor.stop()
    return code


def print_status(settings: Settings, as_json: bool, echo: Callable[[str], None]) -> int:
    """`tokenmeter status`: 0 when an `up` is running with every child up, 1 otherwise."""
    path = settings.data_dir.resolve() / STATUS_FILE
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        echo(f"no `tokenmeter up` has run with data dir {settings.data_dir.resolve()} ({path} missing)")
        return 1
    alive = status.get("state") in ("starting", "running") and _pid_alive(status.get("pid"))
    if status.get("state") in ("starting", "running") and not alive:
        status["state"] = "dead (killed without stopping its children? they die with it)"
    if as_json:
        echo(json.dumps(status, indent=1))
    else:
        echo(f"up: {status['state']} (pid {status.get('pid')}, updated {status.get('updated_at')}), "
             f"broker restarts: {status.get('broker_restarts', 0)}")
        named = status.get("left_out")  # (a file written by another version may lack it, or be damaged)
        left_out = tuple(r for r in named if isinstance(r, str)) if isinstance(named, list) else ()
        if left_out:  # not children: a role left out is no role that died
            echo(f"  left out (not started: TOKENMETER_UP_WITHOUT or --without): {', '.join(left_out)}")
        for c in status.get("children", []):
            extra = f", last exit {c['last_exit_code']} at {c['last_exit_at']}" if c.get("last_exit_at") else ""
            wait = f", restart in {c['next_restart_in_s']} s" if c.get("next_restart_in_s") is not None else ""
            if c["state"] == "suspended":
                wait += ", stopped (SIGSTOP?): no work until SIGCONT"
            elif c["state"] == "hung":
                health = c.get("health") or ""
                wait += (f", its event loop stopped turning (heartbeat {health[len('file://'):]} stale) for "
                         f"{c.get('unanswered_s')} s" if health.startswith("file://") else
                         f", no answer on {health} for {c.get('unanswered_s')} s")
            echo(f"  {c['name']:<10} {c['state']:<9} pid {c['pid'] or '-':<8} restarts {c['restarts']}{extra}{wait}")
        if isinstance(status.get("backlog"), dict) and isinstance(status["backlog"].get("at"), (int, float)) \
                and status["state"] == "running":  # (a file written by another version may lack it)
            echo(describe_stages(status["backlog"], time.time(), left_out))
        for loss in status.get("broker_losses", []):
            echo(f"  broker crash at {loss['at']}: {describe_backlog(loss.get('backlog_sample'))}")
        if isinstance(status.get("stop_loss"), dict):
            loss = status["stop_loss"]
            echo(f"  the stop at {loss.get('at')} could not drain the memory-only broker: "
                 f"{loss.get('at_risk_records')} acknowledged records lost ({loss.get('waiting')})"
                 + (f": {loss['why']}" if loss.get("why") else ""))
        if status.get("previous_run"):
            echo(f"  the run before did not stop cleanly: {describe_backlog(status['previous_run'].get('backlog_sample'))}")
    running = alive and all(c["state"] == "running" for c in status.get("children", []))
    return 0 if running else 1
