"""`tokenmeter export --month YYYY-MM --format focus|csv|parquet --out FILE [--group-by team,...] [--team T]`."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path

import click
import orjson


@click.command("export")
@click.option("--month", required=True, help="Billing month, YYYY-MM (UTC).")
@click.option("--format", "fmt", type=click.Choice(["focus", "csv", "parquet"]), default="focus", show_default=True)
@click.option("--out", "out", default="-", show_default=True, help="Output file ('-' = stdout).")
@click.option("--group-by", "group_by", default="team", show_default=True,
              help="Comma-separated dimensions (report dimensions or tag:<key>); '' for one total.")
@click.option("--team", default=None, help="Only this team's usage.")
@click.option("--archived", default=None, metavar="NAME",
              help="Export the month as an archived close (one `close --list` shows, re-opened since) gave it.")
def export(month: str, fmt: str, out: str, group_by: str, team: str | None, archived: str | None) -> None:
    """Chargeback for a month as FOCUS 1.3, CSV or Parquet; totals equal `tokenmeter report`. FOCUS to a file
    also writes FILE.metadata.json (FocusVersion, column definitions). With TOKENMETER_COST_CENTERS_FILE /
    TOKENMETER_ALLOCATION_FILE set, cost centers and shared-cost allocation are applied. With --archived, the file
    a re-opened close gave (its snapshot checked against the sha256 its close recorded)."""
    from tokenmeter.cli_support import cli_settings
    from warehouse import WarehouseError, open_warehouse
    from warehouse.archived_close import archived_close_view, archived_note
    from warehouse.export import export_month
    from warehouse.finance import finance_from_settings
    from warehouse.focus import focus_metadata
    from warehouse.month_close import closes_dir, reopened_note

    settings = cli_settings()
    if out != "-":  # say so before a month's query, not with a traceback after it
        _check_writable(out)
    elif fmt == "parquet" and sys.stdout.isatty():  # binary on a screen garbles the terminal; CSV/FOCUS are text
        raise click.ClickException("Parquet is binary, not for a terminal: give --out FILE, "
                                   "or redirect stdout (> nov.parquet)")
    dims = [d.strip() for d in group_by.split(",") if d.strip()]
    note, closes = None, closes_dir(settings)
    try:
        finance = finance_from_settings(settings)
        configured = settings.cost_centers_file or settings.allocation_file
        with ExitStack() as stack:
            if archived is not None:
                closes, record = stack.enter_context(archived_close_view(closes, month, archived))
                note = archived_note(record)
            wh = open_warehouse(settings)
            stack.callback(wh.close)
            data = export_month(wh, month, fmt, dims, team=team, finance=finance if configured else None,
                                closes=closes)
    except WarehouseError as exc:
        raise click.ClickException(str(exc)) from None
    if out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        try:
            with open(out, "wb") as handle:
                handle.write(data)
        except OSError as exc:
            raise click.ClickException(f"cannot write --out {out}: {exc.strerror}") from None
        click.echo(f"wrote {len(data)} bytes to {out}", err=True)
        if fmt == "focus":  # FOCUS metadata (FocusVersion, column definitions) next to the data, as the spec asks
            from importlib.metadata import PackageNotFoundError, version

            try:
                generator = version("tokenmeter")
            except PackageNotFoundError:
                generator = ""
            meta = f"{out}.metadata.json"
            with open(meta, "wb") as handle:
                handle.write(orjson.dumps(focus_metadata(generator_version=generator), option=orjson.OPT_INDENT_2))
            click.echo(f"wrote FOCUS {focus_metadata()['Schemas'][0]['FocusVersion']} metadata to {meta}", err=True)
    note = note or reopened_note(closes_dir(settings), month.strip())
    if note:  # the file is right (each dollar once) but holds less than the month's live spend: say why
        click.echo(note, err=True)


def _check_writable(out: str) -> None:
    parent = Path(out).absolute().parent
    if not parent.is_dir():
        raise click.ClickException(f"--out {out}: directory {parent} does not exist (create it first)")
    if Path(out).is_dir():
        raise click.ClickException(f"--out {out} is a directory; give a file name")
