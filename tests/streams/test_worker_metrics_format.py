"""The worker's /metrics as a Prometheus scraper reads it (ops34): every family declared with its TYPE, counters
named `_total`, and the dead-letter counter moving on bad input. Before, `tokenmeter_worker_priced_total`,
`tokenmeter_worker_deadletter_total`, `tokenmeter_worker_agents_failing`, `tokenmeter_budgets` and
`tokenmeter_reservation_holds_open` had no TYPE line: untyped, which the OpenTelemetry Collector's and Grafana
Agent's Prometheus receivers turn into gauges (a dead-letter rate alert then reads a gauge)."""

from __future__ import annotations

import re
import urllib.request
import uuid

import pytest

from tests.streams.test_worker_poison import health, produce, start_worker, stop, wait_for
from tokenmeter import topics
from tokenmeter.settings import free_port

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.eE+]+|NaN|[+-]Inf)$")


def _families(text: str) -> tuple[dict[str, str], list[tuple[str, float]]]:
    types, samples = {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name not in types, f"{name} declared twice"
            types[name] = kind
        elif line and not line.startswith("#"):
            match = _SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            assert match[1] in types, f"{match[1]} has no TYPE line (declared: {sorted(types)})"
            samples.append((match[1], float(match[3])))
    return types, samples


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    """A broker of its own: the file produces a non-JSON record to tokenmeter.usage, and its worker's dead-letter
    count is the premise (on the session broker it would also letter what earlier files left there)."""
    return own_broker


def test_every_worker_metric_is_typed_and_the_dead_letter_counter_moves(kafka_bootstrap, tmp_path):
    port = free_port()
    worker = start_worker(kafka_bootstrap, tmp_path, port)
    try:
        wait_for(lambda: health(port)[0] == 200, what="worker health")
        types, _ = _families(_metrics(port))
        assert all(kind in ("counter", "gauge") for kind in types.values()), types
        assert all(name.endswith("_total") == (kind == "counter") for name, kind in types.items()), types
        before = dict(_families(_metrics(port))[1])["tokenmeter_worker_deadletter_total"]
        asyncio_run_produce(kafka_bootstrap, [b"not json " + uuid.uuid4().hex.encode()])
        wait_for(lambda: dict(_families(_metrics(port))[1])["tokenmeter_worker_deadletter_total"] == before + 1,
                 what="the dead letter counted")
    finally:
        stop(worker)


def asyncio_run_produce(bootstrap: str, values: list[bytes]) -> None:
    import asyncio

    asyncio.run(produce(bootstrap, f"team:metrics-{uuid.uuid4().hex[:6]}".encode(), values))
