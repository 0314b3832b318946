"""`tokenmeter priced tail [--n N] [--json]`: the newest priced events on `tokenmeter.priced`, whichever format the
workers write (issue 14, arrow14).

Each message is decoded by `tokenmeter.priced_wire.decode_priced`, the one decoder every in-house reader uses: a
JSON array as orjson reads it, an Arrow message (header `tokenmeter-format: arrow`) as the same dicts. With
`--json` each event is printed as one line of its canonical JSON (`orjson.dumps` of the dict: for a JSON message the
bytes the worker wrote, for an Arrow one the bytes its JSON would have been), so a person or a script sees the same
lines whatever `TOKENMETER_PRICED_FORMAT` is; without it, one short line per event. A message that cannot be read
is named on stderr (partition, offset, reason) and skipped.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click
import orjson

from tokenmeter import topics
from tokenmeter.priced_wire import decode_priced, format_of

MAX_TAIL = 100_000


async def newest_priced(bootstrap: str, n: int, timeout: float = 30.0) -> list[tuple[int, int, str, Any]]:
    """(partition, offset, format, decoded event or the reason it could not be read) of at most the `n` newest priced
    events (the last `n` of each partition, then the `n` with the latest `priced_at`), oldest first."""
    from aiokafka import AIOKafkaConsumer

    from tokenmeter.kafka_topics import read_to_end, topic_partitions
    from tokenmeter.settings import fetch_wait

    tps = await topic_partitions(bootstrap, topics.PRICED, timeout=timeout, wait=False)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest", request_timeout_ms=int(timeout * 1000), **fetch_wait())
    records: list[Any] = []
    try:
        await consumer.start()  # inside: a start that fails still closes the consumer
        # every message holds at least one event: the last n messages of a partition hold its last n events (the
        # embedded broker's end_offsets may under-report the end: the read still goes on to the high watermark)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        await read_to_end(consumer, tps, records.append, timeout=timeout,
                          start={tp: max(starts[tp], ends[tp] - n) for tp in tps})
    finally:
        await consumer.stop()
    events: list[tuple[int, int, str, Any]] = []
    for partition in sorted({r.partition for r in records}):
        mine: list[tuple[int, int, str, Any]] = []
        for record in (r for r in records if r.partition == partition):
            try:
                name = format_of(record.headers)
                mine += [(record.partition, record.offset, name, event)
                         for event in decode_priced(record.value, record.headers)]
            except ValueError as exc:  # orjson's and PricedFormatError: named, not fatal
                mine.append((record.partition, record.offset, "?", f"{type(exc).__name__}: {exc}"))
        events += mine[-n:]

    def priced_at(entry: tuple[int, int, str, Any]) -> str:
        event = entry[3]
        return str(event.get("priced_at", "")) if isinstance(event, dict) else ""

    return sorted(events, key=priced_at)[-n:] if n else []


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}  # anyone can write to the topic: a wrong type prints as absent


def _line(event: dict[str, Any]) -> str:
    attribution = _object(event.get("attribution"))
    who = attribution.get("team") or attribution.get("project") or attribution.get("org") or "-"
    usage = _object(event.get("usage"))
    tokens = f"{usage.get('input_tokens', 0)}+{usage.get('output_tokens', 0)} tok"
    cost = event.get("cost_usd", "?") if event.get("pricing_status") == "priced" else "unpriced"
    return f"{event.get('ts', '?')}  {who}  {event.get('provider', '?')}/{event.get('model', '?')}  {tokens}  {cost}"


@click.group()
def priced() -> None:
    """Read tokenmeter.priced (JSON or Arrow messages) as people and scripts do."""


@priced.command()
@click.option("--n", "count", type=click.IntRange(min=0, max=MAX_TAIL), default=10, show_default=True,
              help=f"how many of the newest priced events (at most {MAX_TAIL:,}: each partition's last N messages are "
              "read into memory)")
@click.option("--json", "as_json", is_flag=True, help="each event as one line of its canonical JSON")
def tail(count: int, as_json: bool) -> None:
    """The newest priced events, decoded from either format (TOKENMETER_PRICED_FORMAT)."""
    from app.cli import _settings

    from aiokafka.errors import KafkaError

    from tokenmeter.kafka_topics import broker_problem

    settings = _settings()
    try:
        newest = asyncio.run(newest_priced(settings.bootstrap_servers, count))
    except KafkaError as exc:
        raise click.ClickException(f"cannot read {topics.PRICED}: "
                                   f"{broker_problem(exc, settings.bootstrap_servers)}") from None
    for partition, offset, name, event in newest:
        if not isinstance(event, dict):
            click.echo(f"partition {partition} offset {offset}: not a priced message ({event})", err=True)
        elif as_json:
            click.echo(orjson.dumps(event).decode())
        else:
            click.echo(f"{_line(event)}  [{name} p{partition}@{offset}]")


__all__ = ["newest_priced", "priced"]
