"""Holds: the part of a reservation one budget carries until the call's usage settles it.

A hold is state of the budget's owner (owner.py keeps them beside the ledger, under the same lock), persisted
one record per hold on the compacted topic `tokenmeter.budget-holds` (key `<budget>|<reservation id>`, a
tombstone when released, settled or expired) and written BEFORE the reservation is answered, so a restarted or
newly assigned owner reads every hold it admitted back and never admits twice against the same headroom.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from tokenmeter.timefmt import iso_utc

Amount = Decimal | int


@dataclass(frozen=True)
class Hold:
    reservation_id: str
    budget: str
    request_id: str
    amount: Amount  # USD (Decimal) or tokens (int), the budget's metric
    created_at: datetime
    expires_at: datetime

    @property
    def key(self) -> bytes:
        return hold_key(self.budget, self.reservation_id)

    def to_json(self) -> dict[str, Any]:
        return {"reservation_id": self.reservation_id, "budget": self.budget, "request_id": self.request_id,
                "amount": self.amount if isinstance(self.amount, int) else format(self.amount, "f"),
                "created_at": iso_utc(self.created_at), "expires_at": iso_utc(self.expires_at)}


def hold_key(budget: str, reservation_id: str) -> bytes:
    return f"{budget}|{reservation_id}".encode()


def hold_from_json(data: Any) -> Hold | None:
    """A hold record read back from the topic; None for anything malformed (anyone can write to a topic)."""
    try:
        amount = data["amount"]
        return Hold(str(data["reservation_id"]), str(data["budget"]), str(data["request_id"]),
                    amount if isinstance(amount, int) and not isinstance(amount, bool) else Decimal(str(amount)),
                    datetime.fromisoformat(data["created_at"]), datetime.fromisoformat(data["expires_at"]))
    except (KeyError, TypeError, ValueError, ArithmeticError):
        return None


__all__ = ["Hold", "hold_from_json", "hold_key"]
