"""`tokenmeter showback --month YYYY-MM [--by team|cost_center] [--format table|json|csv] [--team T]`: the
month's spend per team or cost center with direct, allocated, corrections (of closed months) and total cost side
by side."""

from __future__ import annotations

import click


@click.command("showback")
@click.option("--month", required=True, help="Billing month, YYYY-MM (UTC).")
@click.option("--by", type=click.Choice(["team", "cost_center"]), default="team", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--team", default=None, help="Only this team's rows.")
def showback(month: str, by: str, fmt: str, team: str | None) -> None:
    """Direct, allocated, corrections (of closed months) and total cost per team or cost center, with GL account and
    owner (from TOKENMETER_COST_CENTERS_FILE; allocation rules from it or TOKENMETER_ALLOCATION_FILE).
    corrections_usd is what the month books for closed months (late events, re-prices), apart from its own direct
    and allocated.
    Unmapped spend is the row "unmapped"; untagged usage is team "" ("(none)" in the table)."""
    from tokenmeter.cli_support import cli_settings
    from warehouse import WarehouseError, open_warehouse
    from warehouse.export import month_bounds
    from warehouse.finance import corrections_note, finance_from_settings, showback_and_corrected
    from warehouse.month_close import closes_dir, reopened_note
    from warehouse.report import render_report

    settings = cli_settings()
    try:
        config = finance_from_settings(settings)
        start, end = month_bounds(month)
        wh = open_warehouse(settings)
        try:
            frame, corrected = showback_and_corrected(wh, config, start, end, by=by, team=team,
                                                      closes=closes_dir(settings))
        finally:
            wh.close()
    except WarehouseError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(render_report(frame, fmt), nl=False)
    if fmt == "table" and corrected:
        click.echo(corrections_note(month.strip(), corrected))
    if fmt == "table" and reopened_note(closes_dir(settings), month.strip()):
        click.echo(reopened_note(closes_dir(settings), month.strip()))


@click.command("close")
@click.option("--month", default=None, help="Month to close, YYYY-MM (UTC); it must have ended.")
@click.option("--list", "show", is_flag=True, help="List closed months instead.")
@click.option("--by", "closed_by", default="", help="Who closes it (recorded in close.json).")
@click.option("--allow-empty", is_flag=True,
              help="Close a month without events (refused otherwise: usually a mistyped month).")
def close(month: str | None, show: bool, closed_by: str, allow_empty: bool) -> None:
    """Lock a month: its charges are frozen (exports of it stay byte-for-byte the same) and later events,
    re-prices or corrections for it are booked as correction lines in the first open month."""
    from tokenmeter.cli_support import cli_settings
    from warehouse import WarehouseError, open_warehouse
    from warehouse.month_close import close_month, closed_months, closes_dir

    settings = cli_settings()
    directory = closes_dir(settings)
    if show or not month:
        if not show:
            raise click.ClickException("give --month YYYY-MM (or --list)")
        for name, info in closed_months(directory).items():
            click.echo(f"{name}  closed {info['closed_at']}  total {info['total_usd']} USD  "
                       f"{info['events']} events  {info['closed_by']}".rstrip())
        return
    try:
        wh = open_warehouse(settings)
        try:
            info = close_month(wh, directory, month, closed_by=closed_by, allow_empty=allow_empty)
        finally:
            wh.close()
    except WarehouseError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"closed {info['month']}: {info['total_usd']} USD, {info['events']} events, "
               f"{info['charges']} charges" + (f"; booked corrections for {', '.join(info['corrections_booked'])}"
                                               if info["corrections_booked"] else ""))
