"""tokenmeter's shared contract: the canonical event, topic names, settings and the CLI."""

__version__ = "0.1.0"
