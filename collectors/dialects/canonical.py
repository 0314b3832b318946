"""Our own event JSON (contract v1), validated with `UsageEvent`; an array is a batch.

Attribution in the event wins; a source's mapping only fills dimensions the event leaves empty (e.g. a
`const:` org for everything an internal SDK sends).
Versions covered: contract v1, including `reported_cost_usd` (a cost the provider billed, taken as the cost of
record). Carries everything the contract has; nothing is inferred.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from collectors.attribution import AttributionMapping, RecordView
from collectors.dialects.base import Dialect, require_object
from collectors.errors import DialectError
from tokenmeter.events import UsageEvent, describe_validation_error

NAME = "canonical"


def parse_event(record: Any, mapping: AttributionMapping, path: str) -> list[UsageEvent]:
    record = require_object(record, path, "canonical event")
    try:
        event = UsageEvent.model_validate(record)
    except ValidationError as exc:
        raise DialectError(f"invalid event: {describe_validation_error(exc)}", path or None) from None
    if mapping.dimensions or mapping.tags:
        event.attribution = mapping.resolve(NAME, RecordView(record), native=event.attribution)
    return [event]


DIALECT = Dialect(NAME, "tokenmeter canonical UsageEvent JSON", parse_event)
