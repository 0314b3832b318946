"""Budget definitions live in the compacted topic `tokenmeter.budgets`: key = budget name, value = budget JSON,
tombstone (null value) = deleted. Every worker reads the topic to its end at start, so the topic is the
single source of truth; YAML files are an input format for `budget apply`.

The end of the topic is taken from the high watermark carried in fetch responses (`consumer.highwater`),
not from `end_offsets()`: the embedded broker under-reports ListOffsets(latest) (see environment.md).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from tokenmeter.topics import BUDGETS

from .model import Budget, BudgetError, parse_budget


class BudgetStoreError(Exception):
    """The budget topic or a budget file could not be read or written; the message says which and why."""


async def _load(bootstrap: str, timeout: float) -> dict[str, Budget]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest", request_timeout_ms=int(timeout * 1000))
    await consumer.start()
    try:
        # Metadata of a topic we assign rather than subscribe to: ask the cluster for all topics.
        cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001
        partitions = cluster.partitions_for_topic(BUDGETS)
        if not partitions:
            raise BudgetStoreError(f"topic {BUDGETS} does not exist on {bootstrap} (run `tokenmeter topics`)")
        tps = [TopicPartition(BUDGETS, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        raw: dict[str, bytes | None] = {}
        pending = set(tps)
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise BudgetStoreError(f"could not read {BUDGETS} to its end within {timeout:.0f} s on {bootstrap}")
            batches = await consumer.getmany(*tps, timeout_ms=200)
            for records in batches.values():
                for record in records:  # later records win; a tombstone deletes
                    raw[record.key.decode()] = record.value
            for tp in list(pending):
                highwater = consumer.highwater(tp)
                if highwater is not None and await consumer.position(tp) >= highwater:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    budgets = {}
    for name, value in raw.items():
        if value is None:
            continue
        try:
            budgets[name] = parse_budget(orjson.loads(value))
        except (orjson.JSONDecodeError, BudgetError):
            # A bad record must not hide every other budget; `budget set` validates before writing.
            continue
    return budgets


def load_budgets(bootstrap: str, timeout: float = 15.0) -> dict[str, Budget]:
    """Every live budget in the topic, by name (deleted and unreadable records skipped)."""
    try:
        return asyncio.run(_load(bootstrap, timeout))
    except KafkaError as exc:
        raise BudgetStoreError(f"cannot read {BUDGETS} from {bootstrap}: {exc!r}") from None


async def _write(bootstrap: str, records: list[tuple[str, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for name, value in records:
            await producer.send_and_wait(BUDGETS, key=name.encode(), value=value)
    finally:
        await producer.stop()


def write_budgets(bootstrap: str, budgets: list[Budget]) -> None:
    try:
        asyncio.run(_write(bootstrap, [(b.name, orjson.dumps(b.to_json())) for b in budgets]))
    except KafkaError as exc:
        raise BudgetStoreError(f"cannot write to {BUDGETS} on {bootstrap}: {exc!r}") from None


def delete_budget(bootstrap: str, name: str) -> None:
    try:
        asyncio.run(_write(bootstrap, [(name, None)]))
    except KafkaError as exc:
        raise BudgetStoreError(f"cannot write to {BUDGETS} on {bootstrap}: {exc!r}") from None


def parse_budget_file(path: str | Path) -> list[Budget]:
    """A YAML file holding a list of budgets (or `{budgets: [...]}`); every problem of every budget at once."""
    try:
        data: Any = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise BudgetStoreError(f"{path}: cannot read YAML: {exc}") from None
    if isinstance(data, dict) and "budgets" in data:
        data = data["budgets"]
    if not isinstance(data, list):
        raise BudgetStoreError(f"{path}: expected a list of budgets")
    budgets, problems, names = [], [], set()
    for index, item in enumerate(data):
        label = item.get("name") if isinstance(item, dict) and item.get("name") else f"#{index + 1}"
        try:
            budget = parse_budget(item)
        except BudgetError as exc:
            problems += [f"budget {label}: {p}" for p in exc.problems]
            continue
        if budget.name in names:
            problems.append(f"budget {label}: name defined twice")
        names.add(budget.name)
        budgets.append(budget)
    if problems:
        raise BudgetStoreError(f"{path}: invalid budgets:\n  " + "\n  ".join(problems))
    return budgets


__all__ = ["BudgetStoreError", "delete_budget", "load_budgets", "parse_budget_file", "write_budgets"]
