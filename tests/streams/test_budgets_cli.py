"""`tokenmeter budget` CRUD against the real (shared) broker; names are unique per test run."""

import uuid

import orjson
import pytest
from click.testing import CliRunner

from streams.budgets import load_budgets
from streams.budgets.cli import budget

PD_KEY = "b" * 32


@pytest.fixture
def run(kafka_bootstrap):
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(budget, list(args), env={"TOKENMETER_KAFKA_BOOTSTRAP": kafka_bootstrap})

    return invoke


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_set_list_delete(run, kafka_bootstrap):
    name = unique("search")
    result = run("set", name, "--scope", "team=search,tag:env=prod", "--period", "month", "--tz", "Europe/Berlin",
                 "--limit-usd", "100.25", "--thresholds", "50,80,100", "--action", "block",
                 "--notify", "slack=https://hooks.slack.com/services/T/B/x", "--notify", f"pagerduty={PD_KEY}",
                 "--notify", "webhook=http://127.0.0.1:9/hook")
    assert result.exit_code == 0, result.output
    stored = load_budgets(kafka_bootstrap)[name]
    assert str(stored.limit) == "100.25"
    assert stored.scope == {"team": "search", "tag:env": "prod"} and stored.action == "block"

    listed = run("list", "--format", "json")
    assert listed.exit_code == 0, listed.output
    entry = next(b for b in orjson.loads(listed.output) if b["name"] == name)
    assert entry["limit"] == "100.25" and entry["tz"] == "Europe/Berlin"
    table = run("list")
    assert name in table.output and "100.25 USD" in table.output
    assert "spend_before_definition: pending" in table.output and "budget rebuild --all" in table.output  # walk33

    assert run("set", name, "--scope", "team=search", "--limit-tokens", "5000").exit_code == 0  # replace
    assert load_budgets(kafka_bootstrap)[name].limit == 5000

    deleted = run("delete", name)
    assert deleted.exit_code == 0, deleted.output
    assert name not in load_budgets(kafka_bootstrap)
    missing = run("delete", name)
    assert missing.exit_code != 0 and "no budget named" in missing.output


def test_invalid_input_lists_every_problem_and_writes_nothing(run, kafka_bootstrap):
    name = unique("bad")
    result = run("set", name, "--scope", "teem=x", "--period", "fortnight", "--tz", "Mars/X", "--limit-usd", "-1",
                 "--action", "nuke", "--notify", "pagerduty=short")
    assert result.exit_code != 0
    for field in ("scope", "period", "tz", "limit", "action", "notify"):
        assert f"{field}:" in result.output, result.output
    assert run("set", name, "--limit-usd", "1", "--limit-tokens", "5").exit_code != 0
    assert run("set", name, "--scope", "team", "--limit-usd", "1").exit_code != 0
    assert name not in load_budgets(kafka_bootstrap)


def test_apply_yaml_file(run, kafka_bootstrap, tmp_path):
    a, b = unique("apply-a"), unique("apply-b")
    good = tmp_path / "budgets.yaml"
    good.write_text(f"""
- name: {a}
  scope: {{team: search}}
  limit: "50"
  period: week
  tz: America/New_York
  action: throttle
- name: {b}
  scope: {{user: ana, model: gpt-4o}}
  metric: tokens
  limit: 100000
  period: rolling:24h
  notify: ["webhook=https://example.com/hook"]
""")
    result = run("apply", str(good))
    assert result.exit_code == 0, result.output
    budgets = load_budgets(kafka_bootstrap)
    assert budgets[a].period == "week" and budgets[b].rolling_hours == 24

    bad = tmp_path / "bad.yaml"
    c = unique("apply-c")
    bad.write_text(f"- name: {c}\n  scope: {{team: x}}\n  limit: '1'\n- name: '{c} 2'\n  limit: 1.5\n")
    failed = run("apply", str(bad))
    assert failed.exit_code != 0 and "name:" in failed.output and "not a float" in failed.output
    assert c not in load_budgets(kafka_bootstrap)  # all or nothing
    assert run("apply", str(tmp_path / "missing.yaml")).exit_code != 0


@pytest.mark.parametrize("args", [("list",), ("set", "b1", "--limit-usd", "1"), ("delete", "b1")])
def test_without_a_broker_the_error_says_what_to_do(args, tmp_path):
    """`tokenmeter budget list` with the stack stopped ended in `KafkaConnectionError("Unable to bootstrap from
    [('127.0.0.1', 9092, <AddressFamily.AF_INET: 2>)]")`: now it names the cause and the two ways out."""
    from tokenmeter.settings import free_port

    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = CliRunner().invoke(budget, list(args), env={"TOKENMETER_KAFKA_BOOTSTRAP": bootstrap,
                                                         "TOKENMETER_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1, result.output
    assert f"no Kafka broker answers at {bootstrap}; start the stack (`tokenmeter up`)" in result.output, result.output
    assert "TOKENMETER_KAFKA_BOOTSTRAP" in result.output and "AddressFamily" not in result.output
