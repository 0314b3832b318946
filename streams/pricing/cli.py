"""`tokenmeter prices ...`: import LiteLLM's cost map, list the prices in force, explain how a model is
priced, and show how close token estimates are to provider counts."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import click
import orjson

from tokenmeter.cli_support import cli_settings, time_option
from tokenmeter.settings import Settings

from .book import PriceBook, load_price_book
from .resolve import candidate_names, canonical_provider
from .schema import MILLION, CatalogError

_LIST_PRICES = ("input", "cached_input", "output")


def _settings() -> Settings:
    return cli_settings()


def _book(settings: Settings, with_overrides: bool = True) -> PriceBook:
    try:
        if with_overrides:
            from streams import load_book

            return load_book(settings)
        # Imports are diffed against the catalog plus earlier imports, not against negotiated prices.
        return load_price_book(data_dir=settings.data_dir)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None


def _money(value: Decimal) -> str:
    return format(value.normalize(), "f")


@click.group()
def prices() -> None:
    """Price catalog: import LiteLLM's cost map, list prices in force, explain a model's price."""


# import ------------------------------------------------------------------------------------------------

@prices.command("import")
@click.argument("source")
@click.option("--providers", default=None, help="Comma-separated providers to import (default: all).")
@click.option("--dry-run", is_flag=True, help="Only show what would change; write nothing.")
@click.option("--effective-from", "effective_from", default=None, metavar="YYYY-MM-DD",
              help="Day (00:00 UTC) the added and changed prices are in force from (default: today, UTC); "
                   "events before it keep their price, or stay unpriced for a model new to the catalog.")
def import_command(source: str, providers: str | None, dry_run: bool, effective_from: str | None) -> None:
    """Import LiteLLM's model_prices_and_context_window.json from a path or http(s) URL.

    Added and changed prices are written under <data_dir>/pricing/; the worker loads them on its next start.
    """
    from .litellm_import import import_litellm_cost_map

    settings = _settings()
    since = _import_day(effective_from)
    wanted = [p.strip() for p in providers.split(",") if p.strip()] if providers else None
    book = _book(settings, with_overrides=False)
    try:
        entries, report = import_litellm_cost_map(source, None if dry_run else settings.data_dir, book=book,
                                                  providers=wanted, effective_from=since)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None
    by_key = {entry.key: entry for entry in entries}
    click.echo(f"LiteLLM cost map {source}")
    click.echo(f"  added and changed prices in force from {since.isoformat()} (00:00 UTC); events before keep "
               "their price (a new model's stay unpriced): --effective-from states another day")
    click.echo(f"  added: {len(report.added)}  changed: {len(report.changed)}  unchanged: {len(report.unchanged)}  "
               f"skipped: {sum(report.skipped.values())}  conflicts: {len(report.conflicts)}")
    for key in sorted(report.added):
        stated = by_key[key].stated if key in by_key else {}
        shown = ", ".join(f"{k} {_money(v)}" for k, v in stated.items() if "." not in k and k != "request")
        click.echo(f"  + {key}: {shown} (USD per 1M tokens)")
    for key, changes in sorted(report.changed.items()):
        click.echo(f"  ~ {key}:")
        for change in changes:  # "input: 0.15 -> 0.165"
            click.echo(f"      {change}")
    for conflict in report.conflicts:
        click.echo(f"  ! {conflict}")
    for reason, count in sorted(report.skipped.items()):
        click.echo(f"  skipped {count}: {reason}")
    if dry_run:
        click.echo("dry run: nothing written")
    elif report.written_to:
        click.echo(f"written to {report.written_to}; the worker uses it from its next start")
    else:
        click.echo("nothing to write: the catalog already has these prices")


def _import_day(value: str | None) -> date:
    if value is None:
        return datetime.now(timezone.utc).date()
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a day (YYYY-MM-DD, e.g. 2026-11-01)",
                                 param_hint="--effective-from") from None


# list --------------------------------------------------------------------------------------------------

def _rows(book: PriceBook, provider: str | None, at: datetime) -> list[dict[str, Any]]:
    wanted = canonical_provider(provider) if provider else None
    rows = []
    for entry in book.entries.values():
        if wanted and entry.provider != wanted:
            continue
        version = entry.version_at(at)
        if version is None:
            continue  # not priced yet at `at` (a future price, or only a history that starts later)
        prices = version.price_set("standard", False)
        per_million = {} if isinstance(prices, str) else {k: (v * MILLION).normalize()
                                                          for k, v in prices.per_token.items()}
        rows.append({
            "model": entry.model, "provider": entry.provider, "entry": entry.key, "mode": entry.mode,
            **{name: _money(per_million[name]) if name in per_million else None for name in _LIST_PRICES},
            "effective_from": version.effective_from.date().isoformat(), "source": version.source,
        })
    return sorted(rows, key=lambda r: (r["provider"], r["model"]))


@prices.command("list")
@click.option("--provider", default=None, help="Only this provider (any accepted spelling).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def list_command(provider: str | None, fmt: str) -> None:
    """Catalog entries in force now (USD per 1M tokens)."""
    rows = _rows(_book(_settings()), provider, datetime.now(timezone.utc))
    if fmt == "json":
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    if not rows:
        click.echo(f"no prices in force{' for provider ' + provider if provider else ''}")
        return
    headers = ("model", "provider", "input", "cached", "output", "since", "source")
    cells = [(r["model"], r["provider"], r["input"] or "-", r["cached_input"] or "-", r["output"] or "-",
              r["effective_from"], r["source"] or "-") for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    numeric = {2, 3, 4}
    for line in (headers, *cells):
        click.echo("  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                             for i, (c, w) in enumerate(zip(line, widths))).rstrip())


# show --------------------------------------------------------------------------------------------------

@prices.command("show")
@click.argument("model")
@click.option("--provider", default="", help="The event's provider (default: the model makers' own APIs).")
@click.option("--at", "at", default=None, help="Event time, ISO 8601 (default: now).")
def show_command(model: str, provider: str, at: str | None) -> None:
    """How MODEL resolves to a catalog entry and which prices apply, or why it is unpriced (exit 1)."""
    when = time_option(at, "--at") or datetime.now(timezone.utc)
    book = _book(_settings())
    _, names = candidate_names(model)
    resolution = book.resolve(provider, model)
    click.echo(f"model {model!r}, provider {provider or '(none)'!r}, at {when.isoformat()}")
    click.echo(f"  names tried: {', '.join(names)}")
    entry = resolution.entry
    if entry is None:
        click.echo(f"  UNPRICED: {resolution.reason}")
        raise SystemExit(1)
    click.echo(f"  entry: {entry.key} (matched {resolution.matched_name!r}, mode {entry.mode})")
    if entry.aliases:
        click.echo(f"  aliases: {', '.join(entry.aliases)}")
    click.echo(f"  defined in: {', '.join(dict.fromkeys(entry.origins))}")
    version = entry.version_at(when)
    click.echo("  versions:")
    for v in entry.versions:
        mark = "  <- in force" if v is version else ""
        click.echo(f"    {v.effective_from.date().isoformat()}  input {_money(v.prices['input'])}  "
                   f"output {_money(v.prices['output'])}{mark}")
    if version is None:
        first = entry.versions[0].effective_from.isoformat() if entry.versions else "never"
        click.echo(f"  UNPRICED: no price for {entry.key} in force at {when.isoformat()} (first price from {first})")
        raise SystemExit(1)
    click.echo(f"  prices in force (USD per 1M tokens; from {version.effective_from.date().isoformat()}):")
    for name, value in version.flatten().items():
        unit = "" if name.endswith("above_input_tokens") else (" USD per request" if name == "request" else "")
        click.echo(f"    {name:<40} {_money(value)}{unit}")
    tiers = ", ".join(version.tiers) if version.tiers else "standard only"
    click.echo(f"  service tiers: {tiers}")
    if len(version.input_tiers) == 1:
        click.echo(f"  long context: whole call at long_context prices above {version.long_context_above} input tokens")
    elif version.input_tiers:
        bounds = ", ".join(str(t) for t in version.thresholds)
        click.echo(f"  input tiers: whole call at the above_<n> prices of the highest threshold its input "
                   f"exceeds ({bounds})")
    if version.prices_thinking:
        click.echo("  thinking: a call with reasoning tokens pays thinking_output on all its output")
    click.echo(f"  source: {version.source or '-'}")
    if version.notes:
        click.echo(f"  notes: {version.notes}")
    if book.overrides is not None:
        click.echo(f"  overrides file in use: {book.overrides.origin} (per-organization rules may change this price)")


# coverage ----------------------------------------------------------------------------------------------

@prices.command("coverage")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per provider plus the totals.")
def coverage_command(as_json: bool) -> None:
    """Per provider: models in the catalog, the dates their prices span, and the share with a first-party source.

    A model counts as first-party when every one of its price versions is (not marked "unverified" or
    "third-party" in its notes, and not imported from LiteLLM's map).
    """
    from .coverage import coverage, totals

    rows = coverage(_book(_settings(), with_overrides=False).entries.values())
    total = totals(rows)
    if as_json:
        click.echo(orjson.dumps({"providers": [r.as_dict() for r in rows], "total": total.as_dict()},
                                option=orjson.OPT_INDENT_2).decode())
        return
    headers = ("provider", "models", "versions", "first price", "last change", "first-party models", "versions")
    cells = [(r.provider, str(r.models), str(r.versions), r.first_from or "-", r.last_change or "-",
              f"{r.first_party_models} ({r.first_party_share * 100:.0f}%)", str(r.first_party_versions))
             for r in [*rows, total]]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    numeric = {1, 2, 5, 6}
    for line in (headers, *cells):
        click.echo("  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                             for i, (c, w) in enumerate(zip(line, widths))).rstrip())


# accuracy ----------------------------------------------------------------------------------------------

@prices.command("accuracy")
@click.option("--corpus", "corpus", type=click.Path(dir_okay=False), default=None,
              help="JSON lines of calls with text and provider usage (default: the bundled corpus).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "markdown"]), default="table",
              show_default=True)
def accuracy_command(corpus: str | None, fmt: str) -> None:
    """Token estimation error per model family, against calls whose provider usage is known."""
    from streams.metering.accuracy import DEFAULT_CORPUS, CorpusError, estimation_error_table, render_table

    try:
        rows = estimation_error_table(corpus or DEFAULT_CORPUS)
    except CorpusError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(render_table(rows, fmt))


__all__ = ["prices"]
