"""Stream processing stage: metering and pricing in a Faust worker.

Public API: `create_worker_app`, `run_worker`, `process_batch`, `price_event`, `load_book`.
"""

from __future__ import annotations

from tokenmeter.lazy import lazy_exports

# Imported on first use (PEP 562), not with the package: every `streams.*` module (the alert dispatcher, the anomaly
# runner, `budget rebuild`, the budgets store `up` writes with) imported metering and pricing through here, ~0.2-0.4
# CPU-s per process that never prices an event.
_LAZY = {"BatchResult": "streams.batch", "RawRecord": "streams.batch", "process_batch": "streams.batch",
         "price_event": "streams.enrich"}


__getattr__, __dir__ = lazy_exports(globals(), _LAZY)


def load_book(settings):
    """The price book a worker uses, from the bundled catalog plus the user's imports and overrides."""
    from streams.pricing import CatalogError, load_price_book
    from tokenmeter.settings import SettingsError

    try:
        return load_price_book(
            data_dir=settings.data_dir,
            overrides_path=settings.price_overrides,
            azure_deployments=settings.azure_deployments,
        )
    except CatalogError as exc:  # the overrides file's errors start with its path: name the variable that set it
        overrides = settings.price_overrides
        if overrides is not None and str(exc).startswith(str(overrides)):
            raise SettingsError(f"TOKENMETER_PRICE_OVERRIDES={exc}") from None
        raise


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
