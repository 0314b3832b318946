"""Finance dashboard (Dash): spend by team, model and time, with freshness and unpriced usage in view."""

from __future__ import annotations

from tokenmeter.lazy import lazy_exports

__all__ = ["create_app", "run_dashboard"]


# `create_app` and `run_dashboard` import Dash, Flask and plotly on first use (PEP 562), not with the package:
# `tokenmeter up` reads `dashboards.users` (the login file) and must not pay ~0.3 CPU-s for Dash.
__getattr__, __dir__ = lazy_exports(globals(), {"create_app": "dashboards.app", "run_dashboard": "dashboards.app"})
