"""`tokenmeter reprice`: price stored history again with the current price book (a price change applies by
event time), and show the old and new totals.

The pricing runs here, with the same book the worker uses (`streams.load_book`); the warehouse only stores.
When the loader owns the embedded warehouse, the changed rows are sent to it and it applies them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import click
import orjson

from tokenmeter.cli_support import cli_settings, time_option
from tokenmeter.settings import Settings


def _settings() -> Settings:
    return cli_settings()


def _money(value: Decimal) -> str:
    return format(value, "f")


def render_reprice(report, fmt: str, top: int = 10, by_owner: bool = False) -> str:  # noqa: ANN001 - RepriceReport
    if fmt == "json":
        return orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode()
    window = f"[{report.since.isoformat()}, {report.until.isoformat() if report.until else 'now'})"
    action = "dry run: nothing written" if report.dry_run else f"{report.applied} event(s) rewritten"
    if by_owner and report.applied < report.changed:
        action = f"{report.applied} of them rewritten by the warehouse owner: see below"
    lines = [
        f"window            {window}",
        f"events considered {report.events}",
        f"events changed    {report.changed} ({action})",
        f"old total USD     {_money(report.old_total)}",
        f"new total USD     {_money(report.new_total)}",
        f"difference USD    {_money(report.difference)}",
        f"unpriced events   {report.old_unpriced} -> {report.new_unpriced}",
    ]
    models = report.top_models(top)
    if models:
        rows = [("provider", "model", "changed", "old USD", "new USD", "difference USD")]
        rows += [(m.provider, m.model, str(m.changed), _money(m.old_cost), _money(m.new_cost), _money(m.difference))
                 for m in models]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines.append("")
        lines += ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                  for row in rows]
    return "\n".join(lines)


@click.command()
@click.option("--since", required=True, help="Start of the events' time (inclusive), RFC 3339 or a date.")
@click.option("--until", default=None, help="End of the events' time (exclusive); default: no end.")
@click.option("--dry-run", is_flag=True, help="Show the difference without changing the warehouse.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def reprice(since: str, until: str | None, dry_run: bool, fmt: str) -> None:
    """Re-price stored events with the current price book (prices in force at each event's time)."""
    from streams import load_book, price_event
    from warehouse import WarehouseError, open_warehouse

    start, end = time_option(since, "--since"), time_option(until, "--until")
    settings = _settings()
    try:
        book = load_book(settings)
    except ValueError as exc:  # a catalog or overrides file that does not parse
        raise click.ClickException(f"cannot load the price book: {exc}") from None
    priced_at = datetime.now(timezone.utc)
    try:
        warehouse = open_warehouse(settings)
        try:
            by_owner = not dry_run and not warehouse.backend.writable
            report = warehouse.reprice(start, end, reprice_fn=lambda event: price_event(event, book, priced_at),
                                       dry_run=dry_run, reprice_columns=columnar_reprice_columns(book, priced_at))
        finally:
            warehouse.close()
    except WarehouseError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(render_reprice(report, fmt, by_owner=by_owner))
    if by_owner and report.applied < report.changed:
        raise click.ClickException(owner_skipped(report, settings))


def owner_skipped(report, settings: Settings) -> str:  # noqa: ANN001 - warehouse.RepriceReport
    """Why the owner (the loader of `tokenmeter up`) rewrote fewer events than this shell's book changes: it names
    the events and prices each with its own settings (a caller never sets a cost), and those differ from this
    shell's. Without this the report read as done (walk31: "unpriced events 73 -> 72", exit 0, nothing changed)."""
    here = [f"TOKENMETER_PRICE_OVERRIDES={settings.price_overrides or '(unset)'}"]
    if settings.azure_deployments:
        here.append("TOKENMETER_AZURE_DEPLOYMENTS (set)")
    return (f"the warehouse owner (the loader of `tokenmeter up`) re-priced {report.applied} of the "
            f"{report.changed} event(s) this shell's price book changes: it prices them with its own settings, "
            f"those it was started with, and they differ from this shell's ({', '.join(here)}). The totals above "
            "are this shell's, not the warehouse's. Start `tokenmeter up` with the same settings (stop it, export "
            "them, start it again: new events need them too), or stop it and run `tokenmeter reprice` again; "
            "`<data_dir>/pricing` imports (`tokenmeter prices import`) are read by both.")


def columnar_reprice_batch(book, priced_at: datetime):  # noqa: ANN001, ANN201 - PriceBook -> RepriceBatchFn
    """A day of stored rows priced at once on the worker's columnar path (streams.columnar): each row's new
    PricedEvent JSON, exactly what `warehouse.reprice.reprice_row` gives (the columnar path is byte-identical to
    `price_event`; tokens_source is the stored one). None when any row does not price there (a stored row the
    contract now refuses): the day then takes the per-row path, whose error names the event."""
    from streams.batch import RawRecord
    from streams.columnar import process_batch_columnar
    from tokenmeter.microbatch import MAX_EVENTS_PER_RECORD
    from warehouse.reprice import stored_event_json

    def reprice_batch(rows: list[dict]) -> list[dict] | None:
        events = [stored_event_json(row) for row in rows]
        records = [RawRecord(orjson.dumps(events[i:i + MAX_EVENTS_PER_RECORD]), "reprice", 0, i)
                   for i in range(0, len(events), MAX_EVENTS_PER_RECORD)]
        result = process_batch_columnar(records, book, now=priced_at)
        if result.deadletters or result.priced_count != len(rows):
            return None
        priced = [event for _, _, event in result.origins]
        for row, event in zip(rows, priced):
            event["tokens_source"] = row["tokens_source"]
        return priced

    return reprice_batch


def columnar_reprice_columns(book, priced_at: datetime):  # noqa: ANN001, ANN201 - PriceBook -> RepriceColumnsFn
    """Stored rows (Arrow) priced as columns by the worker's as-of join (streams.columnar.reprice.price_stored):
    what `tokenmeter reprice` uses. Each row's pricing columns are exactly what the per-row path stores; the rows
    it leaves (`columnar` false) take that path."""
    from streams.columnar.reprice import price_stored

    return lambda table: price_stored(table, book, priced_at)
