"""`tokenmeter up` can leave out its optional roles (roles37): a headless host without the dashboard, a site whose
anomaly detection or alert dispatching runs elsewhere. `up --without` / TOKENMETER_UP_WITHOUT name them; the
broker, the worker and the loader are the core and cannot be left out. What is left out is never started, never
awaited, and said so by `up` and `tokenmeter status`, so nobody takes it for a role that died."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

import psutil
import pytest
from click.testing import CliRunner

from app.cli import main
from test_supervisor import WITHOUT_ALL_OPTIONAL, running_up
from tokenmeter.settings import SettingsError, free_port, load_settings

pytestmark = pytest.mark.slow(seconds=15)


def test_a_left_out_role_is_not_started_nor_awaited_and_status_says_so(tmp_path):
    """The dashboard's port is taken by another program: a dashboard `up` started or awaited would fail its start
    (the port check, then its readiness); left out, `up` runs the core alone and says what it left out."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        dash_port = taken.getsockname()[1]
        with running_up(tmp_path, WITHOUT_ALL_OPTIONAL, TOKENMETER_DASH_PORT=str(dash_port)) as (up, env, log_path):
            children = {p.cmdline()[-1] for p in psutil.Process(up.pid).children()}
            text = log_path.read_text()
            status = json.loads((tmp_path / "data" / "supervisor.json").read_text())
            shown = subprocess.run([sys.executable, "-m", "app", "status"], env=env, capture_output=True, text=True,
                                   timeout=60)
            up.send_signal(signal.SIGTERM)
            assert up.wait(90) == 0, log_path.read_text()[-3000:]
    assert children == {"broker", "worker", "load"}, children
    assert status["left_out"] == ["dashboard", "alerts", "anomalies", "finance"]
    assert [c["name"] for c in status["children"]] == ["broker", "worker", "loader"]
    assert "left out (TOKENMETER_UP_WITHOUT or --without): dashboard, alerts, anomalies, finance" in text, text
    assert "tokenmeter is running (no dashboard: left out)." in text and "Dashboard:" not in text
    assert "dashboard login" not in text and "[4/" not in text and "[3/3] loader ready" in text
    assert "  not started (left out): dashboard, alerts, anomalies, finance" in text
    assert shown.returncode == 0, shown.stdout + shown.stderr  # every child it started runs: nothing died
    assert "left out (not started: TOKENMETER_UP_WITHOUT or --without): dashboard, alerts, anomalies, finance" \
        in shown.stdout, shown.stdout
    assert json.loads((tmp_path / "data" / "supervisor.json").read_text())["state"] == "stopped"


def test_the_variable_and_the_yaml_file_name_the_roles_as_the_option_does(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENMETER_UP_WITHOUT", " Dashboard, anomalies,,dashboard ")
    assert load_settings().up_without == ("dashboard", "anomalies")
    monkeypatch.setenv("TOKENMETER_UP_WITHOUT", '["finance", "alerts"]')  # as the other list variables take
    assert load_settings().up_without == ("finance", "alerts")
    monkeypatch.delenv("TOKENMETER_UP_WITHOUT")
    assert load_settings().up_without == ()  # by default `up` starts every role
    config = tmp_path / "tokenmeter.yaml"
    config.write_text("up_without: [dashboard, inbox]\n")
    monkeypatch.setenv("TOKENMETER_CONFIG", str(config))
    assert load_settings().up_without == ("dashboard", "inbox")


def test_a_core_or_unknown_role_is_an_error_naming_every_one_and_the_roles_that_can_be_left_out(monkeypatch):
    monkeypatch.setenv("TOKENMETER_UP_WITHOUT", "worker,dashbord,broker,nosuch")
    monkeypatch.setenv("TOKENMETER_PARTITIONS", "0")  # another bad setting: reported in the same error
    with pytest.raises(SettingsError) as raised:
        load_settings()
    text = str(raised.value)
    assert "TOKENMETER_UP_WITHOUT" in text and "TOKENMETER_PARTITIONS" in text, text
    assert "worker, broker: always started (the core: broker, worker, loader)" in text, text
    assert "'dashbord': no such role (did you mean dashboard?)" in text and "'nosuch': no such role" in text, text
    assert "roles that can be left out: dashboard, alerts, anomalies, finance, inbox" in text, text
    monkeypatch.delenv("TOKENMETER_PARTITIONS")
    monkeypatch.setenv("TOKENMETER_UP_WITHOUT", "[dashboard")
    with pytest.raises(SettingsError, match="TOKENMETER_UP_WITHOUT: .*separated by commas, or a JSON list"):
        load_settings()


def test_the_option_names_itself_in_its_error_and_starts_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENMETER_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(main, ["up", "--without", "loader,dashboard,inbx"])
    assert result.exit_code == 2, result.output
    assert "Invalid value for --without: loader: always started (the core: broker, worker, loader); 'inbx': no such " \
           "role (did you mean inbox?); roles that can be left out: dashboard, alerts, anomalies, finance, inbox" \
           in " ".join(result.output.split()), result.output
    assert not (tmp_path / "data").exists()  # refused before anything started
    monkeypatch.setenv("TOKENMETER_UP_WITHOUT", "worker")  # the option overrides the variable, even when invalid
    result = CliRunner().invoke(main, ["up", "--without", "[dashboard"])
    assert result.exit_code == 2 and "--without" in result.output and "JSON list" in result.output, result.output


def test_a_demo_without_its_inbox_routes_no_alert_to_it_and_checks_no_port_it_does_not_open(monkeypatch, tmp_path):
    """`up --demo` routes every alert to its local inbox; left out, nothing is routed to an address nobody serves,
    and neither its port nor the dashboard's is checked (another program may hold them)."""
    from app.supervisor import Supervisor

    for name in ("TOKENMETER_ANOMALY_NOTIFY", "TOKENMETER_FINANCE_NOTIFY"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as inbox, socket.socket() as dash:
        inbox.bind(("127.0.0.1", 0))
        dash.bind(("127.0.0.1", 0))
        settings = load_settings(data_dir=tmp_path, demo_inbox_port=inbox.getsockname()[1],
                                 dash_port=dash.getsockname()[1], embedded_broker_port=free_port(),
                                 api_port=free_port(), up_without=("inbox", "dashboard"))
        sup = Supervisor(settings, demo=True, echo=lambda line: None)
        sup.preflight()  # no "port ... is already in use"
        assert sup.left_out == ("inbox", "dashboard")
        env = sup.child_env()
        assert "TOKENMETER_ANOMALY_NOTIFY" not in env and "TOKENMETER_FINANCE_NOTIFY" not in env
        with_inbox = Supervisor(load_settings(data_dir=tmp_path), demo=True, echo=lambda line: None).child_env()
        assert "/inbox" in with_inbox["TOKENMETER_ANOMALY_NOTIFY"]  # (as before, when it runs)
    plain = Supervisor(load_settings(data_dir=tmp_path, up_without=("inbox",)), demo=False, echo=lambda line: None)
    assert plain.left_out == ()  # no inbox to leave out without --demo: nothing to say about it


def test_the_backlog_line_says_a_left_out_dispatcher_is_not_a_stalled_one():
    from app.supervisor import STALLED_S, describe_stages
    from tokenmeter import topics

    sample = {"at": 1000.0, "backlog": {topics.USAGE: 0, topics.PRICED: 0, topics.ALERTS: 7},
              "progress_at": {topics.USAGE: 1000.0, topics.PRICED: 1000.0, topics.ALERTS: 1000.0}}
    now = 1000.0 + STALLED_S + 5
    assert f"alerts 7 (nothing committed for {STALLED_S + 5} s)" in describe_stages(sample, now)
    assert describe_stages(sample, now, ("alerts", "dashboard")).endswith("alerts 7 (left out of this `up`)")
