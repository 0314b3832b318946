"""The columnar re-price (warehouse/reprice_columnar.py + streams/columnar/reprice.py) against the per-row one
(`Warehouse.reprice(reprice_batch=...)`, what `tokenmeter reprice` ran before): the same dry-run report, the same
new copies handed to the owner (every column), the same stored rows and rollups afterwards, and a closed month
stays frozen (its change becomes a correction in the first open month).

The stored history is the worker's randomised corpus (streams/columnar/corpus.py: tiers, cache reads and writes,
batch, tool requests, provider-reported costs, unknown models, errors) priced with the bundled catalog, spread over
two months, with about half the rows stored at other prices (cost, breakdown, status or price version); the new
book adds a negotiated rule and a custom model, so rows of every kind (priced as columns, left to the per-row
path) change. Size: TOKENMETER_REPRICE_EQUIVALENCE_EVENTS corpus records (default 2,000: 4,611 stored events, a
few seconds); `TOKENMETER_REPRICE_EQUIVALENCE_EVENTS=100000 .venv/bin/python -m pytest -q tests/warehouse/
test_warehouse_reprice_columnar.py` is the large run (186,862 stored events, ~4 minutes).
"""

from __future__ import annotations

import itertools
import os
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pyarrow as pa
import pytest

from app.reprice_cli import columnar_reprice_batch, columnar_reprice_columns
from streams import price_event
from streams.batch import process_batch
from streams.columnar.corpus import Corpus
from streams.columnar.reprice import price_stored
from streams.pricing import load_price_book
from warehouse.arrow_rows import build_batch
from warehouse.backends import WarehouseError
from warehouse.export import export_month
from warehouse.month_close import close_month
from warehouse.reprice import _COLUMN_LIST

pytestmark = pytest.mark.slow(seconds=35)

RECORDS = int(os.environ.get("TOKENMETER_REPRICE_EQUIVALENCE_EVENTS", "2000"))
START = datetime(2026, 3, 20, tzinfo=timezone.utc)  # this module's own months: March (closed) and April 2026
SPAN = timedelta(days=20)
OVERRIDES = """
custom_models:
  self-hosted:
    source: internal GPU cost model
    models:
      llama-3.1-8b-internal:
        versions:
          - {effective_from: 2025-01-01, input: "0.05", output: "0.10", request: "0.0001"}
negotiated:
  - name: anthropic-spring
    providers: [anthropic]
    effective_from: 2026-03-25
    discount_percent: "7.5"
"""


def stored_history(org: str, records: int, seed: int) -> list[dict]:
    """Priced corpus events of `org` over [START, START + SPAN), about half stored at other prices."""
    book = load_price_book()
    rng = random.Random(seed)
    corpus = list(itertools.islice(Corpus(book, seed).records(records * 3), records))
    events = [orjson.loads(e) for batch in range(0, len(corpus), 5000)
              for values in process_batch(corpus[batch:batch + 5000], book).priced.values() for e in values]
    # What Decimal(18,12) can store, now and after the re-price (`test_a_cost_too_large_to_store_...` has the rest)
    events = [e for e in events if len(e["cost_usd"].split(".")[0]) <= 6
              and max(v for k, v in e["usage"].items() if k != "tool_requests") < 10**9]
    step = SPAN / max(len(events), 1)
    for i, event in enumerate(events):
        event["ts"] = (START + step * i).isoformat()
        event["attribution"]["org"] = org
        event["event_id"] = f"{org}-{i}-{event['event_id']}"
        event.pop("correlation", None)  # cross-source ids make the loader skip copies of one call: keep every row
        kind = rng.random()
        if kind < 0.2 and event["pricing_status"] == "priced":  # an older price
            cost = Decimal(event["cost_usd"]) * Decimal("0.8")
            event["cost_usd"] = format(cost.quantize(Decimal("1e-12")), "f")
            event["cost_breakdown"] = {"input": event["cost_usd"]}
        elif kind < 0.3 and event.get("price"):  # an older version of the entry
            event["price"]["effective_from"] = "2023-01-01"
        elif kind < 0.4:  # priced before the model was in the catalog
            event.update(cost_usd="0", cost_breakdown={}, pricing_status="unpriced",
                         unpriced_reason="no price yet")
            event.pop("price", None)
        elif kind < 0.45 and event["pricing_status"] == "priced":  # same lines, other order: not a change
            event["cost_breakdown"] = dict(reversed(event["cost_breakdown"].items()))
    return events


def _sorted_rows(table: pa.Table) -> list[dict]:
    return sorted(table.select(
        [name for name in table.column_names if name != "loaded_at"]).to_pylist(), key=lambda r: r["event_id"])


def test_columnar_reprice_gives_what_the_per_row_path_gives(wh, org, tmp_path, monkeypatch):
    events = stored_history(org, RECORDS, seed=11)
    assert wh.insert_priced(events) == len(events)
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(OVERRIDES)
    book = load_price_book(overrides_path=overrides)
    now = datetime.now(timezone.utc)

    stored = wh.backend.query_arrow(f"SELECT {_COLUMN_LIST} FROM priced_events WHERE org = {{org:String}}",
                                    {"org": org})
    columnar = price_stored(stored, book, now).column("columnar").to_pylist()
    assert columnar.count(False) > 100 and columnar.count(True) > 1000  # both paths are exercised

    def reprice_fn(event):
        return price_event(event, book, now)

    window = (START, START + SPAN)
    old_dry = wh.reprice(*window, reprice_fn=reprice_fn, dry_run=True, reprice_batch=columnar_reprice_batch(book, now))
    new_dry = wh.reprice(*window, reprice_fn=reprice_fn, dry_run=True,
                         reprice_columns=columnar_reprice_columns(book, now))
    assert new_dry.to_json() == old_dry.to_json()
    assert new_dry.models == old_dry.models
    assert old_dry.events == len(events) and 0 < old_dry.changed < old_dry.events
    assert old_dry.old_unpriced != old_dry.new_unpriced

    # What each path hands the owner to apply: the same new copies, column for column.
    handed_rows: list[dict] = []
    handed_tables: list[pa.Table] = []
    monkeypatch.setattr(wh, "apply_repriced_events", lambda changed: handed_rows.extend(changed) or len(changed))
    wh.reprice(*window, reprice_fn=reprice_fn, reprice_batch=columnar_reprice_batch(book, now))
    monkeypatch.setattr(wh, "stage_repriced_table", lambda table: handed_tables.append(table) or table.num_rows)
    wh.reprice(*window, reprice_fn=reprice_fn, reprice_columns=columnar_reprice_columns(book, now))
    monkeypatch.undo()
    old_table, _, errors = build_batch(handed_rows)
    assert not errors
    expected = _sorted_rows(old_table)
    assert _sorted_rows(pa.concat_tables(handed_tables)) == expected
    assert len(expected) == old_dry.changed

    # A closed month stays as it was closed; its change becomes corrections in the first open month.
    closes = tmp_path / "closes"
    close_month(wh, closes, "2026-03", closed_by="test")
    march = export_month(wh, "2026-03", "focus", ["team"], closes=closes)
    report = wh.reprice(*window, reprice_fn=reprice_fn, reprice_columns=columnar_reprice_columns(book, now))
    assert report.to_json() == {**old_dry.to_json(), "dry_run": False, "applied": old_dry.changed}
    stored_now = wh.backend.query_arrow(
        f"SELECT {_COLUMN_LIST} FROM priced_events WHERE org = {{org:String}}", {"org": org})
    by_id = {row["event_id"]: row for row in _sorted_rows(stored_now)}
    assert len(by_id) == stored_now.num_rows == len(events)  # one copy each
    assert [by_id[row["event_id"]] for row in expected] == expected
    raw, rollup = (wh.query(f"SELECT toString(sum(cost_usd)) AS c, toInt64(sum({n})) AS n FROM {t}"
                            " WHERE org = {org:String}", {"org": org}).to_dicts()[0]
                   for t, n in (("priced_events", "1"), ("spend_hourly", "events")))
    assert Decimal(raw["c"]) == Decimal(rollup["c"]) == report.new_total and raw["n"] == rollup["n"] == len(events)
    assert export_month(wh, "2026-03", "focus", ["team"], closes=closes) == march
    april = export_month(wh, "2026-04", "focus", ["team"], closes=closes).decode()
    assert "Correction" in april and "2026-03" in april

    again = wh.reprice(*window, reprice_fn=reprice_fn, reprice_columns=columnar_reprice_columns(book, now))
    assert (again.changed, again.applied, again.new_total) == (0, 0, report.new_total)


def test_a_cost_too_large_to_store_is_refused_by_both_paths_alike(wh, org, make_event):
    """A stored row whose new price does not fit Decimal(18,12) stops the re-price with the same error on both
    paths (the columnar pricer leaves it to the per-row path, whose error names the event)."""
    event = make_event(f"{org}-huge", org, ts="2026-05-02T10:00:00Z", input_tokens=10**12 - 1, output_tokens=0)
    event["usage"].update(cached_input_tokens=0, reasoning_tokens=0)
    assert wh.insert_priced([event]) == 1
    book, now = load_price_book(), datetime.now(timezone.utc)
    window = (datetime(2026, 5, 2, tzinfo=timezone.utc), datetime(2026, 5, 3, tzinfo=timezone.utc))
    errors = []
    for path in ({"reprice_batch": columnar_reprice_batch(book, now)},
                 {"reprice_columns": columnar_reprice_columns(book, now)}):
        with pytest.raises(WarehouseError) as caught:
            wh.reprice(*window, reprice_fn=lambda e: price_event(e, book, now), dry_run=True, **path)
        errors.append(str(caught.value))
    assert errors[0] == errors[1] and f"{org}-huge" in errors[0] and "does not fit Decimal(18,12)" in errors[0]


def test_a_re_price_over_what_the_warehouse_stores_writes_nothing(wh, org, make_event):
    """cap33: a re-price that would price a stored call at or above 1,000,000 USD (tokenmeter/stored_money.py) is
    refused with the error that names the event, its amount and the limit; it writes no corrupt, zero or second row:
    every stored row keeps its price, the other events' changes of the window included (they are applied only
    after the whole window priced, or per OWNER_APPLY_BATCH changes: docs/warehouse.md)."""
    normal = make_event(f"{org}-normal", org, ts="2026-05-04T10:00:00Z", cost="0.5")  # its catalog price differs
    huge = make_event(f"{org}-huge", org, ts="2026-05-05T10:00:00Z", input_tokens=10**12 - 1, output_tokens=0)
    huge["usage"].update(cached_input_tokens=0, reasoning_tokens=0)
    assert wh.insert_priced([normal, huge]) == 2
    book, now = load_price_book(), datetime.now(timezone.utc)
    window = (datetime(2026, 5, 4, tzinfo=timezone.utc), datetime(2026, 5, 6, tzinfo=timezone.utc))
    with pytest.raises(WarehouseError) as caught:
        wh.reprice(*window, reprice_fn=lambda e: price_event(e, book, now),
                   reprice_columns=columnar_reprice_columns(book, now))
    assert f"{org}-huge" in str(caught.value) and "below 1,000,000 USD" in str(caught.value), caught.value
    stored = wh.query("SELECT event_id, toString(cost_usd) AS c FROM priced_events WHERE org = {org:String} "
                      "ORDER BY event_id", {"org": org}).rows()
    assert stored == [(f"{org}-huge", "0.000123"), (f"{org}-normal", "0.5")]


def test_the_columnar_pricing_schema_is_the_warehouse_s_own():
    """streams/columnar/reprice.PRICED_SCHEMA restates the pricing columns of `priced_events` (a stage below the
    warehouse cannot import its schema): every column it hands back has the warehouse's name and type, so a
    migration that changes one fails here instead of in a cast at apply time."""
    from streams.columnar.reprice import PRICED_SCHEMA
    from warehouse.schema import ARROW_SCHEMA

    restated = [field for field in PRICED_SCHEMA if field.name != "columnar"]  # the path's own routing flag
    assert restated and all(ARROW_SCHEMA.field(field.name).type == field.type for field in restated), [
        (field.name, field.type, ARROW_SCHEMA.field(field.name).type) for field in restated
        if ARROW_SCHEMA.field(field.name).type != field.type]
