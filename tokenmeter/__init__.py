"""tokenmeter's shared contract: the canonical event, records, topic names, settings and dead letters. It imports no
stage (collectors, streams, warehouse, dashboards) and no part of the app shell (`app`)."""

__version__ = "0.1.0"
