"""The one error every parser raises: a reason plus the field path that caused it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenmeter.events import UsageEvent


class DialectError(ValueError):
    """A record that cannot become canonical events.

    `path` names the offending field (`[3].ai.proxy.usage.prompt_tokens`), so a dead-letter entry says exactly
    what to fix. For batches (a Kong kafka-log array, a CloudEvents batch) the entries that did parse are kept
    in `partial`, so a collector can still publish them and dead-letter only the broken ones.
    """

    def __init__(self, reason: str, path: str | None = None, partial: list["UsageEvent"] | None = None,
                 failed: int = 1):
        self.reason = reason
        self.path = path or None
        self.partial: list[UsageEvent] = list(partial or [])
        self.failed = failed  # entries of the record that failed (OTLP's rejectedSpans); 1 for a whole record
        super().__init__(f"{self.path}: {reason}" if self.path else reason)

    def under(self, prefix: str) -> "DialectError":
        """The same error seen from an enclosing record (`prefix` is prepended to the path)."""
        return DialectError(self.reason, join_path(prefix, self.path), self.partial, self.failed)


def join_path(prefix: str | None, suffix: str | None) -> str:
    """Join field paths: `a` + `b` -> `a.b`; `a` + `[2].b` -> `a[2].b`."""
    if not prefix:
        return suffix or ""
    if not suffix:
        return prefix
    return prefix + suffix if suffix.startswith("[") else f"{prefix}.{suffix}"
