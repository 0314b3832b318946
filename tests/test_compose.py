"""No Docker engine here: check docker-compose.yml against the code instead (services, commands, variables)."""

import re
from pathlib import Path

import yaml

from app.cli import main
from tokenmeter.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]
OUR_SERVICES = {"topics", "worker", "budgets", "loader", "dashboard", "alerts", "anomalies", "finance-watch", "collector-http",
                "collector-otel-kafka"}


def load_compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_production_services():
    services = load_compose()["services"]
    assert {"kafka", "clickhouse"} | OUR_SERVICES <= set(services)
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert services["worker"]["deploy"]["replicas"] >= 2  # scalable


def test_worker_roles_are_split_between_pricing_and_budgets():
    """Production runs the pricing and the budgets roles as two services (two consumer groups), never role all."""
    from streams.worker import ROLE_APP_IDS

    services = load_compose()["services"]
    roles = {name: services[name]["command"][services[name]["command"].index("--role") + 1]
             for name in ("worker", "budgets")}
    assert roles == {"worker": "pricing", "budgets": "budgets"}
    assert ROLE_APP_IDS["pricing"] != ROLE_APP_IDS["budgets"]
    assert services["budgets"]["deploy"]["replicas"] >= 2  # a budget's owner can fail over
    assert "tokenmeter-data:/data" in services["budgets"]["volumes"]  # admin token and notify secrets
    assert not any(s.get("command", [None])[0] == "worker" and "--role" not in s["command"]
                   for s in services.values() if isinstance(s.get("command"), list))


def test_our_services_run_real_commands_with_known_settings(monkeypatch):
    services = load_compose()["services"]
    settings_vars = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    for name in OUR_SERVICES:
        service = services[name]
        command = main
        for word in service["command"]:  # walk `collect http` down to the command that runs
            if word.startswith("-") or not hasattr(command, "commands"):
                break
            found = command.get_command(None, word)  # stage commands are imported when asked for (app/cli.py)
            assert found is not None, f"{name}: unknown command {service['command']}"
            command = found
        # A variable is either a setting or the env fallback of one of this command's own options.
        option_vars = {p.envvar for p in command.params if getattr(p, "envvar", None)}
        env = service["environment"]
        unknown = {k for k in env if k.startswith(ENV_PREFIX)} - settings_vars - option_vars - {"TOKENMETER_HEARTBEAT_FILE"}
        assert not unknown, f"{name}: variables the settings code does not read: {unknown}"
        # Production points at the real Kafka and ClickHouse, not the embedded defaults.
        assert env["TOKENMETER_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["TOKENMETER_CLICKHOUSE_URL"].startswith("http")
        with monkeypatch.context() as m:  # as the container reads them: from its environment, `${X:-default}` resolved
            for key, value in env.items():
                m.setenv(key, re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value)))
            assert Settings().embedded_broker is False


def test_dockerfile_installs_every_stage():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("tokenmeter", "collectors", "streams", "warehouse", "dashboards"):
        assert f"COPY {package} {package}" in dockerfile


def test_the_dashboard_and_finance_watch_have_what_they_read():
    """walk21: the dashboard ran without the data volume, so its users file (the `admin` password printed once),
    `docker compose run --rm dashboard users add ...` and the closed months (`<data_dir>/closes`, which exports and
    showback of a closed month read) lived in a container of their own; and nothing ran `finance-watch`, which
    `up` runs, so drift and completeness never alerted in production."""
    services = load_compose()["services"]
    assert "tokenmeter-data:/data" in services["dashboard"]["volumes"]
    watch = services["finance-watch"]
    assert watch["command"][0] == "finance-watch" and "tokenmeter-data:/data" in watch["volumes"]
    assert watch["depends_on"]["clickhouse"] == {"condition": "service_healthy"}


def test_the_anomaly_detector_keeps_its_baselines_across_a_redeploy():
    """The detector saves its engine (weeks of learnt baselines) and the offsets it reflects to
    `<data_dir>/anomalies/engine.json`; without the data volume that file lived in the container, so every
    `docker compose up -d --build` (a new container) started from the committed offsets with an empty engine:
    no baselines, so weeks of warm-up with its alerts off or wrong."""
    detector = load_compose()["services"]["anomalies"]
    assert "tokenmeter-data:/data" in detector.get("volumes", [])


def test_anomaly_and_finance_routes_are_the_dispatchers():
    """leak21: the detector and finance-watch publish their alerts without routes (a route is a secret and every
    client of tokenmeter.alerts reads the records); the dispatcher (`alerts`) delivers them to its own settings.
    Compose set them (in comments) on `anomalies` and `finance-watch`, where they are no longer read."""
    services = load_compose()["services"]
    for name in ("TOKENMETER_ANOMALY_NOTIFY", "TOKENMETER_FINANCE_NOTIFY"):
        assert services["alerts"]["environment"][name] == f"${{{name}:-[]}}"
        assert name not in services["anomalies"]["environment"] and name not in services["finance-watch"]["environment"]


def test_every_source_topic_a_bridge_reads_is_created_by_the_topics_job():
    """walk30: the Kafka service runs with KAFKA_AUTO_CREATE_TOPICS_ENABLE "false" and `collector-otel-kafka` bridges
    `otlp_spans`, which nothing created: the OpenTelemetry Collector's kafka exporter does not create topics (they
    must exist, or the cluster must auto-create them), so its exports failed and the bridge waited on a topic that
    never came. The `topics` job creates each bridge's source topic too (`tokenmeter topics --source-topic T`)."""
    services = load_compose()["services"]
    assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    read = {command[command.index("--topic") + 1] for command in (s.get("command") or [] for s in services.values())
            if command[:2] == ["collect", "kafka"]}
    assert read  # the OTel bridge
    created = services["topics"]["command"]
    assert created[0] == "topics"
    assert read <= {created[i + 1] for i, word in enumerate(created) if word == "--source-topic"}


def test_every_kafka_bridge_keeps_its_pending_batches_on_the_data_volume():
    """walk30 noticed: `collect kafka` records each batch it sends as pending under `<data_dir>/collect-kafka/`
    before the produce and clears it after the commit; a restarted bridge reads it to skip the part already sent.
    `collector-otel-kafka` had no data volume, so that record lived in the container and a recreated container
    (`docker compose up -d` after an image change, a crash that the engine replaces) sent the batch again."""
    services = load_compose()["services"]
    bridges = {name: s for name, s in services.items() if (s.get("command") or [])[:2] == ["collect", "kafka"]}
    assert bridges
    for name, bridge in bridges.items():
        assert "tokenmeter-data:/data" in bridge.get("volumes", []), name


# The probe each HTTP-serving service answers (docs/production.md "What to monitor"), by its port's variable.
HTTP_PROBES = {"worker": ("TOKENMETER_API_PORT", "/health"), "budgets": ("TOKENMETER_API_PORT", "/health"),
               "dashboard": ("TOKENMETER_DASH_PORT", "/healthz"), "collector-http": ("TOKENMETER_COLLECT_PORT", "/healthz"),
               "alerts": ("TOKENMETER_ALERTS_PORT", "/health")}


def test_every_service_that_serves_http_has_a_healthcheck_on_its_probe():
    """Only kafka and clickhouse had healthchecks: `docker compose ps` said nothing of a worker whose agents failed or
    a dashboard that hung, and the alert dispatcher served no probe at all under compose (no TOKENMETER_ALERTS_PORT).
    The check runs the image's Python (slim images have no curl); urlopen raises on a 503, so unhealthy is exit 1."""
    services = load_compose()["services"]
    for name, (variable, path) in HTTP_PROBES.items():
        service = services[name]
        port = service["environment"].get(variable)
        assert port and port.isdigit(), f"{name}: {variable} not set"
        check = service.get("healthcheck")
        assert check, f"{name}: no healthcheck"
        command = check["test"]
        assert command[:3] == ["CMD", "python", "-c"], f"{name}: {command}"
        assert f"http://127.0.0.1:{port}{path}" in command[3], f"{name}: probes {command[3]}"
        compile(command[3], name, "exec")
        assert check.get("interval") and check.get("retries")


HEARTBEAT_ROLES = ("loader", "anomalies", "finance-watch", "collector-otel-kafka")


def test_every_long_running_service_without_http_is_checked_by_its_heartbeat(tmp_path):
    """The loader, the detector, finance-watch and the OTel bridge serve nothing over HTTP, so compose saw them
    'running' with a blocked event loop (the warehouse or the alerts falling behind). Under compose their loop
    touches TOKENMETER_HEARTBEAT_FILE as under `up` (tokenmeter/heartbeat.py), and the healthcheck's own command,
    run here, passes on a fresh file and fails on one 60 s old or missing."""
    import os
    import subprocess
    import sys
    import time

    from tokenmeter.heartbeat import HEARTBEAT_FILE_ENV

    services = load_compose()["services"]
    for name in HEARTBEAT_ROLES:
        service = services[name]
        path = service["environment"].get(HEARTBEAT_FILE_ENV)
        assert path, f"{name}: no {HEARTBEAT_FILE_ENV}"
        command = service["healthcheck"]["test"]
        assert command[:3] == ["CMD", "python", "-c"] and repr(path) in command[3], f"{name}: {command}"
        beat = tmp_path / name
        local = command[3].replace(repr(path), repr(str(beat)))

        def check() -> int:
            return subprocess.run([sys.executable, "-c", local], capture_output=True).returncode

        assert check() != 0  # missing
        beat.touch()
        assert check() == 0
        os.utime(beat, (time.time() - 60, time.time() - 60))
        assert check() != 0
