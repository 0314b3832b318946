"""Finance dashboard (Dash): spend by team, model and time, with freshness and unpriced usage in view."""

from dashboards.app import create_app, run_dashboard

__all__ = ["create_app", "run_dashboard"]
