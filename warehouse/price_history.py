"""`price_catalog_history`: every version of every catalog entry the owner has seen, with per-1M-token prices,
so stored events (which keep their price entry and version) can be explained and cache savings computed.

The warehouse does not import the pricing stage: `price_catalog_rows` reads any object shaped like
`streams.pricing.PriceBook` (entries -> versions -> prices), handed in by whoever opens the warehouse."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pyarrow as pa

from tokenmeter.timefmt import iso_effective  # the text priced events store in price.effective_from
from warehouse.backends import WarehouseError

PRICE = pa.decimal128(18, 9)
NAMED = {"input": "input", "cached_input": "cached_input", "cache_write_5m": "cache_write",
         "cache_write": "cache_write", "cache_write_1h": "cache_write_1h", "output": "output", "reasoning": "reasoning"}
COLUMNS = ("input", "cached_input", "cache_write", "cache_write_1h", "output", "reasoning")
SCHEMA = pa.schema(
    [("entry", pa.string()), ("provider", pa.string()), ("model", pa.string()), ("effective_from", pa.string())]
    + [(name, PRICE) for name in COLUMNS]
    + [("other_prices", pa.map_(pa.string(), PRICE)), ("source", pa.string()), ("catalog_version", pa.string()),
       ("loaded_at", pa.timestamp("ms", tz="UTC"))]
)
_NINE = Decimal("1e-9")


def _price(value: Any, where: str) -> Decimal:
    amount = Decimal(str(value))
    if amount != amount.quantize(_NINE) or abs(amount) >= Decimal("1e9"):
        raise WarehouseError(f"{where}: {value} does not fit Decimal(18,9) per 1M tokens")
    return amount


def price_catalog_rows(book: Any) -> list[dict[str, Any]]:
    """Rows for `Warehouse.record_price_catalog` from a price book (`book.entries`: key -> entry with
    provider, model, versions[effective_from, prices (USD per 1M tokens), source]; `book.catalog_version`)."""
    rows = []
    for key, entry in sorted(book.entries.items()):
        for version in entry.versions:
            row: dict[str, Any] = {"entry": key, "provider": entry.provider, "model": entry.model,
                                   "effective_from": iso_effective(version.effective_from), "other_prices": {},
                                   "source": version.source or "", "catalog_version": book.catalog_version}
            for name, value in (version.prices or {}).items():
                column = NAMED.get(name)
                if column:
                    row[column] = value
                else:
                    row["other_prices"][name] = value
            rows.append(row)
    return rows


def new_price_rows(backend: Any, rows: list[dict[str, Any]]) -> int:
    """Insert the rows whose (entry, effective_from, catalog_version) is not stored yet; returns how many."""
    stored = {
        (r["entry"], r["effective_from"], r["catalog_version"])
        for r in backend.query_arrow(
            "SELECT DISTINCT entry, effective_from, catalog_version FROM price_catalog_history").to_pylist()
    }
    now = datetime.now(timezone.utc)
    fresh = []
    for row in rows:
        key = (row["entry"], row["effective_from"], row["catalog_version"])
        if key in stored:
            continue
        stored.add(key)
        where = f"price of {row['entry']} from {row['effective_from']}"
        fresh.append({
            "entry": row["entry"], "provider": row["provider"], "model": row["model"],
            "effective_from": row["effective_from"],
            **{name: (_price(row[name], f"{where}: {name}") if row.get(name) is not None else None) for name in COLUMNS},
            "other_prices": [(k, _price(v, f"{where}: {k}")) for k, v in (row.get("other_prices") or {}).items()],
            "source": row.get("source") or "", "catalog_version": row["catalog_version"], "loaded_at": now,
        })
    if fresh:
        table = pa.Table.from_pydict({name: [r[name] for r in fresh] for name in SCHEMA.names}, schema=SCHEMA)
        backend.insert_arrow("price_catalog_history", table)
    return len(fresh)
