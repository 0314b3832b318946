"""`tokenmeter up`: start broker, worker, loader, dashboard (and demo traffic) as child processes, show progress,
and stop every child on Ctrl-C or SIGTERM. Children also get PDEATHSIG, so even a SIGKILLed `up` leaves no
orphan broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tokenmeter.broker import ensure_topics, start_broker
from tokenmeter.process import child_preexec
from tokenmeter.settings import Settings, SettingsError, ensure_port_free


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log_path: Path
    ready: Callable[[], bool] = field(default=lambda: True)


def _http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return resp.status < 500
        except OSError:
            return False

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
        self.stopping = False

    # -- lifecycle -------------------------------------------------------------------------------------
    def preflight(self) -> None:
        s = self.settings
        if s.embedded_broker:
            ensure_port_free(s.host, s.embedded_broker_port, "embedded_broker_port")
        ensure_port_free(s.host, s.api_port, "api_port")
        ensure_port_free(s.host, s.dash_port, "dash_port")

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["TOKENMETER_KAFKA_BOOTSTRAP"] = self.settings.bootstrap_servers
        env["TOKENMETER_DATA_DIR"] = str(self.settings.data_dir.resolve())
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def spawn(self, name: str, args: list[str], ready: Callable[[], bool] = lambda: True) -> Child:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                args, env=self.child_env(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=child_preexec,
            )
        child = Child(name, proc, log_path, ready)
        self.children.append(child)
        return child

    def wait_ready(self, child: Child, timeout: float) -> None:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if child.proc.poll() is not None:
                raise SettingsError(
                    f"{child.name} exited with code {child.proc.returncode}; last log lines "
                    f"({child.log_path}):\n{_tail(child.log_path)}"
                )
            if child.ready():
                return
            time.sleep(0.2)
        raise SettingsError(f"{child.name} not ready after {timeout:.0f} s; see {child.log_path}")

    def start(self) -> None:
        s = self.settings
        self.preflight()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        me = [sys.executable, "-m", "tokenmeter"]
        steps = ["broker", "worker", "loader", "dashboard"] + (["demo traffic"] if self.demo else [])
        total = len(steps)

        def step(i: int, what: str, action: Callable[[], None]) -> None:
            t0 = time.monotonic()
            self.echo(f"[{i}/{total}] starting {what} ...")
            action()
            self.echo(f"[{i}/{total}] {what} ready in {time.monotonic() - t0:.1f} s")

        if s.embedded_broker:
            def broker() -> None:
                proc = start_broker(s.host, s.embedded_broker_port, str(self.log_dir / "broker.log"))
                self.children.append(Child("broker", proc, self.log_dir / "broker.log"))
                ensure_topics(s.bootstrap_servers, s.partitions)

            step(1, f"embedded broker on {s.bootstrap_servers}", broker)
        else:
            step(1, f"topics on {s.bootstrap_servers}", lambda: ensure_topics(s.bootstrap_servers, s.partitions))
        self.restore_budgets()
        step(2, f"worker (API http://{s.host}:{s.api_port})", lambda: self.wait_ready(
            self.spawn("worker", me + ["worker"], _http_ok(f"http://{s.host}:{s.api_port}/health")), 90))
        warehouse = s.clickhouse_url or str(s.warehouse_path)
        endpoint_file = s.data_dir.resolve() / "warehouse.endpoint"
        loader_ready = (lambda: True) if s.clickhouse_url else endpoint_file.exists
        if not s.clickhouse_url:
            endpoint_file.unlink(missing_ok=True)
        step(3, f"loader into {warehouse}", lambda: self.wait_ready(self.spawn("loader", me + ["load"], loader_ready), 60))
        from dashboards.users import UsersFileError, ensure_users_file  # the login is printed here, once

        try:
            dashboard_login = ensure_users_file(s, demo=self.demo)
        except UsersFileError as exc:
            raise SettingsError(str(exc)) from None
        step(4, f"dashboard on {s.dashboard_url}", lambda: self.wait_ready(
            self.spawn("dashboard", me + ["dash"], _http_ok(s.dashboard_url)), 60))
        import importlib.util

        for name, module, args in (("alerts", "streams.alerts.cli", ["alerts", "dispatch"]),  # own process: a dead
                                   ("anomalies", "streams.anomalies.cli", ["anomalies", "run"])):  # endpoint never slows metering
            if importlib.util.find_spec(module) is not None:
                self.spawn(name, me + args)
                self.echo(f"      {name} started (log {self.log_dir / (name + '.log')})")
        if self.demo:
            step(5, f"demo traffic (~{s.demo_events_per_s:g} events/s)", lambda: self.spawn("demo", me + ["demo"]))
        self.echo("")
        self.echo(f"tokenmeter is running. Dashboard: {s.dashboard_url}")
        for line in dashboard_login:
            self.echo(f"  {line}")
        self.echo(f"  send events to Kafka {s.bootstrap_servers} topic tokenmeter.usage")
        self.echo(f"  worker API: http://{s.host}:{s.api_port}/v1/stats   logs: {self.log_dir}")
        self.echo("  numbers on the command line: tokenmeter report --group-by team,model")
        self.echo("Press Ctrl-C to stop.")

    def restore_budgets(self) -> None:
        """The embedded broker keeps nothing across restarts: re-publish the budget definitions the worker
        mirrored to the data directory, or the demo's budgets on a first demo run."""
        from streams.budgets import write_budgets
        from streams.budgets.service import demo_budgets, load_mirror

        s = self.settings
        budgets = load_mirror(s.data_dir) if s.embedded_broker else []
        if not budgets and self.demo:
            budgets = demo_budgets()
        if budgets:
            write_budgets(s.bootstrap_servers, budgets)
            self.echo(f"      budgets: {', '.join(b.name for b in budgets)}")
        if budgets and s.embedded_broker and not s.clickhouse_url and s.warehouse_path.exists():
            # Spend of the current periods from the warehouse, before the loader takes the chDB lock.
            out = subprocess.run([sys.executable, "-m", "tokenmeter", "budget", "rebuild"], env=self.child_env(),
                                 capture_output=True, text=True, timeout=120)
            if out.returncode != 0:
                raise SettingsError(f"budget rebuild from the warehouse failed:\n{out.stderr[-2000:]}")
            for line in out.stdout.splitlines():
                self.echo(f"      rebuilt from the warehouse: {line}")

    def watch(self) -> int:
        """Block until a signal or until a child dies; returns the exit code for `up`."""
        while not self.stopping:
            for child in self.children:
                if child.proc.poll() is not None:
                    self.echo(f"{child.name} exited with code {child.proc.returncode}; last log lines:\n"
                              f"{_tail(child.log_path)}")
                    return 1
            time.sleep(0.5)
        return 0

    def stop(self) -> None:
        self.stopping = True
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.terminate()
        deadline = time.monotonic() + 15
        for child in reversed(self.children):
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()


def run_up(settings: Settings, demo: bool) -> int:
    supervisor = Supervisor(settings, demo)

    def on_signal(signum, frame):  # noqa: ANN001
        supervisor.stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        supervisor.start()
        code = supervisor.watch()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    finally:
        print("stopping ...", file=sys.stderr)
        supervisor.stop()
    return code
