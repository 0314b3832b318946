"""`tokenmeter budget ...`: create, list, delete and apply budgets in the `tokenmeter.budgets` topic."""

from __future__ import annotations

from typing import Any

import click
import orjson

from tokenmeter.cli_support import cli_settings

from .model import BudgetError, parse_budget
from .store import BudgetStoreError, delete_budget, load_budgets, parse_budget_file, public_budget, write_budgets


def _bootstrap() -> str:
    return cli_settings().bootstrap_servers


def _data_dir() -> Any:
    """Where notify secrets are stored (0600): the dispatcher must share this data directory."""
    return cli_settings().data_dir


def _parse_scope(value: str | None) -> dict[str, str]:
    """`team=search,user=ana,tag:env=prod` -> mapping; dimension names are checked by the model."""
    scope: dict[str, str] = {}
    for part in (value or "").split(","):
        if not part.strip():
            continue
        key, sep, val = part.partition("=")
        if not sep:
            raise click.BadParameter(f"{part!r} is not DIMENSION=VALUE", param_hint="--scope")
        scope[key.strip()] = val.strip()
    return scope


def _parse_thresholds(value: str | None) -> list[Any] | None:
    if value is None:
        return None
    return [int(p) if p.strip().isdigit() else p.strip() for p in value.split(",") if p.strip()]


@click.group()
def budget() -> None:
    """Budgets per team, user, key, model or tag: alert at thresholds, throttle or block at 100%."""


@budget.command("set")
@click.argument("name")
@click.option("--scope", help="DIM=VALUE[,DIM=VALUE...]: org, team, project, user, api_key, feature, model, "
                              "provider or tag:KEY. Empty: all traffic.")
@click.option("--period", default="month", show_default=True, help="day, week, month, rolling:<N>h or rolling:<N>d.")
@click.option("--tz", default="UTC", show_default=True, help="IANA time zone of calendar periods.")
@click.option("--limit-usd", help="Limit in USD (decimal), metric cost_usd.")
@click.option("--limit-tokens", help="Limit in tokens (input + output), metric tokens.")
@click.option("--thresholds", help="Alert thresholds in percent, e.g. 50,80,100 (default).")
@click.option("--action", default="alert", show_default=True, help="At 100%: alert, throttle or block.")
@click.option("--notify", multiple=True, help="slack=URL, pagerduty=ROUTING_KEY or webhook=URL (repeatable).")
def set_budget(name: str, scope: str | None, period: str, tz: str, limit_usd: str | None, limit_tokens: str | None,
               thresholds: str | None, action: str, notify: tuple[str, ...]) -> None:
    """Create or replace budget NAME."""
    if (limit_usd is None) == (limit_tokens is None):
        raise click.UsageError("give exactly one of --limit-usd or --limit-tokens")
    data: dict[str, Any] = {
        "name": name, "scope": _parse_scope(scope), "period": period, "tz": tz, "action": action,
        "metric": "cost_usd" if limit_usd is not None else "tokens",
        "limit": limit_usd if limit_usd is not None else limit_tokens, "notify": list(notify),
    }
    parsed_thresholds = _parse_thresholds(thresholds)
    if parsed_thresholds is not None:
        data["thresholds"] = parsed_thresholds
    try:
        new = parse_budget(data)
        write_budgets(_bootstrap(), [new], _data_dir())
    except (BudgetError, BudgetStoreError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"budget {name!r} saved")


def _row(b: Any) -> list[str]:
    unit = "USD" if b.metric == "cost_usd" else "tokens"
    scope = ",".join(f"{k}={v}" for k, v in sorted(b.scope.items())) or "(all)"
    period = b.period if b.rolling_hours is not None else f"{b.period} {b.tz}"
    return [b.name, scope, period, f"{format(b.limit, 'f') if unit == 'USD' else b.limit} {unit}",
            ",".join(map(str, b.thresholds)), b.action, str(len(b.notify))]


@budget.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def list_budgets(fmt: str) -> None:
    """List the budgets in force."""
    try:
        budgets = load_budgets(_bootstrap(), fetch_wait=cli_settings().fetch_wait)
    except BudgetStoreError as exc:
        raise click.ClickException(str(exc)) from None
    ordered = [budgets[n] for n in sorted(budgets)]
    if fmt == "json":
        shown = [public_budget(b) for b in ordered]  # routes masked (plain legacy entries too)
        click.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
        return
    rows = [["name", "scope", "period", "limit", "thresholds", "action", "routes"]] + [_row(b) for b in ordered]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    # walk33: where a user looks for a budget, say where its spend is and what a mid-period definition means
    click.echo("spend: the dashboard's Budgets page or /v1/budgets. A budget defined mid-period adds its period's "
               "spend from before it seconds later (spend_before_definition: pending, then counted); 'unknown' "
               "(state from before 2026-12-07): with the workers stopped, `tokenmeter budget rebuild --all` (restarting "
               "`tokenmeter up` does it).")


@budget.command("delete")
@click.argument("name")
def delete(name: str) -> None:
    """Delete budget NAME (a tombstone in the compacted topic)."""
    bootstrap = _bootstrap()
    try:
        if name not in load_budgets(bootstrap, fetch_wait=cli_settings().fetch_wait):
            raise click.ClickException(f"no budget named {name!r}")
        delete_budget(bootstrap, name)
    except BudgetStoreError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"budget {name!r} deleted")


@budget.command("apply")
@click.argument("file", type=click.Path(dir_okay=False))
def apply(file: str) -> None:
    """Create or replace every budget of a YAML FILE (a list of budgets); nothing is written if any is invalid."""
    try:
        budgets = parse_budget_file(file)
        write_budgets(_bootstrap(), budgets, _data_dir())
    except BudgetStoreError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{len(budgets)} budget(s) applied: {', '.join(b.name for b in budgets)}")
