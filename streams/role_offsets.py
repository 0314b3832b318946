"""A pricing-role worker's consumer group starts where role all's left `tokenmeter.usage` (streams/worker.py).

The pricing role is a consumer group of its own (`tokenmeter-pricing`): role all's group owns the budgets, and the
budgets role joins it, so a budget has one owner whichever roles run. A new group would read the usage topic from
its start (`auto_offset_reset=earliest`): exact (the warehouse keeps one row per event_id, a budget's owner skips
usage offsets it has counted), but a whole retention of usage priced again. So when the pricing group has no
committed usage offset yet, it adopts role all's committed ones once, before the worker joins.
"""

from __future__ import annotations

import logging

log = logging.getLogger("tokenmeter.worker")


async def adopt_usage_offsets(bootstrap: str, from_group: str, to_group: str) -> int:
    """Commit `from_group`'s committed `tokenmeter.usage` offsets for `to_group` when `to_group` has none; returns
    how many partitions were adopted (0: it had its own, or there was nothing to adopt)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient

    from tokenmeter import topics
    from tokenmeter.kafka_topics import TopicMissing, topic_partitions

    try:
        partitions = await topic_partitions(bootstrap, topics.USAGE, wait=False)
    except TopicMissing:  # a new cluster: no usage, so no offsets to adopt (the worker declares the topic)
        return 0
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        own = await admin.list_consumer_group_offsets(to_group, partitions=partitions)
        if any(meta.offset >= 0 for meta in own.values()):
            return 0
        theirs = await admin.list_consumer_group_offsets(from_group, partitions=partitions)
    finally:
        await admin.close()
    adopted = {tp: meta.offset for tp, meta in theirs.items() if meta.offset >= 0}
    if not adopted:
        return 0
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=to_group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(adopted))  # no group join: a commit for a group with no member yet
        await consumer.commit(adopted)
    finally:
        await consumer.stop()
    log.info("consumer group %s starts where %s left %s: %s", to_group, from_group, topics.USAGE,
             ", ".join(f"p{tp.partition}@{offset}" for tp, offset in sorted(adopted.items())))
    return len(adopted)
