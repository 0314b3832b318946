"""Shared fixtures: one real embedded broker (tansu) per test run, on a free port."""

from __future__ import annotations

import os
import tempfile

import pytest

from tokenmeter.broker import embedded_broker
from tokenmeter.settings import free_port


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """"127.0.0.1:PORT" of a real Kafka-compatible broker with tokenmeter's topics (4 partitions)."""
    log_path = os.path.join(tempfile.gettempdir(), f"tokenmeter-test-broker-{os.getpid()}.log")
    with embedded_broker("127.0.0.1", free_port(), partitions=4, log_path=log_path) as bootstrap:
        yield bootstrap
