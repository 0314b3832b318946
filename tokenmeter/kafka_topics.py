"""Partitions of topics a client assigns rather than subscribes to, through public aiokafka API only.

Why the admin client: a consumer's own metadata (`AIOKafkaConsumer.partitions_for_topic`) is the view it took at
start (or of the topics it subscribed to); a topic created after that stays unknown to it until the next periodic
refresh (`metadata_max_age_ms`, 5 minutes), and `AIOKafkaConsumer.topics()` fetches fresh metadata but returns only
names, without updating that view. `AIOKafkaAdminClient.describe_topics()` with no names asks for every topic:
fresh, with partitions, and (unlike naming a topic in the request) it never auto-creates a missing one.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError


class TopicMissing(KafkaError):
    """A topic does not exist (yet) on the broker; the message names it and the command that creates it."""


async def partition_map(bootstrap: str, timeout: float = 30.0) -> dict[str, list[int]]:
    """Every topic of the cluster and its partition numbers, from fresh metadata."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        described = await asyncio.wait_for(admin.describe_topics(), timeout)
    except asyncio.TimeoutError:
        raise KafkaConnectionError(f"no topic metadata from {bootstrap} within {timeout:.0f} s") from None
    finally:
        await admin.close()
    return {entry["topic"]: sorted(p["partition"] for p in entry["partitions"])
            for entry in described if not entry.get("error_code") and entry["partitions"]}


async def topic_partitions(bootstrap: str, *topics: str, timeout: float = 30.0,
                           wait: bool = True) -> list[TopicPartition]:
    """The partitions of `topics`, in order. With `wait`, a topic that does not exist yet (e.g. while `tokenmeter
    topics` is still creating it) is waited for until `timeout`; then, or at once without `wait`, TopicMissing."""
    deadline = time.monotonic() + timeout
    while True:
        known = await partition_map(bootstrap, max(1.0, deadline - time.monotonic()))
        missing = [topic for topic in topics if topic not in known]
        if not missing:
            return [TopicPartition(topic, p) for topic in topics for p in known[topic]]
        if not wait or time.monotonic() > deadline:
            raise TopicMissing(f"topic {', '.join(missing)} does not exist on {bootstrap} (run `tokenmeter topics`)")
        await asyncio.sleep(0.2)
