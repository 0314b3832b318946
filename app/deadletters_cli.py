"""`tokenmeter deadletters`: what was rejected and why (`summary`, from the warehouse), the letters themselves
(`show`, from tokenmeter.deadletter), and re-sending what a fix makes good (`replay`). docs/worker.md, "Dead
letters: reading and replaying"."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click

_SPAN = re.compile(r"^\s*(\d{1,6})\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
SOURCE_HELP = "Only this source (the rejected event's, e.g. kong; else the collector's dialect; else the stage)."


def since_option(value: str, option: str = "--since", now: datetime | None = None) -> datetime:
    """`24h`, `90m`, `7d`, `2w` back from now, or an ISO 8601 / RFC 3339 time (no offset: UTC)."""
    from tokenmeter.cli_support import time_option

    span = _SPAN.match(value)
    if span:
        try:
            return (now or datetime.now(timezone.utc)) - timedelta(**{_UNITS[span.group(2)]: int(span.group(1))})
        except OverflowError:  # 999999w: before year 1
            raise click.BadParameter(f"{value.strip()} reaches back before year 1", param_hint=option) from None
    if len(value) > 80:
        raise click.BadParameter(f"{value[:80]!r}... is not a span (24h, 90m, 7d) or an ISO 8601 time",
                                 param_hint=option)
    try:
        moment = time_option(value, option)
    except click.BadParameter:  # its message names the ISO form only; the default (24h) is a span
        raise click.BadParameter(f"{value.strip()!r} is neither a span back from now (90m, 24h, 7d, 2w) nor an "
                                 "ISO 8601 time (e.g. 2026-11-01 or 2026-11-01T08:00Z)", param_hint=option) from None
    assert moment is not None
    return moment


def _since(function: Any) -> Any:
    return click.option("--since", default="24h", show_default=True,
                        help="From when: a span back from now (90m, 24h, 7d, 2w) or an ISO 8601 time.")(function)


@click.group("deadletters")
def deadletters() -> None:
    """Dead letters: what was rejected and why, the (redacted) letters, and replaying what a fix makes good."""


@deadletters.command("summary")
@_since
@click.option("--source", default=None, help=SOURCE_HELP)
@click.option("--stage", default=None, help="Only this stage (worker, load, collect:http, collect:file, ...).")
@click.option("--full", is_flag=True, help="Each group's whole reason and one real example, wrapped to the "
              "terminal (the table cuts reasons to fit it).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def summary(since: str, source: str | None, stage: str | None, full: bool, fmt: str) -> None:
    """Dead letters per source (the event's own, e.g. kong, else the collector's dialect, else the stage), stage
    (which rejected them) and kind of reason (numbers, quoted values and ids replaced: one example each), with the
    first and last time; from the warehouse (works while `tokenmeter up` runs)."""
    import shutil

    from app.deadletters_summary import MAX_GROUPS, summary_blocks, summary_rows, summary_table
    from tokenmeter.cli_support import cli_settings
    from warehouse import WarehouseError, open_warehouse

    start, now = since_option(since), datetime.now(timezone.utc)
    try:
        wh = open_warehouse(cli_settings())
        try:
            rows = summary_rows(wh, start, now + timedelta(minutes=1), source, stage)
        finally:
            wh.close()
    except WarehouseError as exc:
        raise click.ClickException(str(exc)) from None
    cut = len(rows) > MAX_GROUPS
    rows = rows[:MAX_GROUPS]
    if fmt == "json":
        import orjson

        click.echo(orjson.dumps({"since": start.isoformat(), "groups": [
            {**row, "first_at": row["first_at"].isoformat(), "last_at": row["last_at"].isoformat()} for row in rows],
            "cut_at_groups": MAX_GROUPS if cut else None}, option=orjson.OPT_INDENT_2).decode())
        return
    if not rows:
        click.echo(f"no dead letters since {start.isoformat(timespec='seconds')}")
        return
    columns = shutil.get_terminal_size((120, 24)).columns  # COLUMNS, else the terminal, else 120 (a pipe)
    reasons_cut = False
    if full:
        click.echo(summary_blocks(rows, columns), nl=False)
    else:
        table, reasons_cut = summary_table(rows, columns)
        click.echo(table, nl=False)
    total = sum(r["letters"] for r in rows)
    click.echo(f"{total} letter(s) in {len(rows)} group(s) since {start.isoformat(timespec='seconds')} (UTC)"
               + (f"; only the {MAX_GROUPS} largest groups (narrow --since, --source, --stage)" if cut else ""))
    if reasons_cut:
        click.echo("reasons cut to fit: --full (or --format json) shows them whole, with an example")


def _read(filters: Any, on_letter: Any) -> int:
    from aiokafka.errors import KafkaError

    from app.deadletters_read import read_letters
    from tokenmeter.cli_support import cli_settings
    from tokenmeter.kafka_topics import broker_problem

    bootstrap = cli_settings().bootstrap_servers
    try:
        return asyncio.run(read_letters(bootstrap, filters, on_letter))
    except (KafkaError, OSError) as exc:
        raise click.ClickException(broker_problem(exc, bootstrap)) from None


@deadletters.command("show")
@_since
@click.option("--source", default=None, help=SOURCE_HELP)
@click.option("--stage", default=None, help="Only this stage (worker, load, collect:http, ...).")
@click.option("--reason-contains", default=None, help="Only letters whose reason contains this text (any case).")
@click.option("--limit", type=click.IntRange(0), default=20, show_default=True, help="Show the newest N letters.")
@click.option("--payload-chars", type=click.IntRange(0), default=None,
              help="Cut each payload shown at this many characters (default: 400 in the table, whole in JSON).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def show(since: str, source: str | None, stage: str | None, reason_contains: str | None, limit: int,
         payload_chars: int | None, fmt: str) -> None:
    """The newest letters themselves, read from tokenmeter.deadletter: reason, where the record came from, and the
    payload exactly as kept (credentials were redacted when the letter was written; they are not here)."""
    from app.deadletters_read import MAX_PAYLOAD_CHARS, Filters, Newest, shown, table_block

    newest = Newest(limit)
    read = _read(Filters(since_option(since), source, stage, reason_contains), newest)
    chars = payload_chars if payload_chars is not None else (MAX_PAYLOAD_CHARS if fmt == "json" else 400)
    entries = [shown(item, chars) for item in newest.in_order()]
    if fmt == "json":
        import orjson

        click.echo(orjson.dumps({"matched": newest.matched, "shown": len(entries), "read": read,
                                 "letters": entries}, default=str, option=orjson.OPT_INDENT_2).decode())
        return
    for entry in entries:
        click.echo(table_block(entry))
    more = f" (the newest {len(entries)} shown; raise --limit for more)" if newest.matched > len(entries) else ""
    click.echo(f"{newest.matched} letter(s) match of {read} read{more}")


@deadletters.command("replay")
@click.option("--stage", required=True,
              help="The stage whose letters to re-send (replayable: worker, collect:http, collect:file, "
                   "collect:kafka).")
@_since
@click.option("--source", default=None, help="Only this source.")
@click.option("--reason-contains", default=None, help="Only letters whose reason contains this text (any case).")
@click.option("--dry-run", is_flag=True, help="Say what would be re-sent and what refused; send nothing.")
@click.option("--mapping", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              envvar="TOKENMETER_COLLECT_MAPPING",
              help="Collector stages: the attribution mapping YAML the collector runs with.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def replay(stage: str, since: str, source: str | None, reason_contains: str | None, dry_run: bool,
           mapping: Path | None, fmt: str) -> None:
    """Re-send what a stage's letters hold to tokenmeter.usage, once a fix makes them good: the worker's records
    as they were; a collector's (collect:http, collect:file, collect:kafka) collected again with today's
    collectors. Only whole payloads (not cut, nothing redacted, matching their SHA-256); events already in the
    warehouse are skipped (already ok); a worker record that fails again becomes a new dead letter, a gateway
    record the collectors still reject is refused with their reason."""
    from app.deadletters_read import Filters
    from tokenmeter.terminal_text import for_terminal
    from app.deadletters_replay import REPLAY_TARGETS, Planner, candidate, not_replayable, publish, stored_ids
    from tokenmeter.cli_support import cli_settings
    from warehouse import WarehouseError, open_warehouse

    why = not_replayable(stage)
    if why is not None:
        raise click.ClickException(f"letters of stage {stage[:80]!r} are not replayed: {why}")
    start = since_option(since)
    judge = candidate
    if stage.startswith("collect:"):
        from app.deadletters_collected import collected
        from collectors.cli import load_mapping

        attribution = load_mapping(mapping)
        judge = lambda item: collected(item, attribution)  # noqa: E731
    planner = Planner(judge)
    read = _read(Filters(start, source, stage, reason_contains), planner.add)
    settings = cli_settings()
    try:  # which events are stored already: never re-sent (the budgets' memory of ids is a window)
        wh = open_warehouse(settings)
        try:
            chosen, outcome = planner.finish(stored_ids(wh))
        finally:
            wh.close()
    except WarehouseError as exc:
        raise click.ClickException(f"cannot tell which events are stored already: {exc}") from None
    target = REPLAY_TARGETS[stage]
    if not dry_run and chosen:
        def progress(done: int, total: int) -> None:
            click.echo(f"replayed {done} of {total} to {target}", err=True)

        from aiokafka.errors import KafkaError

        from tokenmeter.kafka_topics import broker_problem

        try:
            outcome.replayed = asyncio.run(publish(settings.bootstrap_servers, target, chosen, progress))
        except (KafkaError, OSError) as exc:  # part may be sent: the next run skips what was priced meanwhile
            raise click.ClickException(f"{broker_problem(exc, settings.bootstrap_servers)}; replay stopped (the "
                                       "progress above says how far): running it again is safe") from None
    else:
        outcome.replayed = len(chosen)
    result = {"stage": stage, "to": target, "since": start.isoformat(), "letters": planner.letters, "read": read,
              **outcome.as_dict(dry_run)}
    if fmt == "json":
        import orjson

        click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return
    verb = "would replay" if dry_run else "replayed"
    unit = "event(s)" if stage.startswith("collect:") else "record(s)"
    click.echo(f"{planner.letters} letter(s) of stage {stage} since {start.isoformat(timespec='seconds')}: {verb} "
               f"{outcome.replayed} {unit} to {target}, {outcome.already_ok} already ok (stored), "
               f"{outcome.repeated} repeated (one record lettered again), {sum(outcome.refused.values())} "
               "letter(s) refused")
    for reason, count in outcome.refused.most_common():
        click.echo(f"  refused {count}: {for_terminal(reason)}")  # a collector's reason quotes the record
