"""Partitions of topics a client assigns rather than subscribes to, through public aiokafka API only, and reading
them to their end (`read_to_end`: the one read-to-the-high-watermark loop).

Why the admin client: a consumer's own metadata (`AIOKafkaConsumer.partitions_for_topic`) is the view it took at
start (or of the topics it subscribed to); a topic created after that stays unknown to it until the next periodic
refresh (`metadata_max_age_ms`, 5 minutes), and `AIOKafkaConsumer.topics()` fetches fresh metadata but returns only
names, without updating that view. `AIOKafkaAdminClient.describe_topics()` with no names asks for every topic:
fresh, with partitions, and (unlike naming a topic in the request) it never auto-creates a missing one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Iterable, Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError

from tokenmeter import kafka_inflate, kafka_refused

# Every process that reads a topic imports this module (directly or through tokenmeter.commitloop): aiokafka's
# decoders are bounded there before its first fetch (tokenmeter/kafka_inflate.py).
kafka_inflate.install()


class TopicMissing(KafkaError):
    """A topic does not exist (yet) on the broker; the message names it and the command that creates it."""


def broker_problem(exc: BaseException, bootstrap: str) -> str:
    """A Kafka error as a command's user reads it. A broker that does not answer is the usual cause (the stack is not
    running): say so and what to do, not only `KafkaConnectionError: Unable to bootstrap from [('127.0.0.1', 9092,
    <AddressFamily.AF_INET: 2>)]`. Other errors keep their own text."""
    if isinstance(exc, KafkaConnectionError):
        return (f"no Kafka broker answers at {bootstrap}; start the stack (`tokenmeter up`) or point "
                "TOKENMETER_KAFKA_BOOTSTRAP at your brokers")
    return repr(exc)


def require_listener(bootstrap: str, timeout: float = 5.0) -> None:
    """KafkaConnectionError unless some bootstrap address accepts a TCP connection: for a service whose framework
    (Faust's worker) would log a traceback of the same error instead of letting the CLI say it (`broker_problem`)."""
    import socket

    for address in filter(None, (part.strip() for part in bootstrap.split(","))):
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                return
        except (OSError, ValueError):
            continue
    raise KafkaConnectionError(f"Unable to bootstrap from {bootstrap}")


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


class ReadIncomplete(KafkaError):
    """Some partitions were not read to their end within the timeout; the message names them and how far."""


async def partitions_behind(consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition],
                            ends: dict[TopicPartition, int]) -> list[TopicPartition]:
    """The partitions whose position is short of their end. A partition without an entry in `ends` takes the first
    high watermark a fetch response reports for it (none yet: it is behind). That watermark, never
    `end_offsets()`: the embedded broker under-reports ListOffsets(latest) (environment.md), which would stop a
    read short of the newest records."""
    behind = []
    for tp in partitions:
        if tp not in ends:
            highwater = consumer.highwater(tp)
            if highwater is None:
                behind.append(tp)
                continue
            ends[tp] = highwater
        if await consumer.position(tp) < ends[tp]:
            behind.append(tp)
    return behind


async def read_to_end(consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition],
                      on_record: Callable[[ConsumerRecord], None], *, timeout: float,
                      start: Mapping[TopicPartition, int] | None = None,
                      end: Mapping[TopicPartition, int] | None = None) -> None:
    """Assign `partitions` to `consumer` (started, no group), seek each to `start` (default: the beginning) and
    pass every fetched record to `on_record` until each partition's position reaches its end: `end[tp]` if given,
    else the partition's high watermark as the first fetch sees it (records written later do not prolong the
    read). Raises ReadIncomplete after `timeout` seconds. The consumer stays assigned: a caller can keep
    following the partitions with `getmany`. A compressed batch refused for its inflation (tokenmeter/kafka_refused.py)
    is logged as an error and skipped: its marker record (no value) never reaches `on_record`, which reads state
    (budgets, mutes, acknowledgements) or lists a topic, where a None value would read as a tombstone."""
    tps = list(partitions)
    consumer.assign(tps)
    if start is None:
        await consumer.seek_to_beginning(*tps)
    else:
        for tp in tps:
            consumer.seek(tp, start[tp])
    ends = dict(end or {})
    pending, deadline = tps, time.monotonic() + timeout
    while pending := await partitions_behind(consumer, pending, ends):
        if time.monotonic() > deadline:
            short = ", ".join([f"{tp.topic}[{tp.partition}] at {await consumer.position(tp)} of "
                               f"{ends.get(tp, 'an end no fetch reported')}" for tp in pending])
            raise ReadIncomplete(f"could not read to the end within {timeout:.0f} s: {short}")
        for records in (await consumer.getmany(*pending, timeout_ms=200)).values():
            for record in records:
                if kafka_refused.refusal(record) is None:
                    on_record(record)
                else:  # state and listing reads write no dead letters: said once, loudly, and read past
                    kafka_refused.letter_fields(record)
