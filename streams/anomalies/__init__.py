"""Spend anomaly detection (issue #7): see docs/anomalies.md.

`AnomalyEngine` is pure (priced events in, anomaly updates out); `runner.run_anomaly_detector(settings, stop)` is
the process role; `acks.publish_ack` / `publish_ack_sync` write acknowledge/mute records for the dashboard.
"""

from .detectors import KINDS, Config
from .engine import AnomalyEngine, AnomalyUpdate

__all__ = ["KINDS", "AnomalyEngine", "AnomalyUpdate", "Config"]
