"""`tokenmeter completeness`: per source, the last event, events in the last hour against its usual level, dead
letters in the last hour, and whether it is stale, dropping or rejecting; `--publish` alerts on problems
(delivered by the alert dispatcher to its TOKENMETER_FINANCE_NOTIFY)."""

from __future__ import annotations

from datetime import datetime, timezone

import click


@click.command("completeness")
@click.option("--at", "at", default=None, help="Judge as of this RFC 3339 time (default: now).")
@click.option("--problems", is_flag=True, help="Only sources with a problem.")
@click.option("--publish", is_flag=True, help="Send an alert per source with a problem to the alert outbox.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
def completeness(at: str | None, problems: bool, publish: bool, fmt: str) -> None:
    """Is every source (gateway or collector dialect, dead-lettering stage, provider usage poller) still sending
    as usual? Limits: TOKENMETER_COMPLETENESS_STALE_MINUTES (60), _DROP_RATIO (0.5), _MIN_PER_HOUR (10),
    _POLLER_STALE_HOURS (26); see docs/finance.md."""
    import polars as pl

    from tokenmeter.cli_support import cli_settings
    from warehouse import WarehouseError, open_warehouse
    from warehouse.completeness import Limits, as_dicts, completeness_alert, source_health
    from warehouse.report import render_report

    settings = cli_settings()
    try:
        now = datetime.fromisoformat(at) if at else datetime.now(timezone.utc)
    except ValueError:
        raise click.BadParameter(f"expected an RFC 3339 time, got {at!r}", param_hint="--at") from None
    now = now.replace(tzinfo=timezone.utc) if now.tzinfo is None else now.astimezone(timezone.utc)
    try:
        wh = open_warehouse(settings)
        try:
            rows = source_health(wh, now, Limits.from_settings(settings))
        finally:
            wh.close()
    except WarehouseError as exc:
        raise click.ClickException(str(exc)) from None
    shown = [h for h in rows if h.problem] if problems else rows
    if not shown and fmt == "table":
        click.echo("no sources seen in the last 8 days" if not rows else "every source is sending as usual")
    else:
        click.echo(render_report(pl.DataFrame(as_dicts(shown, for_people=fmt == "table"), infer_schema_length=None),
                                 fmt), nl=False)
    if publish:
        from streams.alerts.outbox import publish_finance_alerts_from_cli

        alerts = [completeness_alert(h, now) for h in rows if h.problem]
        publish_finance_alerts_from_cli(settings, alerts, "completeness")
