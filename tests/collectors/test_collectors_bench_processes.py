"""`collectors.bench_processes`: the collector bench with 2 bridge processes in one group, on the real broker.
Exactly-once is checked inside (every expected id once on the usage topic); the figures need only be positive and
say how many members worked."""

from __future__ import annotations

import uuid

import pytest

from collectors.bench_processes import measure_dialect

pytestmark = pytest.mark.slow(seconds=12)  # rough seconds: longest files first (tests/suite_order.py)


@pytest.mark.timeout(120)
def test_two_members_bridge_exactly_once_and_say_so(kafka_bootstrap):
    found = measure_dialect(kafka_bootstrap, "litellm", 400, 2, f"bench.collectors.usage.{uuid.uuid4().hex[:8]}")
    assert found["processes"] == 2, found
    assert found["events_per_s"] > 0 and found["cpu_us_per_event"] > 0, found


def test_more_members_than_partitions_is_refused():
    with pytest.raises(ValueError, match="processes must be 1-4"):
        measure_dialect("127.0.0.1:1", "litellm", 10, 5, "unused")
