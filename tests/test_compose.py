"""No Docker engine here: check docker-compose.yml against the code instead (services, commands, variables)."""

from pathlib import Path

import yaml

from tokenmeter.cli import main
from tokenmeter.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]
OUR_SERVICES = {"topics", "worker", "loader", "dashboard"}


def load_compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_production_services():
    services = load_compose()["services"]
    assert {"kafka", "clickhouse"} | OUR_SERVICES <= set(services)
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert services["worker"]["deploy"]["replicas"] >= 2  # scalable


def test_our_services_run_real_commands_with_known_settings():
    services = load_compose()["services"]
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    for name in OUR_SERVICES:
        service = services[name]
        assert service["command"][0] in main.commands, f"{name}: unknown command {service['command']}"
        env = service["environment"]
        unknown = {k for k in env if k.startswith(ENV_PREFIX)} - known
        assert not unknown, f"{name}: variables the settings code does not read: {unknown}"
        # Production points at the real Kafka and ClickHouse, not the embedded defaults.
        assert env["TOKENMETER_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["TOKENMETER_CLICKHOUSE_URL"].startswith("http")
        assert Settings(**{k[len(ENV_PREFIX):].lower(): v for k, v in env.items()}).embedded_broker is False


def test_dockerfile_installs_every_stage():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("tokenmeter", "collectors", "streams", "warehouse", "dashboards"):
        assert f"COPY {package} {package}" in dockerfile
