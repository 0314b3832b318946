"""`tokenmeter up` can leave out its optional roles (roles37): a headless host without the dashboard, a site whose
anomaly detection or alert dispatching runs elsewhere. `up --without` / TOKENMETER_UP_WITHOUT name them; the
broker, the worker and the loader are the core and cannot be left out. What is left out is never started, never
awaited, and said so by `up` and `tokenmeter status`, so nobody takes it for a role that died: a real `up` without
roles is checked on tests/test_supervisor.py's stack (its own `up` here would cost a whole start, ~6 CPU-s); its
stop without them in tests/test_supervisor_stop_drain.py."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from app.cli import main
from tokenmeter.settings import SettingsError, free_port, load_settings


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


@pytest.mark.parametrize("value", ['[1]', '[{"a": 2}]', '[["dashboard"]]', '["dashboard", null]'])
def test_a_json_list_of_other_than_names_is_a_settings_error_not_a_crash(monkeypatch, tmp_path, value):
    """Review of roles37: a JSON list holding a number, an object or a list crashed every process that read its
    settings (`TypeError: unhashable type: 'dict'` from `tokenmeter status` on), and `up --without` the same."""
    monkeypatch.setenv("TOKENMETER_UP_WITHOUT", value)
    with pytest.raises(SettingsError, match="TOKENMETER_UP_WITHOUT: .*role names"):
        load_settings()
    monkeypatch.delenv("TOKENMETER_UP_WITHOUT")
    monkeypatch.setenv("TOKENMETER_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(main, ["up", "--without", value])
    assert result.exit_code == 2 and "Invalid value for --without" in result.output and "role names" in result.output, \
        (result.output, result.exception)
    assert not (tmp_path / "data").exists()
