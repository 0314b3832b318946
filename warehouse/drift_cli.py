"""`tokenmeter drift`: provider-billed vs metered cost per day, provider and model, with coverage and the likely
cause of each gap; `--publish` puts an alert per drifting row in the outbox (delivered by the alert dispatcher to its
TOKENMETER_FINANCE_NOTIFY)."""

from __future__ import annotations

from datetime import date

import click


def _day(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"expected YYYY-MM-DD, got {value!r}", param_hint=name) from None


@click.command("drift")
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 400),
              help="Check the last N whole UTC days (provider reports of today are not final).")
@click.option("--since", default=None, help="First day, YYYY-MM-DD (instead of --days).")
@click.option("--until", default=None, help="Day after the last, YYYY-MM-DD (default: today).")
@click.option("--provider", default=None, help="Only this provider.")
@click.option("--totals", is_flag=True, help="Per day and provider instead of per model.")
@click.option("--only-drift", is_flag=True, help="Only rows whose gap passes the thresholds.")
@click.option("--publish", is_flag=True, help="Send an alert per drifting row to the alert outbox.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
def drift(days: int, since: str | None, until: str | None, provider: str | None, totals: bool, only_drift: bool,
          publish: bool, fmt: str) -> None:
    """Compare the providers' cost reports (`tokenmeter collect openai-usage` / `anthropic-usage`) with the
    metered cost. A gap above TOKENMETER_DRIFT_THRESHOLD_PCT (5 %) of the bill and TOKENMETER_DRIFT_MIN_USD (1)
    is drift; its likely cause is unpriced_model, missing_source, price_change or unknown (docs/finance.md)."""
    import polars as pl

    from tokenmeter.cli_support import cli_settings
    from warehouse import WarehouseError, open_warehouse
    from warehouse.drift import Thresholds, as_dicts, complete_days, drift_alerts
    from warehouse.drift import drift as compute
    from warehouse.report import render_report

    settings = cli_settings()
    first, end = complete_days(days, _day(until, "--until"))
    first = _day(since, "--since") or first
    if first >= end:
        raise click.BadParameter("--since must be before --until", param_hint="--since")
    limits = Thresholds.from_settings(settings)
    try:
        wh = open_warehouse(settings)
        try:
            rows, provider_totals = compute(wh, first, end, limits, provider)
        finally:
            wh.close()
    except WarehouseError as exc:
        raise click.ClickException(str(exc)) from None
    shown = provider_totals if totals else rows
    if only_drift:
        shown = [r for r in shown if r.cause]
    if not shown and fmt == "table":
        click.echo(f"no provider cost reports between {first} and {end} (run `tokenmeter collect openai-usage` or "
                   "`anthropic-usage`)" if not rows else
                   # The thresholds differ between shells (`up --demo` gives its children 0.10 USD): say which held.
                   f"no drift: no gap above {_plain(limits.pct)}% of the bill and {_plain(limits.min_usd)} USD "
                   "(TOKENMETER_DRIFT_THRESHOLD_PCT, TOKENMETER_DRIFT_MIN_USD)")
    else:
        click.echo(render_report(pl.DataFrame(as_dicts(shown), infer_schema_length=None), fmt), nl=False)
    if publish:
        from streams.alerts.outbox import publish_finance_alerts_from_cli

        alerts = drift_alerts(rows, provider_totals, limits)
        publish_finance_alerts_from_cli(settings, alerts, "drift")


def _plain(value) -> str:
    """5, 0.1, 1000: a setting as one would type it (settings hold floats: 1000.0, 0.10)."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
