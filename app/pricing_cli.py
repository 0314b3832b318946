"""`tokenmeter price`: batch pricing of JSON lines with the same parsers and pricing code as the stream."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import IO

import orjson
from pydantic import ValidationError

from tokenmeter.events import describe_validation_error
from tokenmeter.settings import Settings
from tokenmeter.stored_money import too_much_money_reason, unstorable_money


def price_lines(source: IO[bytes], target: IO[str], dialect: str | None, settings: Settings,
                errors: IO[str] | None = None) -> int:
    """Write one priced event per input event, in input order; return how many lines failed.

    A line that cannot be read becomes an error record on `errors` (line number and reason) and the run goes on;
    so does a call costing more than the warehouse stores, in the worker's dead letter's words (trust34: it was
    printed as priced), the line's other calls printed.
    """
    from collectors import DialectError, parse_record
    from collectors.decode import refuse_json_value
    from streams import load_book, price_event
    from streams.metering import MeteringError

    # sys.stderr as it is now, not when this module was imported (a default argument would bind the stream of the
    # first import: under click's CliRunner, or pytest's collection, the errors went to a stream nobody reads)
    errors = sys.stderr if errors is None else errors

    book = load_book(settings)
    failed = 0
    now = datetime.now(timezone.utc)
    for number, raw in enumerate(source, start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            value = orjson.loads(line)
            refuse_json_value(value)  # a line's JSON string is not a text record: "42" is refused as a string
            events = parse_record(value, dialect)
            priced = [price_event(event, book, priced_at=now) for event in events]
        except orjson.JSONDecodeError as exc:
            reason = f"not JSON: {exc}"
        except DialectError as exc:
            reason = str(exc)
        except ValidationError as exc:
            reason = f"invalid event: {describe_validation_error(exc)}"
        except MeteringError as exc:
            reason = f"cannot meter: {exc}"
        else:
            refused = []
            for event in priced:
                unstorable = unstorable_money(event.cost_usd, event.cost_breakdown)
                if unstorable is not None:  # the worker letters it: never sent, never counted by a budget
                    refused.append(too_much_money_reason(event, *unstorable))
                else:
                    target.write(orjson.dumps(event.to_json()).decode() + "\n")
            if not refused:
                continue
            reason = "; ".join(refused)
        failed += 1
        errors.write(orjson.dumps({"line": number, "error": reason}).decode() + "\n")
    target.flush()
    return failed
