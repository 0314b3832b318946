"""`tokenmeter showback --month YYYY-MM [--by team|cost_center] [--format table|json|csv] [--team T]`: the
month's spend per team or cost center with direct, allocated and total cost side by side."""

from __future__ import annotations

import click


@click.command("showback")
@click.option("--month", required=True, help="Billing month, YYYY-MM (UTC).")
@click.option("--by", type=click.Choice(["team", "cost_center"]), default="team", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--team", default=None, help="Only this team's rows.")
def showback(month: str, by: str, fmt: str, team: str | None) -> None:
    """Direct, allocated and total cost per team or cost center, with GL account and owner (from
    TOKENMETER_COST_CENTERS_FILE; allocation rules from it or TOKENMETER_ALLOCATION_FILE). Unmapped spend is
    the row "unmapped"; untagged usage is team "" ("(none)" in the table)."""
    from tokenmeter.settings import SettingsError, load_settings
    from warehouse import WarehouseError, open_warehouse
    from warehouse.export import month_bounds
    from warehouse.finance import finance_from_settings, finance_showback
    from warehouse.report import render_report

    try:
        settings = load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        config = finance_from_settings(settings)
        start, end = month_bounds(month)
        wh = open_warehouse(settings)
        try:
            frame = finance_showback(wh, config, start, end, by=by, team=team)
        finally:
            wh.close()
    except WarehouseError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(render_report(frame, fmt), nl=False)
