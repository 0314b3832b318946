import socket

import pytest
from click.testing import CliRunner

from app.cli import main
from tokenmeter.settings import SettingsError, ensure_port_free, load_settings


def test_defaults(monkeypatch):
    for var in ("TOKENMETER_KAFKA_BOOTSTRAP", "TOKENMETER_CLICKHOUSE_URL", "TOKENMETER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings()
    assert s.embedded_broker and s.bootstrap_servers == "127.0.0.1:9092"
    assert (s.dash_port, s.api_port, str(s.data_dir)) == (8050, 6066, ".tokenmeter")


def test_every_bad_variable_is_reported_at_once(monkeypatch):
    monkeypatch.setenv("TOKENMETER_DASH_PORT", "eighty")
    monkeypatch.setenv("TOKENMETER_PARTITIONS", "0")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "TOKENMETER_DASH_PORT" in str(err.value) and "TOKENMETER_PARTITIONS" in str(err.value)


def test_yaml_file_below_environment(monkeypatch, tmp_path):
    config = tmp_path / "tokenmeter.yaml"
    config.write_text("dash_port: 9000\napi_port: 9001\n")
    monkeypatch.setenv("TOKENMETER_CONFIG", str(config))
    monkeypatch.setenv("TOKENMETER_API_PORT", "7000")
    s = load_settings()
    assert (s.dash_port, s.api_port) == (9000, 7000)


def test_port_in_use_names_the_variable():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SettingsError, match="TOKENMETER_DASH_PORT"):
            ensure_port_free("127.0.0.1", port, "dash_port")


def test_cli_reports_a_busy_dashboard_port(monkeypatch):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        monkeypatch.setenv("TOKENMETER_DASH_PORT", str(busy.getsockname()[1]))
        result = CliRunner().invoke(main, ["dash"])
    assert result.exit_code != 0
    assert "TOKENMETER_DASH_PORT" in result.output


def test_consumer_group_timeouts(monkeypatch):
    """Every service's consumer group uses one session timeout: 10 s by default (the tests run with 4 s, see
    tests/conftest.py); the heartbeat stays well inside it."""
    monkeypatch.delenv("TOKENMETER_KAFKA_SESSION_TIMEOUT_SECONDS", raising=False)
    assert load_settings().group_timeouts == {"session_timeout_ms": 10_000, "heartbeat_interval_ms": 1000}
    monkeypatch.setenv("TOKENMETER_KAFKA_SESSION_TIMEOUT_SECONDS", "1.5")
    assert load_settings().group_timeouts == {"session_timeout_ms": 1500, "heartbeat_interval_ms": 500}
    monkeypatch.setenv("TOKENMETER_KAFKA_SESSION_TIMEOUT_SECONDS", "0.5")
    with pytest.raises(SettingsError, match="TOKENMETER_KAFKA_SESSION_TIMEOUT_SECONDS"):
        load_settings()


def test_consumer_fetch_wait(monkeypatch):
    """latency11: the embedded broker answers a waiting fetch only at its deadline, so 100 ms, not aiokafka's 500."""
    from tokenmeter.settings import fetch_wait

    monkeypatch.delenv("TOKENMETER_FETCH_MAX_WAIT_MS", raising=False)
    assert fetch_wait() == load_settings().fetch_wait == {"fetch_max_wait_ms": 100}
    monkeypatch.setenv("TOKENMETER_FETCH_MAX_WAIT_MS", "500")  # a Kafka cluster answers when data arrives
    assert fetch_wait() == {"fetch_max_wait_ms": 500}
    monkeypatch.setenv("TOKENMETER_FETCH_MAX_WAIT_MS", "0")
    with pytest.raises(SettingsError, match="TOKENMETER_FETCH_MAX_WAIT_MS"):
        load_settings()


def test_worker_role_is_validated_and_the_flag_wins(monkeypatch):
    """TOKENMETER_WORKER_ROLE: all (default), pricing or budgets (streams/worker.py); anything else is reported with
    the variable's name, and `tokenmeter worker --role` (a settings override) wins over the variable."""
    from tokenmeter.cli_support import cli_settings

    monkeypatch.delenv("TOKENMETER_WORKER_ROLE", raising=False)
    assert load_settings().worker_role == "all"
    monkeypatch.setenv("TOKENMETER_WORKER_ROLE", "owner")
    with pytest.raises(SettingsError, match="TOKENMETER_WORKER_ROLE"):
        load_settings()
    monkeypatch.setenv("TOKENMETER_WORKER_ROLE", "pricing")
    assert load_settings().worker_role == "pricing"
    assert cli_settings(worker_role="budgets").worker_role == "budgets"
    result = CliRunner().invoke(main, ["worker", "--role", "owner"])
    assert result.exit_code == 2 and "'owner' is not one of 'all', 'pricing', 'budgets'" in result.output


def test_priced_format_is_validated(monkeypatch):
    """TOKENMETER_PRICED_FORMAT (issue 14, loader11): arrow (the default since arrow19) or json; anything else is
    refused with the variable's name, never guessed (a worker writing a format its readers cannot read would
    dead-letter everything)."""
    monkeypatch.delenv("TOKENMETER_PRICED_FORMAT", raising=False)
    assert load_settings().priced_format == "arrow"  # the default since issue 14, arrow19
    monkeypatch.setenv("TOKENMETER_PRICED_FORMAT", "json")
    assert load_settings().priced_format == "json"
    for bad in ("ARROW", "parquet", "", "json,arrow", " arrow"):
        monkeypatch.setenv("TOKENMETER_PRICED_FORMAT", bad)
        with pytest.raises(SettingsError, match="TOKENMETER_PRICED_FORMAT"):
            load_settings()


@pytest.mark.parametrize("variable, attribute, default, good, parsed, bad", [
    # 0 (default) to 19: the Unix nice range a process may raise itself to (streams/priority.py applies it)
    ("TOKENMETER_WORKER_NICE", "worker_nice", 0, "10", 10, ("-5", "20", "low", "nan", "99999999999999999999")),
    # unset (the kernel's default) or 0.1-100 ms, the range the kernel accepts
    ("TOKENMETER_WORKER_SCHED_SLICE_MS", "worker_sched_slice_ms", None, "0.3", 0.3,
     ("0.01", "500", "short", "nan", "inf", "1e400")),
])
def test_worker_scheduling_settings_are_validated(monkeypatch, variable, attribute, default, good, parsed, bad):
    """reserve10's worker scheduling settings: the default, a good value, and every bad one reported with the
    variable's name."""
    monkeypatch.delenv(variable, raising=False)
    assert getattr(load_settings(), attribute) == default
    monkeypatch.setenv(variable, good)
    assert getattr(load_settings(), attribute) == parsed
    for value in bad:
        monkeypatch.setenv(variable, value)
        with pytest.raises(SettingsError, match=variable):
            load_settings()


@pytest.mark.parametrize("var, value", [("TOKENMETER_DEDUP_SOURCE_PREFERENCE", "otel,gateway"),
                                        ("TOKENMETER_FINANCE_NOTIFY", "slack=https://hooks.example/x"),
                                        ("TOKENMETER_AZURE_DEPLOYMENTS", "prod-4o: gpt-4o")])
def test_a_json_setting_that_is_not_json_names_the_variable_and_the_form(monkeypatch, var, value):
    """walk20: `TOKENMETER_DEDUP_SOURCE_PREFERENCE=otel,gateway` ended every command in a pydantic-settings
    traceback instead of the settings error that names the variable."""
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert var in str(err.value) and "JSON" in str(err.value)
    assert (value in str(err.value)) is (var != "TOKENMETER_FINANCE_NOTIFY")  # routes hold secrets (hostile24)
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 1 and var in result.output and "Traceback" not in result.output


def test_an_unknown_log_level_is_a_settings_error(monkeypatch):
    """walk20: TOKENMETER_LOG_LEVEL=loud passed and every service then died in logging.basicConfig."""
    monkeypatch.setenv("TOKENMETER_LOG_LEVEL", "loud")
    with pytest.raises(SettingsError, match="TOKENMETER_LOG_LEVEL"):
        load_settings()
    monkeypatch.setenv("TOKENMETER_LOG_LEVEL", "DEBUG")
    assert load_settings().log_level.upper() == "DEBUG"


@pytest.mark.parametrize("variable, value", [
    ("TOKENMETER_ANOMALY_NOTIFY", "slack=https://hooks.slack.com/services/T0/B0/HOOKSECRET1"),  # not JSON
    ("TOKENMETER_FINANCE_NOTIFY", "pagerduty=PDSECRETKEY0123456789abcdef0"),
    ("TOKENMETER_ANOMALY_NOTIFY", '[{"slack": "https://hooks.slack.com/services/T0/B0/HOOKSECRET1"}]'),  # wrong type
    ("TOKENMETER_FINANCE_NOTIFY", '"pagerduty=PDSECRETKEY0123456789abcdef0"'),
])
def test_a_bad_secret_bearing_variable_is_named_without_its_value(monkeypatch, variable, value):
    """hostile24: `up` with a route list that was not JSON printed the Slack URL / PagerDuty key in its error
    (`(got 'pagerduty=...')`), on the terminal and in compose's logs."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert variable in message and "not shown" in message, message
    assert "HOOKSECRET1" not in message and "PDSECRETKEY" not in message, message


def test_the_sources_in_their_order(monkeypatch, tmp_path):
    """floor28: the settings read their sources without pydantic-settings; what it did stays: a variable's name in any
    case, keyword overrides over variables over the YAML file, its keys in any case, a map merged key by key across
    the sources. (Unknown keys were ignored as pydantic-settings did; now refused: the tests below.)"""
    config = tmp_path / "tokenmeter.yaml"
    config.write_text("Dash_Port: 9000\napi_port: 9001\nazure_deployments: {a: gpt-4o, b: x}\n")
    monkeypatch.setenv("TOKENMETER_CONFIG", str(config))
    monkeypatch.setenv("tokenmeter_api_port", "7000")
    monkeypatch.setenv("TOKENMETER_AZURE_DEPLOYMENTS", '{"b": "gpt-4o-mini"}')
    s = load_settings(partitions=8)
    assert (s.dash_port, s.api_port, s.partitions) == (9000, 7000, 8)
    assert s.azure_deployments == {"a": "gpt-4o", "b": "gpt-4o-mini"}
    assert load_settings(api_port=7100).api_port == 7100


def test_deeply_nested_values_are_clear_errors_not_tracebacks(monkeypatch, tmp_path):
    """A list variable or a YAML file nested 100,000 deep raised RecursionError out of `json.loads` / PyYAML: every
    command ended in a traceback instead of naming the setting."""
    from tokenmeter.settings import SettingsError, load_settings

    monkeypatch.setenv("TOKENMETER_ANOMALY_NOTIFY", "[" * 100_000)
    with pytest.raises(SettingsError, match="TOKENMETER_ANOMALY_NOTIFY: must be JSON"):
        load_settings()
    monkeypatch.delenv("TOKENMETER_ANOMALY_NOTIFY")
    config = tmp_path / "deep.yaml"
    config.write_text("partitions: " + "[" * 100_000)
    monkeypatch.setenv("TOKENMETER_CONFIG", str(config))
    with pytest.raises(SettingsError, match="cannot read YAML"):
        load_settings()


def test_a_config_file_may_spell_its_keys_as_the_variables_are_named(monkeypatch, tmp_path):
    """docs/reference.md says a TOKENMETER_CONFIG file holds "the same names in lower case" as the variables: a file
    of `tokenmeter_dash_port: 9000` was read, the key taken for an unknown one and dropped without a word (the
    dashboard came up on 8050)."""
    config = tmp_path / "tokenmeter.yaml"
    config.write_text("tokenmeter_dash_port: 9000\nTOKENMETER_API_PORT: 9001\npartitions: 4\n")
    monkeypatch.setenv("TOKENMETER_CONFIG", str(config))
    s = load_settings()
    assert (s.dash_port, s.api_port, s.partitions) == (9000, 9001, 4)


def test_every_unknown_key_of_a_config_file_is_an_error_with_the_setting_meant(monkeypatch, tmp_path):
    """A typo in the config file (`dash_prot`, `webhook_secrte`) was ignored: the service started on its defaults
    (an unsigned webhook, the wrong port) and nothing said why. Every unknown key is reported at once, with the
    setting it is closest to; values are never shown (a misspelt secret's key still holds the secret)."""
    config = tmp_path / "tokenmeter.yaml"
    config.write_text("dash_prot: 9000\nwebhook_secrte: s3cr3t-value\napi_port: 9001\nno_such_setting: 1\n")
    monkeypatch.setenv("TOKENMETER_CONFIG", str(config))
    with pytest.raises(SettingsError) as err:
        load_settings()
    text = str(err.value)
    assert "dash_prot" in text and "dash_port" in text and "webhook_secrte" in text and "webhook_secret" in text
    assert "no_such_setting" in text and "s3cr3t-value" not in text and str(config) in text
    monkeypatch.setenv("TOKENMETER_CONFIG", str(config))
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 1 and "dash_prot" in result.output and "Traceback" not in result.output


def test_a_key_given_twice_in_a_config_file_is_an_error(monkeypatch, tmp_path):
    """PyYAML keeps the last of two equal keys without a word, so a file that set `dash_port` twice (or `dash_port`
    and `TOKENMETER_DASH_PORT`) ran on whichever came last."""
    config = tmp_path / "tokenmeter.yaml"
    for text in ("dash_port: 9000\ndash_port: 9001\n", "dash_port: 9000\nTOKENMETER_DASH_PORT: 9001\n",
                 "azure_deployments: {a: gpt-4o, a: gpt-4o-mini}\n"):
        config.write_text(text)
        monkeypatch.setenv("TOKENMETER_CONFIG", str(config))
        with pytest.raises(SettingsError, match="twice"):
            load_settings()


def test_a_yaml_merge_key_may_be_overridden_below_it(monkeypatch, tmp_path):
    """`<<: *base` then the same key set again is YAML's override, not a key given twice."""
    config = tmp_path / "tokenmeter.yaml"
    config.write_text("azure_deployments:\n  <<: {a: gpt-4o, b: gpt-4o}\n  b: gpt-4o-mini\ndash_port: 9000\n")
    monkeypatch.setenv("TOKENMETER_CONFIG", str(config))
    s = load_settings()
    assert s.azure_deployments == {"a": "gpt-4o", "b": "gpt-4o-mini"} and s.dash_port == 9000


@pytest.mark.parametrize("value, shown", [('["10.0.0.1/8"]', "'10.0.0.1/8' is not an IP address or CIDR network"),
                                          ('["proxy.internal"]', "'proxy.internal' is not an IP address"),
                                          ('["10.0.0.0/33"]', "'10.0.0.0/33' is not an IP address"),
                                          ('"10.0.0.1"', "valid list"),
                                          ('[10]', "valid string")])
def test_a_bad_trusted_proxy_is_a_settings_error_naming_the_variable(monkeypatch, value, shown):
    """proxy31: TOKENMETER_DASHBOARD_TRUSTED_PROXIES. 10.0.0.1/8 (host bits set) is refused, not read as 10.0.0.0/8:
    a typo in what decides whose X-Forwarded-For is believed must not widen it."""
    monkeypatch.setenv("TOKENMETER_DASHBOARD_TRUSTED_PROXIES", value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert "\n  TOKENMETER_DASHBOARD_TRUSTED_PROXIES" in message and shown in message, message
    assert "TRUSTED_PROXIES_" not in message, message  # the variable as it is spelt, not with an index glued on


def test_trusted_proxies_are_read_as_networks(monkeypatch):
    monkeypatch.delenv("TOKENMETER_DASHBOARD_TRUSTED_PROXIES", raising=False)
    assert load_settings().dashboard_trusted_proxies == []  # trust none: the client is the TCP peer
    monkeypatch.setenv("TOKENMETER_DASHBOARD_TRUSTED_PROXIES", '["10.0.0.0/8", " 172.18.0.2 ", "fd00::/8", "::1"]')
    assert load_settings().dashboard_trusted_proxies == ["10.0.0.0/8", "172.18.0.2/32", "fd00::/8", "::1/128"]


@pytest.mark.parametrize("variable, value", [("TOKENMETER_DEDUP_SOURCE_PREFERENCE", '["otel", 5]'),
                                             ("TOKENMETER_AZURE_DEPLOYMENTS", '{"prod": 4}')])
def test_a_bad_item_of_a_list_or_map_names_the_variable_as_it_is_spelt(monkeypatch, variable, value):
    """proxy31: the error named TOKENMETER_DEDUP_SOURCE_PREFERENCE_1 (the item's index glued to the name), a
    variable that does not exist; now the variable and then the item."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    line = str(raised.value).splitlines()[1]
    assert line.startswith(f"  {variable} (item ") or line.startswith(f"  {variable} (key "), line


def test_every_problem_of_every_source_is_reported_in_one_error(monkeypatch, tmp_path):
    """ops34: an operator's YAML file with a misspelt key, a list variable that was not JSON and a bad port were
    reported one kind at a time (the YAML keys, then the JSON, then the values): three restarts to learn three
    mistakes, while docs/reference.md says invalid settings are reported all at once."""
    config = tmp_path / "tokenmeter.yaml"
    config.write_text("dash_prot: 9000\npartitions: -3\n")
    monkeypatch.setenv("TOKENMETER_CONFIG", str(config))
    monkeypatch.setenv("TOKENMETER_DEDUP_SOURCE_PREFERENCE", "otel,gateway")
    monkeypatch.setenv("TOKENMETER_API_PORT", "abc")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    text = str(raised.value)
    for named in ("dash_prot", "TOKENMETER_DEDUP_SOURCE_PREFERENCE", "TOKENMETER_API_PORT", "TOKENMETER_PARTITIONS"):
        assert named in text, text


def test_a_bad_value_from_the_config_file_names_the_file(monkeypatch, tmp_path):
    """ops34: a bad value read from the YAML file was named only as its variable (`TOKENMETER_PARTITIONS: ... got
    -3`), which is set nowhere in the environment: the operator looked for it in the wrong place."""
    config = tmp_path / "tokenmeter.yaml"
    config.write_text("partitions: -3\n")
    monkeypatch.setenv("TOKENMETER_CONFIG", str(config))
    monkeypatch.setenv("TOKENMETER_DASH_PORT", "99999")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    lines = str(raised.value).splitlines()
    assert any("TOKENMETER_PARTITIONS" in line and str(config) in line for line in lines), lines
    assert any("TOKENMETER_DASH_PORT" in line and str(config) not in line for line in lines), lines


@pytest.mark.parametrize("source", ["env", "file"])
def test_a_bad_clickhouse_url_is_named_without_its_password(monkeypatch, tmp_path, source):
    """ops34: TOKENMETER_CLICKHOUSE_URL holds the server's password (compose: http://tokenmeter:<password>@...); a
    value of the wrong type was echoed whole in the settings error, on the terminal and in the container's log."""
    if source == "file":
        config = tmp_path / "tokenmeter.yaml"
        config.write_text("clickhouse_url:\n  - http://tokenmeter:hunter2pw@clickhouse:8123/tokenmeter\n")
        monkeypatch.setenv("TOKENMETER_CONFIG", str(config))
    else:
        monkeypatch.setenv("TOKENMETER_CLICKHOUSE_URL", "http://tokenmeter:hunter2pw@clickhouse:8123/tokenmeter")
        monkeypatch.setenv("TOKENMETER_PARTITIONS", "0")  # so that the error is raised at all
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "hunter2pw" not in str(raised.value), str(raised.value)
