"""`tokenmeter dedup`: calls seen by more than one source (gateway log, OTel span, SDK event), per pair of
sources: which source's event was counted (the winner), how many copies were skipped, and their cost.
`tokenmeter dedup reapply --from DATE`: re-decide the calls of a window under the current source preference."""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta, timezone

import click


def _day(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), time(), timezone.utc)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date like 2026-11-01", param_hint=option) from None


@click.group("dedup", invoke_without_command=True)
@click.option("--days", default=30, show_default=True, type=click.IntRange(1, 4000), help="Look back N days.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.pass_context
def dedup(ctx: click.Context, days: int, fmt: str) -> None:
    """Cross-source duplicates per (winner source, duplicate source) over the last N days: copies of one call
    that were not counted again, matched by provider response id, request id or trace+span (docs/finance.md).
    `dedup reapply --from DATE` re-decides stored calls after TOKENMETER_DEDUP_SOURCE_PREFERENCE changed."""
    if ctx.invoked_subcommand is not None:
        return
    from tokenmeter.cli_support import cli_settings
    from warehouse import WarehouseError, open_warehouse
    from warehouse.dedup import duplicates_by_source_pair
    from warehouse.report import render_report

    settings = cli_settings()
    since = datetime.combine(date.today() - timedelta(days=days), time(), timezone.utc)
    try:
        wh = open_warehouse(settings)
        try:
            frame = duplicates_by_source_pair(wh, since=since)
        finally:
            wh.close()
    except WarehouseError as exc:
        raise click.ClickException(str(exc)) from None
    if frame.height == 0 and fmt == "table":
        click.echo(f"no call was seen by two sources in the last {days} days")
        return
    click.echo(render_report(frame, fmt), nl=False)


@dedup.command("reapply")
@click.option("--from", "since", required=True, help="First day (UTC, YYYY-MM-DD) of the copies to re-decide.")
@click.option("--until", "until", default=None, help="Day after the last (UTC, YYYY-MM-DD); default: no end.")
@click.option("--dry-run", is_flag=True, help="Count what would change; change nothing.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def reapply(since: str, until: str | None, dry_run: bool, fmt: str) -> None:
    """Re-decide, under the current TOKENMETER_DEDUP_SOURCE_PREFERENCE, which copy of each call seen by several
    sources is counted, for copies recorded as losers from --from on: a kept copy that now ranks above the
    counted one is counted instead (the old one taken out, rollups rebuilt; a closed month's difference becomes a
    correction in the first open month, never a rewrite). It writes to the warehouse: stop `tokenmeter up` first
    when the embedded warehouse is used (--dry-run reads only, and works while it runs)."""
    from tokenmeter.cli_support import cli_settings
    from warehouse import WarehouseError, open_warehouse
    from warehouse.backends import WarehouseLocked
    from warehouse.dedup import SourcePreference
    from warehouse.dedup import reapply as reapply_preference

    start, end = _day(since, "--from"), _day(until, "--until")
    if end is not None and end <= start:
        raise click.BadParameter("must be after --from", param_hint="--until")
    settings = cli_settings()
    try:  # a dry run only reads: through the loader's query endpoint while the stack runs
        wh = open_warehouse(settings, writer=not dry_run, serve=False)
    except WarehouseLocked as exc:
        raise click.ClickException(f"{exc}. `dedup reapply` writes to the warehouse: stop `tokenmeter up` "
                                   "(Ctrl-C), run it, start `up` again (`--dry-run` works while it runs)") from None
    except WarehouseError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        wh.source_preference = SourcePreference(settings.dedup_source_preference)  # a reader's handle has none
        report = reapply_preference(wh, start, end, dry_run=dry_run)
    except ValueError as exc:
        raise click.ClickException(f"TOKENMETER_DEDUP_SOURCE_PREFERENCE: {exc}") from None
    except WarehouseError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        wh.close()
    if fmt == "json":
        click.echo(json.dumps(report.as_dict()))
        return
    window = f"{since} .. {until}" if until else f"from {since}"
    click.echo(f"preference: {' > '.join(report.preference)}; copies recorded as losers {window}: {report.losers}")
    click.echo(f"outranking their call's counted copy now: {report.outranking}"
               + (f" ({report.missing_rows} without a kept row: recorded before this version, left as they are)"
                  if report.missing_rows else ""))
    if dry_run:
        click.echo(f"dry run: nothing changed; {report.outranking - report.missing_rows} copies would be counted "
                   "instead of their call's current one")
        return
    click.echo(f"counted instead of the old winner: {report.revived}; window: {report.events_before} -> "
               f"{report.events_after} events, {report.cost_before} -> {report.cost_after} USD")
