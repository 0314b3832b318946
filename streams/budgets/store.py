"""Budget definitions live in the compacted topic `tokenmeter.budgets`: key = budget name, value = budget JSON,
tombstone (null value) = deleted. Every worker reads the topic to its end at start, so the topic is the
single source of truth; YAML files are an input format for `budget apply`.

Reading goes through `streams.topic_reader` (to the high watermark of fetch responses: the embedded broker
under-reports `end_offsets()`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Mapping

import orjson
import yaml
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streams.alerts.route_secrets import RouteSecrets
from streams.alerts.routes import mask_notify
from streams.topic_reader import TopicReadError, read_compacted
from tokenmeter.kafka_topics import broker_problem
from tokenmeter.topics import BUDGETS

from .model import Budget, BudgetError, parse_budget


class BudgetStoreError(Exception):
    """The budget topic or a budget file could not be read or written; the message says which and why."""


async def _load(bootstrap: str, timeout: float, fetch_wait: Mapping[str, int] | None) -> dict[str, Budget]:
    try:
        raw = await read_compacted(bootstrap, BUDGETS, timeout, fetch_wait=fetch_wait)
    except TopicReadError as exc:
        raise BudgetStoreError(str(exc)) from None
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


def load_budgets(bootstrap: str, timeout: float = 15.0, *,
                 fetch_wait: Mapping[str, int] | None = None) -> dict[str, Budget]:
    """Every live budget in the topic, by name (deleted and unreadable records skipped). `fetch_wait`: the caller's
    `Settings.fetch_wait`; without it, the environment's settings."""
    try:
        return asyncio.run(_load(bootstrap, timeout, fetch_wait))
    except KafkaError as exc:
        raise BudgetStoreError(f"cannot read {BUDGETS} from {bootstrap}: {broker_problem(exc, bootstrap)}") from None


async def _write(bootstrap: str, records: list[tuple[str, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        await producer.start()  # inside: a start that fails (no broker) still closes it, no "Unclosed" warning
        for name, value in records:
            await producer.send_and_wait(BUDGETS, key=name.encode(), value=value)
    finally:
        await producer.stop()


def protect_budget(budget: Budget, data_dir: Path | str) -> Budget:
    """The budget with its notify secrets moved to the route secret store of `data_dir` (0600) and replaced by
    masked references: the only form that may leave this process (topic, mirror file, API, alerts)."""
    try:
        notify = RouteSecrets(data_dir).protect(budget.notify)
    except OSError as exc:
        raise BudgetStoreError(f"cannot store the notify secrets of budget {budget.name!r} in {data_dir}: {exc}") from None
    return budget if notify == budget.notify else budget.model_copy(update={"notify": notify})


def public_budget(budget: Budget) -> dict[str, Any]:
    """A budget as it may be shown (API, CLI): notify entries masked (references already are; plain ones too)."""
    return {**budget.to_json(), "notify": mask_notify(list(budget.notify))}


def write_budgets(bootstrap: str, budgets: list[Budget], data_dir: Path | str | None = None) -> None:
    """Write definitions to the topic; notify secrets go to the route store of `data_dir` (default: the
    settings' data dir), the topic gets masked references only."""
    if data_dir is None:
        from tokenmeter.settings import load_settings

        data_dir = load_settings().data_dir
    budgets = [protect_budget(b, data_dir) for b in budgets]
    try:
        asyncio.run(_write(bootstrap, [(b.name, orjson.dumps(b.to_json())) for b in budgets]))
    except KafkaError as exc:
        raise BudgetStoreError(f"cannot write to {BUDGETS} on {bootstrap}: {broker_problem(exc, bootstrap)}") from None


def delete_budget(bootstrap: str, name: str) -> None:
    try:
        asyncio.run(_write(bootstrap, [(name, None)]))
    except KafkaError as exc:
        raise BudgetStoreError(f"cannot write to {BUDGETS} on {bootstrap}: {broker_problem(exc, bootstrap)}") from None


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


__all__ = ["BudgetStoreError", "delete_budget", "load_budgets", "parse_budget_file", "protect_budget", "public_budget",
           "write_budgets"]
