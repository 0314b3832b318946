"""Warehouse stage: ClickHouse schema (chDB embedded by default, a ClickHouse server with the same SQL),
the Kafka loader with exact dedupe, and the spend query layer.

Public API: `open_warehouse`, `Warehouse` (incl. `Warehouse.reprice`), `RepriceReport`, `run_loader`,
`render_report`, `DIMENSIONS`; query functions in `warehouse.showback`, `warehouse.analytics` and
`warehouse.providers`, `warehouse.export.export_month`, `warehouse.bench.bench_warehouse` (docs/warehouse.md).
"""

from __future__ import annotations

from tokenmeter.lazy import lazy_exports

# Imported on first use (PEP 562), not with the package: `warehouse.report` loads polars and `warehouse.backends`
# pyarrow (~0.5 CPU-s), which every `warehouse.*` module paid through here, `tokenmeter up` too (for a constant of
# `warehouse.demo_history`).
_LAZY = {"WarehouseError": "warehouse.backends", "WarehouseLocked": "warehouse.backends",
         "DIMENSIONS": "warehouse.queries", "render_report": "warehouse.report", "RepriceReport": "warehouse.reprice",
         "Warehouse": "warehouse.store", "open_warehouse": "warehouse.store"}


__getattr__, __dir__ = lazy_exports(globals(), _LAZY)


async def run_loader(settings, stop=None, ready=None, price_book=None):
    """Consume `tokenmeter.priced` and the record topics into the warehouse until `stop` is set (see
    warehouse.loader); `price_book` (optional) is recorded in price_catalog_history on start."""
    from warehouse.loader import run_loader as run

    return await run(settings, stop=stop, ready=ready, price_book=price_book)


__all__ = [
    "DIMENSIONS",
    "RepriceReport",
    "Warehouse",
    "WarehouseError",
    "WarehouseLocked",
    "open_warehouse",
    "render_report",
    "run_loader",
]
