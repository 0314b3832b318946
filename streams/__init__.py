"""Stream processing stage: metering and pricing in a Faust worker.

Public API: `create_worker_app`, `run_worker`, `process_batch`, `price_event`, `load_book`.
"""

from __future__ import annotations

from streams.batch import BatchResult, RawRecord, process_batch
from streams.enrich import price_event


def load_book(settings):
    """The price book a worker uses, from the bundled catalog plus the user's imports and overrides."""
    from streams.pricing import load_price_book

    return load_price_book(
        data_dir=settings.data_dir,
        overrides_path=settings.price_overrides,
        azure_deployments=settings.azure_deployments,
    )


def create_worker_app(settings, **kwargs):
    from streams.worker import create_worker_app as create

    return create(settings, **kwargs)


def run_worker(settings) -> None:
    from streams.worker import run_worker as run

    run(settings)


__all__ = [
    "BatchResult",
    "RawRecord",
    "create_worker_app",
    "load_book",
    "price_event",
    "process_batch",
    "run_worker",
]
