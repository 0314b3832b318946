"""`tokenmeter showback --month YYYY-MM [--by team|cost_center] [--format table|json|csv] [--team T]`: the
month's spend per team or cost center with direct, allocated, corrections (of closed months) and total cost side
by side."""

from __future__ import annotations

import os

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
    from warehouse.finance import corrections_note, finance_from_settings, showback_and_corrected, unpriced_note
    from warehouse.month_close import closes_dir, reopened_note
    from warehouse.report import render_report

    settings = cli_settings()
    try:
        config = finance_from_settings(settings)
        start, end = month_bounds(month)
        wh = open_warehouse(settings)
        try:
            unpriced: dict[str, int] = {}
            frame, corrected = showback_and_corrected(wh, config, start, end, by=by, team=team,
                                                      closes=closes_dir(settings), unpriced=unpriced)
        finally:
            wh.close()
    except WarehouseError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(render_report(frame, fmt), nl=False)
    if fmt == "table" and corrected:
        click.echo(corrections_note(month.strip(), corrected))
    unpriced = {name: count for name, count in unpriced.items() if count > 0}
    if fmt == "table" and unpriced:
        click.echo(unpriced_note(unpriced, start, end))
    note = reopened_note(closes_dir(settings), month.strip()) if fmt == "table" else ""
    if note:
        click.echo(note)


@click.command("close")
@click.option("--month", default=None, help="Month to close, YYYY-MM (UTC); it must have ended.")
@click.option("--list", "show", is_flag=True, help="List closed months, and the closes re-opened before, instead.")
@click.option("--by", "closed_by", default=None,
              help="Who closes it (recorded in close.json; default: the login name running the command).")
@click.option("--allow-empty", is_flag=True,
              help="Close a month without events (refused otherwise: usually a mistyped month).")
def close(month: str | None, show: bool, closed_by: str | None, allow_empty: bool) -> None:
    """Lock a month: its charges are frozen (exports of it stay byte-for-byte the same) and later events,
    re-prices or corrections for it are booked as correction lines in the first open month."""
    from tokenmeter.cli_support import cli_settings
    from warehouse import WarehouseError, open_warehouse
    from warehouse.month_close import close_month, closed_months, closes_dir
    from warehouse.month_reopen import reopen_history

    settings = cli_settings()
    directory = closes_dir(settings)
    if show or not month:
        if not show:
            raise click.ClickException("give --month YYYY-MM (or --list)")
        try:
            closed, reopened = closed_months(directory), reopen_history(directory)
        except WarehouseError as exc:  # a damaged close.json / reopen.json, named (walk29)
            raise click.ClickException(str(exc)) from None
        for name in sorted({*closed, *(r["month"] for r in reopened)}):
            for record in (r for r in reopened if r["month"] == name):  # the history first, oldest first
                click.echo(_reopened_line(record))
            if name in closed:
                info = closed[name]
                click.echo(f"{name}  closed {info.get('closed_at', '?')}  total {info.get('total_usd', '?')} USD  "
                           f"{info.get('events', '?')} events  {info.get('closed_by', '')}".rstrip())
        return
    by_login = closed_by is None  # a close records who made it, as a re-open does
    closed_by = _login_name() if by_login else closed_by
    try:
        wh = open_warehouse(settings)
        try:
            info = close_month(wh, directory, month, closed_by=closed_by, allow_empty=allow_empty,
                               finance_files=(settings.cost_centers_file, settings.allocation_file))
        finally:
            wh.close()
    except WarehouseError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"closed {info['month']}: {info['total_usd']} USD, {info['events']} events, "
               f"{info['charges']} charges" + (f"; booked corrections for {', '.join(info['corrections_booked'])}"
                                               if info["corrections_booked"] else ""))
    if by_login:
        click.echo(f"closed by {info['closed_by']} (the login name; --by names someone else)")
    click.echo(_finance_line(info["finance"]))


def _login_name() -> str:
    """Who runs the command, as `close` records it without --by: the login name, else the numeric user (a container
    user without a passwd entry)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _finance_line(finance: dict) -> str:
    """Which finance files the close kept: a month closed without them stays unmapped in every later export."""
    kept = [f"{finance[f'{kind}_file']} (sha256 {finance[f'{kind}_sha256'][:12]})"
            for kind in ("cost_centers", "allocation") if finance.get(f"{kind}_file")]
    if kept:
        return f"kept with the close, for every export of it: {', '.join(kept)}"
    return ("no finance files (TOKENMETER_COST_CENTERS_FILE, TOKENMETER_ALLOCATION_FILE): the month is closed without "
            "cost centers or allocation; to add them, reopen it and close it with the files set")


def _reopened_line(record: dict) -> str:
    close = record.get("close", {})
    was = (f"was closed {close.get('closed_at', '?')}  total {close.get('total_usd', '?')} USD  "
           f"{close.get('events', '?')} events  {close.get('closed_by', '')}").rstrip()
    along = f" (with {record['reopened_with']})" if record.get("reopened_with") else ""
    return (f"{record['month']}  re-opened {record['reopened_at']}  by {record['reopened_by']}{along}: "
            f"{record['reason']}  [{was}; kept in closes/{record['archived']}]")


@click.command("reopen")
@click.option("--month", required=True, help="Closed month to re-open, YYYY-MM (UTC).")
@click.option("--by", "reopened_by", required=True, help="Who re-opens it (kept with the archived close).")
@click.option("--reason", required=True, help="Why (kept with the archived close).")
@click.option("--cascade", is_flag=True,
              help="Also re-open the later closed months that booked corrections of it (refused otherwise).")
def reopen(month: str, reopened_by: str, reason: str, cascade: bool) -> None:
    """Re-open a closed month to restate it: its close is archived with who, when and why (never deleted; listed by
    `close --list`), its numbers are live again until `close --month` freezes them again."""
    from tokenmeter.cli_support import cli_settings
    from warehouse import WarehouseError
    from warehouse.month_close import closes_dir
    from warehouse.month_reopen import reopen_month

    directory = closes_dir(cli_settings())
    try:
        done = reopen_month(directory, month, reopened_by=reopened_by, reason=reason, cascade=cascade)
    except WarehouseError as exc:
        raise click.ClickException(str(exc)) from None
    for record in done:
        close = record["close"]
        along = f", with {record['reopened_with']}" if record["reopened_with"] else ""
        click.echo(f"re-opened {record['month']}{along} (closed {close['closed_at']} by {close.get('closed_by') or '?'}"
                   f", {close['total_usd']} USD; kept in {directory / record['archived']})")
    months = [record["month"] for record in reversed(done)]
    click.echo("close again oldest first: " + ", then ".join(f"tokenmeter close --month {m}" for m in months))
