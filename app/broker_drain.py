"""Before `tokenmeter up` stops its children cleanly: let the worker and the loader consume what the memory-only
embedded broker holds, since the broker keeps nothing across a stop (soak34).

Why: the soak lost acknowledged events without any broker loss. After a broker restart under load the worker and the
loader were still starting when the soak stopped `up` cleanly; the records the new broker had acknowledged meanwhile
were only in the broker, and the stop took them without a word (a crash at least reports what was at risk). So a
clean stop first waits, bounded by `stop_drain_seconds`, until the worker's group has committed every usage record
and the loader's every priced record (their commits follow their outputs' acknowledgements: usage committed means
priced produced, priced committed means loaded). Alerts are not waited for: the warehouse puts the undelivered ones
back in the outbox at the next start. Whatever is still waiting at the deadline is said loudly and returned, for the
status file, like a crash's loss.
"""

from __future__ import annotations

import time
from typing import Callable

from app.broker import BACKLOG_STAGES
from tokenmeter import topics

DRAINED_TOPICS = (topics.USAGE, topics.PRICED)  # in pipeline order: priced records come from the usage drained
GROUPS = {topic: group for topic, group, _ in BACKLOG_STAGES}
SAMPLE_EVERY_S = 0.3


async def _positions(bootstrap: str, partitions: int, fetch_wait: dict[str, int]) -> dict[str, dict[int, tuple[int, int]]]:
    """Per drained topic and partition: (end offset, offset its stage's group committed; 0 when none). The end is
    the high watermark of a fetch response, never ListOffsets(latest), which the embedded broker under-reports (by
    a whole produce batch: 50 records just produced read as 1 waiting)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    tps = [TopicPartition(topic, p) for topic in DRAINED_TOPICS for p in range(partitions)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                request_timeout_ms=3000, **fetch_wait)
    await admin.start()
    await consumer.start()
    try:
        committed = {}
        for topic in DRAINED_TOPICS:  # before the ends: a commit seen is never ahead of the end read after it
            committed.update(await admin.list_consumer_group_offsets(
                GROUPS[topic], partitions=[tp for tp in tps if tp.topic == topic]))
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)  # a start near the end only: the fetch response says where the end is
        while any(consumer.highwater(tp) is None for tp in tps):
            await consumer.getmany(*tps, timeout_ms=200)
        out: dict[str, dict[int, tuple[int, int]]] = {topic: {} for topic in DRAINED_TOPICS}
        for tp in tps:
            done = committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0
            out[tp.topic][tp.partition] = (consumer.highwater(tp), done)
        return out
    finally:
        await consumer.stop()
        await admin.close()


def _sample(bootstrap: str, partitions: int, fetch_wait: dict[str, int]) -> dict[str, dict[int, tuple[int, int]]] | None:
    import asyncio  # here: `tokenmeter status` imports the supervisor and runs no loop

    try:
        return asyncio.run(asyncio.wait_for(_positions(bootstrap, partitions, fetch_wait), 5))
    except Exception:  # noqa: BLE001 - a busy broker: the next sample, or the deadline, decides
        return None


def _left(sample: dict[str, dict[int, tuple[int, int]]], targets: dict[str, dict[int, int]]) -> dict[str, int]:
    """Per drained topic, records below the target offsets that its group has not committed yet."""
    return {topic: sum(max(0, min(target, sample[topic][p][0]) - sample[topic][p][1])
                       for p, target in targets.get(topic, {}).items()) for topic in DRAINED_TOPICS}


def drain_broker(bootstrap: str, partitions: int, fetch_wait: dict[str, int], timeout_s: float,
                 consumers_alive: Callable[[], bool], echo: Callable[[str], None]) -> dict | None:
    """Wait until the worker has committed every usage record acknowledged before the stop began, and then the
    loader every priced record produced until then (records acknowledged meanwhile, e.g. by collectors outside
    `up`, are not chased: the stop has begun); at most `timeout_s` and only while both run. Returns None when
    drained, else the loss: {"at", "waiting", "at_risk_records"}."""
    deadline = time.monotonic() + timeout_s
    targets: dict[str, dict[int, int]] = {}
    left: dict[str, int] | None = None
    announced = False
    while True:
        sample = _sample(bootstrap, partitions, fetch_wait)
        if sample is not None:
            if not targets:  # what the broker had acknowledged when the stop began
                targets[topics.USAGE] = {p: end for p, (end, _) in sample[topics.USAGE].items()}
            left = _left(sample, targets)
            if topics.PRICED not in targets and left[topics.USAGE] == 0:  # every priced output produced by now
                targets[topics.PRICED] = {p: end for p, (end, _) in sample[topics.PRICED].items()}
                left = _left(sample, targets)
            if topics.PRICED in targets and not any(left.values()):
                if announced:
                    echo("      drained: what the broker acknowledged before the stop is metered and loaded")
                return None
        if time.monotonic() >= deadline or not consumers_alive():
            break
        if not announced and left is not None:
            echo(f"      waiting up to {timeout_s:.0f} s for the worker and the loader to consume what the memory-only "
                 f"broker holds ({_describe(left)})")
            announced = True
        time.sleep(SAMPLE_EVERY_S)
    records = sum(left.values()) if left is not None else None
    echo(f"!!! STOPPING WITH RECORDS ONLY IN THE MEMORY-ONLY BROKER: {_describe(left) if left else 'not known'}, "
         f"not consumed within {timeout_s:.0f} s{'' if consumers_alive() else ' (worker or loader not running)'}. "
         "They are lost with this stop; re-send that range from its source if you can.")
    return {"at": time.time(), "waiting": left, "at_risk_records": records}


def _describe(left: dict[str, int]) -> str:
    what = {topic: text for topic, _, text in BACKLOG_STAGES}
    return "; ".join(f"{n} {what[topic]}" for topic, n in left.items())
