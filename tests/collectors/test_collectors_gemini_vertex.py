"""Vertex AI Gemini responses: `createTime` is the event time, `usageMetadata.trafficType` the billing rate
(Flex / Priority PayGo, provisioned throughput), so a call billed at another rate is never priced at the standard one.
Payloads: tests/conformance/payloads/gemini (recorded by pydantic-ai against Vertex AI)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from collectors import parse_record

CORPUS = Path(__file__).parents[1] / "conformance" / "payloads" / "gemini"


def vertex(name: str, **usage) -> dict:
    response = json.loads((CORPUS / name).read_text())
    response["usageMetadata"].update(usage)
    return {"tokenmeter": {"provider": "vertex_ai"}, "response": response}


def test_create_time_is_the_event_time():
    [event] = parse_record(vertex("vertex_gemini25_flash_thinking.json"))
    assert event.ts == datetime(2026, 2, 15, 7, 50, 37, 854117, tzinfo=timezone.utc)
    assert event.service_tier is None  # ON_DEMAND: the standard rate


@pytest.mark.parametrize("traffic, tier", [("ON_DEMAND_FLEX", "flex"), ("ON_DEMAND_PRIORITY", "priority"),
                                           ("PROVISIONED_THROUGHPUT", "provisioned_throughput"),
                                           ("ON_DEMAND", None), ("SOMETHING_NEW", "something_new")])
def test_traffic_type_is_the_service_tier(traffic, tier):
    [event] = parse_record(vertex("vertex_gemini3_flash_flex_paygo.json", trafficType=traffic))
    assert event.service_tier == tier
