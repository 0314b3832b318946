"""Warehouse stage: ClickHouse schema (chDB embedded by default, a ClickHouse server with the same SQL),
the Kafka loader with exact dedupe, and the spend query layer.

Public API: `open_warehouse`, `Warehouse` (incl. `Warehouse.reprice`), `RepriceReport`, `run_loader`,
`render_report`, `DIMENSIONS`; query functions in `warehouse.showback`, `warehouse.analytics` and
`warehouse.providers`, `warehouse.export.export_month`, `warehouse.bench.bench_warehouse` (docs/warehouse.md).
"""

from __future__ import annotations

from warehouse.backends import WarehouseError, WarehouseLocked
from warehouse.queries import DIMENSIONS
from warehouse.report import render_report
from warehouse.reprice import RepriceReport
from warehouse.store import Warehouse, open_warehouse


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
