"""`tokenmeter dedup`: calls seen by more than one source (gateway log, OTel span, SDK event), per pair of
sources: which source's event was counted (the winner), how many copies were skipped, and their cost."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import click


@click.command("dedup")
@click.option("--days", default=30, show_default=True, type=click.IntRange(1, 4000), help="Look back N days.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
def dedup(days: int, fmt: str) -> None:
    """Cross-source duplicates per (winner source, duplicate source) over the last N days: copies of one call
    that were not counted again, matched by provider response id, request id or trace+span (docs/finance.md)."""
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
