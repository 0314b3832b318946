"""Putting alert records built outside the streams (finance checks: cost drift, source completeness) into the
outbox `tokenmeter.alerts`, keyed by dedup_key like every alert, so the dispatcher routes and delivers them once
per alert id and route."""

from __future__ import annotations

import asyncio

import orjson


async def publish_alerts_async(bootstrap: str, alerts: list[dict]) -> int:
    from aiokafka import AIOKafkaProducer

    from tokenmeter import topics

    if not alerts:
        return 0
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for alert in alerts:
            await producer.send_and_wait(topics.ALERTS, orjson.dumps(alert), key=alert["dedup_key"].encode())
    finally:
        await producer.stop()
    return len(alerts)


def publish_alerts(bootstrap: str, alerts: list[dict]) -> int:
    """Send the records (acks=all) and return how many; raises the producer's error when the broker is down."""
    return asyncio.run(publish_alerts_async(bootstrap, alerts))
