"""`tokenmeter anomalies ack|mute|unmute|mutes` against the real broker (anom24): the on-call engineer paged in Slack
or PagerDuty acts from a terminal with what the alert names (anomaly id, kind, scope), as the dashboard's buttons do."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from streams.anomalies.acks import read_mutes
from streams.anomalies.cli import anomalies

pytestmark = pytest.mark.slow(seconds=3)  # rough seconds: longest files first (tests/suite_order.py)


@pytest.mark.timeout(90)
def test_mute_unmute_and_ack_from_the_command_line(kafka_bootstrap):
    key = f"key-{uuid.uuid4().hex[:6]}"
    env = {"TOKENMETER_KAFKA_BOOTSTRAP": kafka_bootstrap}
    target = ["anomaly-cli", "--kind", "spend_rate", "--scope", f"api_key={key}", "--by", "dana"]
    run = CliRunner().invoke
    muted = run(anomalies, ["mute", *target, "--hours", "2", "--note", "known load test"], env=env)
    assert muted.exit_code == 0, muted.output
    assert f"muted spend_rate on api_key={key} until" in muted.output and "anomalies unmute anomaly-cli" in muted.output
    now = datetime.now(timezone.utc)
    table = asyncio.run(read_mutes(kafka_bootstrap))
    assert table.muted("spend_rate", "api_key", key, now) and not table.muted("token_rate", "api_key", key, now)
    assert not table.muted("spend_rate", "api_key", key, now + timedelta(hours=2, minutes=1))  # --hours 2 expires
    listed = run(anomalies, ["mutes"], env=env)
    assert listed.exit_code == 0 and f"api_key={key}" in listed.output
    assert run(anomalies, ["ack", *target], env=env).exit_code == 0
    table = asyncio.run(read_mutes(kafka_bootstrap))
    assert table.acked["anomaly-cli"]["by"] == "dana" and table.muted("spend_rate", "api_key", key, now)
    assert run(anomalies, ["unmute", *target], env=env).exit_code == 0
    assert not asyncio.run(read_mutes(kafka_bootstrap)).muted("spend_rate", "api_key", key, datetime.now(timezone.utc))


def test_a_scope_not_written_as_the_alert_names_it_is_refused():
    result = CliRunner().invoke(anomalies, ["mute", "a", "--kind", "spend_rate", "--scope", "search-k1"])
    assert result.exit_code == 2 and "DIM=VALUE" in result.output


def test_a_stopped_stack_is_said_in_one_line():
    result = CliRunner().invoke(anomalies, ["ack", "a", "--kind", "spend_rate", "--scope", "team=x"],
                                env={"TOKENMETER_KAFKA_BOOTSTRAP": "127.0.0.1:9"})
    assert result.exit_code == 1 and "not recorded:" in result.output and "Traceback" not in result.output
