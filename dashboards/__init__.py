"""Finance dashboard (Dash): spend by team, model and time, with freshness and unpriced usage in view."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "run_dashboard"]


def __getattr__(name: str) -> Any:
    """`create_app` and `run_dashboard` import Dash, Flask and plotly on first use (PEP 562), not with the package:
    `tokenmeter up` reads `dashboards.users` (the login file) and must not pay ~0.3 CPU-s for Dash."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from dashboards import app

    value = getattr(app, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
