"""Holds: the part of a reservation one budget carries until the call's usage settles it.

A hold is state of the budget's owner (owner.py keeps them beside the ledger, under the same lock), persisted
one record per hold on the compacted topic `tokenmeter.budget-holds` (key `<budget>|<reservation id>`, a
tombstone when released, settled or expired) and written BEFORE the reservation is answered, so a restarted or
newly assigned owner reads every hold it admitted back and never admits twice against the same headroom.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timezone
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
    # held again by `tokenmeter budget rebuild` after a broker loss: its usage had not reached the warehouse
    carried: bool = False
    # how the hold ended, when it did (owner._drop_hold): settled / released / expired, and the real amount the
    # settling usage committed; not part of the hold record, only of its log record (hold_log_record)
    ended: str = field(default="", compare=False)
    settled_amount: "Amount | None" = field(default=None, compare=False)

    @property
    def key(self) -> bytes:
        return hold_key(self.budget, self.reservation_id)

    # formatted once per hold: its record, its log record and the answer all carry them (a reservation's CPU)
    @cached_property
    def created_iso(self) -> str:
        return iso_utc(self.created_at)

    @cached_property
    def expires_iso(self) -> str:
        return iso_utc(self.expires_at)

    def to_json(self) -> dict[str, Any]:
        return {"reservation_id": self.reservation_id, "budget": self.budget, "request_id": self.request_id,
                "amount": self.amount if isinstance(self.amount, int) else format(self.amount, "f"),
                "created_at": self.created_iso, "expires_at": self.expires_iso,
                **({"carried": True} if self.carried else {})}


def hold_key(budget: str, reservation_id: str) -> bytes:
    return f"{budget}|{reservation_id}".encode()


def hold_from_json(data: Any) -> Hold | None:
    """A hold record read back from the topic; None for anything malformed (anyone can write to a topic)."""
    try:
        amount = data["amount"]
        return Hold(str(data["reservation_id"]), str(data["budget"]), str(data["request_id"]),
                    amount if isinstance(amount, int) and not isinstance(amount, bool) else Decimal(str(amount)),
                    datetime.fromisoformat(data["created_at"]), datetime.fromisoformat(data["expires_at"]),
                    carried=data.get("carried") is True)
    except (KeyError, TypeError, ValueError, ArithmeticError):
        return None


def _amount_text(amount: Amount) -> Any:
    return amount if isinstance(amount, int) else format(amount, "f")


def hold_log_record(hold: Hold, at: datetime | None = None) -> dict[str, Any]:
    """The step of the hold's life for `tokenmeter.budget-hold-log` (loaded into the warehouse's `budget_holds`):
    `held` for a hold just admitted, else how it ended. The warehouse keeps it when the broker does not: the
    rebuild after a broker loss holds again what was admitted but whose usage never reached the warehouse. `at`
    defaults to now; a hold just admitted (not ended, not carried) is logged at its admission (`created_at`)."""
    if at is None and not hold.ended and not hold.carried:
        stamp = hold.created_iso
    else:
        stamp = iso_utc(at or datetime.now(timezone.utc))
    record = {"reservation_id": hold.reservation_id, "budget": hold.budget, "request_id": hold.request_id,
              "status": hold.ended or "held", "metric": "tokens" if isinstance(hold.amount, int) else "cost_usd",
              "amount": _amount_text(hold.amount), "created_at": hold.created_iso,
              "expires_at": hold.expires_iso, "at": stamp}
    if hold.settled_amount is not None:
        record["settled_amount"] = _amount_text(hold.settled_amount)
    return record


__all__ = ["Hold", "hold_from_json", "hold_key", "hold_log_record"]
