"""Wrong invocations a new user makes (walk20): each ends with a message that says what is wrong and how to fix
it, exit status 1 or 2, and no Python traceback. In-process through the CLI root (`app.cli.main`), so the root's
handling of settings errors is part of what is tested; nothing here reaches Kafka or a warehouse."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import main


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # A Kafka address nobody listens on: a command that got as far as Kafka would fail differently (and slowly).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    return {"TOKENMETER_DATA_DIR": str(tmp_path / "data"), "TOKENMETER_KAFKA_BOOTSTRAP": f"127.0.0.1:{dead_port}"}


@pytest.fixture
def taken_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _clean_failure(result, *needles: str) -> str:
    # click's own errors are SystemExit; anything else escaping the command is the traceback a user would see
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (1, 2), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output
    return result.output


def test_collect_http_on_a_port_in_use_names_the_option_to_change(env, taken_port):
    result = CliRunner().invoke(main, ["collect", "http", "--port", str(taken_port)], env=env)
    _clean_failure(result, f"port {taken_port}", "already in use", "--port", "TOKENMETER_COLLECT_PORT")


def test_alerts_dispatch_on_a_port_in_use_names_the_variable(env, taken_port):
    result = CliRunner().invoke(main, ["alerts", "dispatch"], env={**env, "TOKENMETER_ALERTS_PORT": str(taken_port)})
    _clean_failure(result, f"port {taken_port}", "already in use", "TOKENMETER_ALERTS_PORT")


def test_export_into_a_missing_directory_says_so_before_querying(env, tmp_path):
    out = tmp_path / "no-such-dir" / "nov.csv"
    result = CliRunner().invoke(main, ["export", "--month", "2026-11", "--out", str(out)], env=env)
    _clean_failure(result, str(out.parent), "does not exist")
    assert not (tmp_path / "data" / "warehouse").exists()  # failed before opening the warehouse


def test_collect_file_exit_at_eof_on_a_missing_file_is_an_error(env, tmp_path):
    missing = tmp_path / "kong-ai.log"
    result = CliRunner().invoke(main, ["collect", "file", str(missing), "--dialect", "kong", "--exit-at-eof"],
                                env=env)
    _clean_failure(result, str(missing), "does not exist")


@pytest.mark.parametrize("command", [["showback", "--month", "2026-11"], ["export", "--month", "2026-11"]])
def test_a_missing_cost_centers_file_names_its_variable(env, tmp_path, command):
    missing = tmp_path / "finance.yaml"
    result = CliRunner().invoke(main, command, env={**env, "TOKENMETER_COST_CENTERS_FILE": str(missing)})
    _clean_failure(result, str(missing), "cannot read", "TOKENMETER_COST_CENTERS_FILE")


def test_report_against_an_unreachable_clickhouse_is_a_clear_error(env):
    # port 1: refused at once, so this is quick
    result = CliRunner().invoke(main, ["report"], env={**env, "TOKENMETER_CLICKHOUSE_URL": "http://127.0.0.1:1/db"})
    _clean_failure(result, "cannot connect to ClickHouse", "TOKENMETER_CLICKHOUSE_URL")


def test_budget_rebuild_without_a_broker_is_a_clear_error(env):
    result = CliRunner().invoke(main, ["budget", "rebuild"], env=env)
    _clean_failure(result, "no Kafka broker answers")


def test_price_with_a_missing_overrides_file_names_the_variable(env, tmp_path):
    missing = tmp_path / "overrides.yaml"
    line = ('{"event_id":"a1","ts":"2026-11-01T10:00:00Z","source":"sdk","provider":"openai","model":"gpt-4o",'
            '"usage":{"input_tokens":10,"output_tokens":5}}\n')
    result = CliRunner().invoke(main, ["price"], input=line, env={**env, "TOKENMETER_PRICE_OVERRIDES": str(missing)})
    _clean_failure(result, str(missing), "TOKENMETER_PRICE_OVERRIDES")


def test_a_host_that_is_not_this_machines_is_not_called_a_port_in_use(env):
    result = CliRunner().invoke(main, ["dash"], env={**env, "TOKENMETER_HOST": "192.0.2.1"})  # TEST-NET-1
    output = _clean_failure(result, "192.0.2.1", "TOKENMETER_HOST")
    assert "already in use" not in output


def test_an_empty_webhook_secret_is_unset_and_said_so(env):
    """walk21: docker-compose.yml passes `TOKENMETER_WEBHOOK_SECRET: ${TOKENMETER_WEBHOOK_SECRET:-}`, i.e. an empty
    string when the operator set none. Empty was taken as a secret: webhooks went out unsigned (an empty key signs
    nothing) and neither `alerts test` nor the dispatcher said so, as they do when the variable is unset."""
    from tokenmeter.settings import load_settings

    with socket.socket() as sock:  # a webhook nobody answers: refused at once, one attempt
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    result = CliRunner().invoke(main, ["alerts", "test", "--notify", f"webhook=http://127.0.0.1:{dead}/hook",
                                       "--attempts", "1"], env={**env, "TOKENMETER_WEBHOOK_SECRET": ""})
    assert "webhooks are sent unsigned" in result.output, result.output
    for name in ("webhook_secret", "admin_token", "dashboard_secret_key"):
        assert getattr(load_settings(**{name: " "}), name) is None, name


def test_a_report_range_whose_start_is_not_before_its_end_is_refused(env):
    """walk23: `report --since 2026-12-05 --until 2026-12-01` answered "(no rows)", exit 0: a finance analyst who
    swapped the dates read that nothing was spent (the dashboard swaps such a range; `reprice` refused it already)."""
    result = CliRunner().invoke(main, ["report", "--since", "2026-12-05", "--until", "2026-12-01"], env=env)
    _clean_failure(result, "--until", "2026-12-01", "2026-12-05")


@pytest.mark.parametrize("args, needles", [
    (["--group-by", "tag:"], ["tag:", "needs a tag key"]),
    (["--group-by", "team,nope"], ["nope", "tag:<key>"]),
    (["--group-by", "tag:env,tag:env"], ["listed twice"]),
    (["--group-by", "tag:env", "--cost-lines"], ["--cost-lines", "tag:env"]),
])
def test_report_refuses_a_grouping_it_cannot_answer_before_opening_the_warehouse(env, args, needles):
    result = CliRunner().invoke(main, ["report", *args], env=env)
    _clean_failure(result, *needles)


def test_demo_inbox_on_a_port_in_use_names_the_variable(env, taken_port):
    """walk30: `tokenmeter demo-inbox` beside a running `up --demo` ended in aiohttp's OSError traceback ("error
    while attempting to bind"), while every other server command names the variable to change."""
    result = CliRunner().invoke(main, ["demo-inbox"], env={**env, "TOKENMETER_DEMO_INBOX_PORT": str(taken_port)})
    _clean_failure(result, f"port {taken_port}", "already in use", "TOKENMETER_DEMO_INBOX_PORT")


def test_load_beside_the_warehouse_owner_is_a_clear_error(env, tmp_path, monkeypatch):
    """walk30: a second `tokenmeter load` while `up`'s loader owns the warehouse waited its 60 s for the owner,
    then ended in a WarehouseLocked traceback. The wait is the loader's (a reader opening chDB lets go within
    seconds); only its length is shortened here. The owner is a live process named in the endpoint file, as the
    loader writes it."""
    import subprocess
    import sys

    from warehouse import loader
    from warehouse.endpoint import endpoint_path

    monkeypatch.setattr(loader, "OWNER_WAIT_SECONDS", 0.5)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        endpoint_path(data_dir).write_text(f'{{"url": "http://127.0.0.1:1", "pid": {owner.pid}}}')
        result = CliRunner().invoke(main, ["load"], env=env)
    finally:
        owner.kill()
        owner.wait()
    _clean_failure(result, "owned by another process", "stop it")


@pytest.mark.parametrize("command", ["summary", "show", "replay"])
def test_an_unreadable_deadletters_since_names_both_forms(env, command):
    """walk30: `deadletters show --since yesterday` answered "'yesterday' is not an ISO 8601 / RFC 3339 time", while
    the option's help (and the default, 24h) is a span back from now: the error named only one of the two forms."""
    extra = ["--stage", "worker"] if command == "replay" else []
    result = CliRunner().invoke(main, ["deadletters", command, "--since", "yesterday", *extra], env=env)
    _clean_failure(result, "--since", "'yesterday'", "24h", "ISO 8601")


def test_price_with_an_unknown_dialect_is_refused_once_before_reading(env):
    """walk30: `price --dialect nope` printed the same "unknown dialect" error for every input line (a million
    lines: a million errors) and exit 1, instead of refusing the option once, as `collect file --dialect` does."""
    line = ('{"event_id":"a1","ts":"2026-11-01T10:00:00Z","source":"sdk","provider":"openai","model":"gpt-4o",'
            '"usage":{"input_tokens":10,"output_tokens":5}}\n')
    result = CliRunner().invoke(main, ["price", "--dialect", "nope"], input=line * 3, env=env)
    output = _clean_failure(result, "--dialect", "'nope'", "kong", "litellm")
    assert result.exit_code == 2 and output.count("nope") == 1, output
    auto = CliRunner().invoke(main, ["price", "--dialect", "auto"], input=line, env=env)
    assert auto.exit_code == 0 and '"cost_usd"' in auto.output, auto.output


@pytest.mark.parametrize("command", [["anomalies", "mutes"], ["demo", "--events", "5"]])
def test_commands_without_a_broker_say_so_without_a_traceback(env, command):
    """walk30: with the stack stopped, `anomalies mutes` and `demo` ended in aiokafka's KafkaConnectionError
    traceback ("Unable to bootstrap from ..."), while `anomalies ack`, `budget list` and the other Kafka commands
    say that no broker answers and what to do."""
    result = CliRunner().invoke(main, command, env=env)
    _clean_failure(result, "no Kafka broker answers", "tokenmeter up")


@pytest.mark.parametrize("command", [["load"], ["alerts", "dispatch"], ["anomalies", "run"],
                                     ["collect", "kafka", "--topic", "kong-ai-logs", "--dialect", "kong"]])
def test_services_without_a_broker_say_so_without_a_traceback(env, command):
    """walk30: started against a Kafka that does not answer (compose before its broker is up, a wrong
    TOKENMETER_KAFKA_BOOTSTRAP), the loader, the alert dispatcher, the anomaly detector and the Kafka bridge ended in
    aiokafka's KafkaConnectionError traceback. They exit 1 saying that no broker answers there and what to do."""
    result = CliRunner().invoke(main, command, env=env)
    _clean_failure(result, "no Kafka broker answers at " + env["TOKENMETER_KAFKA_BOOTSTRAP"], "TOKENMETER_KAFKA_BOOTSTRAP")


def test_worker_without_a_broker_says_so_without_a_traceback(env):
    """walk30: `tokenmeter worker` against a Kafka that does not answer logged Faust's KafkaConnectionError traceback
    (mode's worker) and exited 1; it now checks the listener first and says what the other services say."""
    env = {**env, "TOKENMETER_API_PORT": str(_free_port())}
    result = CliRunner().invoke(main, ["worker"], env=env)
    _clean_failure(result, "no Kafka broker answers at " + env["TOKENMETER_KAFKA_BOOTSTRAP"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("command", [["load"], ["anomalies", "run"]])
def test_services_without_a_broker_leave_no_unclosed_client_behind(env, command):
    """walk30 noticed: after their clear error, `load` and `anomalies run` logged asyncio's "Unclosed AIOKafkaConsumer"
    (a client made but never started, because the one started before it failed, was never closed): an error line
    that reads like a second failure. A real process: the warning comes from the garbage collector at exit."""
    import os
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "app", *command], env={**os.environ, **env, "PYTHONPATH": str(
        Path(__file__).resolve().parents[1])}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "no Kafka broker answers" in run.stderr, run.stderr[-2000:]
    assert "Unclosed" not in run.stderr + run.stdout, run.stderr[-2000:]
