"""The answer to an admitted reservation (`POST /v1/reservations`, 201): what is held, and the worst case itself.

`held` says what each budget of a metric holds: the call's worst case (USD or tokens) when a budget of that metric
matched, else zero; `worst_case` carries the worst case whatever was held. Until walk36 `held` was the worst case
whether or not anything held it: a call no budget matched read `"held": {"cost_usd": "0.28..."}` beside
`"holds": []`, and a gateway took for reserved money that was reserved nowhere. Such an answer says so in `reason`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from streams.pricing.book import COST_QUANTUM
from tokenmeter.events import Attribution
from tokenmeter.records import money

NOTHING_HELD = Decimal(0).quantize(COST_QUANTUM)  # "0.000000000000": written as the amounts held are
NAMED = ("provider", "model", *(name for name in Attribution.model_fields if name != "tags"))


def admitted_answer(reservation_id: str, call: dict[str, Any], expires_at: str, case: Any, budgets: list[Any],
                    holds: list[dict[str, Any]]) -> dict[str, Any]:
    """The 201 body for `call` (ReservationService.parse) admitted with worst case `case` on `budgets`."""
    metrics = {b.metric for b in budgets}
    answer = {"reservation_id": reservation_id, "request_id": call["request_id"], "expires_at": expires_at,
              "held": {"cost_usd": money(case.cost_usd if "cost_usd" in metrics else NOTHING_HELD),
                       "tokens": case.tokens if "tokens" in metrics else 0},
              "holds": holds,
              "worst_case": {"entry": case.entry, "rule": case.rule, "cost_usd": money(case.cost_usd),
                             "tokens": case.tokens, "prompt_tokens": case.prompt_tokens,
                             "prompt_counted": call["estimated"], "max_output_tokens": case.max_output_tokens,
                             "max_output_tokens_asked": case.max_output_tokens_asked,
                             "output_limit": case.output_limit}}
    if not budgets:
        attributes = call["attributes"]
        named = ", ".join(f"{name} {attributes[name]}" for name in NAMED if attributes.get(name))
        answer["reason"] = (f"no budget matches this call ({named}): admitted, nothing is held (nothing to settle "
                            "or release)")
    return answer


__all__ = ["admitted_answer"]
