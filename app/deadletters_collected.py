"""Replaying a collector's dead letters (stages `collect:http`, `collect:file`, `collect:kafka`): the letter keeps
the gateway's own record (a log line, a Kafka message, one record of an HTTP batch), not a canonical event. So
it is collected again here, in this process, with today's collectors (the fix being replayed for) and the
letter's dialect (`auto`: detected), and the canonical events it gives are sent to tokenmeter.usage, as the
collector would send them (one message per event, keyed like the collector's).

A record the collectors still reject is refused with their reason, not dead-lettered again: a replay must not
add a letter per attempt. Event ids of the gateways' records are stable (their request ids, else a hash of the
entry: collectors/dialects/base.py), so an event of a partly bad batch that was published when the batch was
first read is "already ok" (stored) and not sent again; the others are."""

from __future__ import annotations

import re
from typing import Any

from app.deadletters_read import Letter
from app.deadletters_replay import Candidate, whole_payload

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def reason_kind(reason: str) -> str:
    """A reason without its details (quoted values, numbers), so refusals group by cause."""
    return _NUMBER.sub("N", _QUOTED.sub("'…'", reason))[:160]


def collected(item: Letter, mapping: Any = None) -> list[Candidate] | str:
    """The canonical events a collector letter's record gives today, or why there are none."""
    from collectors import DIALECTS, DialectError, parse_record
    from tokenmeter.events import partition_key

    whole = whole_payload(item)
    if isinstance(whole, str):
        return whole
    value, payload = whole
    dialect = (item.letter or {}).get("dialect")
    try:  # text (a log line, a Kafka message) as the bytes read; an HTTP batch's record as its JSON value
        events = parse_record(value if isinstance(payload, str) else payload,
                              dialect if dialect in DIALECTS else None, mapping)
    except DialectError as exc:
        return "the collectors still reject it: " + reason_kind(str(exc))
    except Exception as exc:  # noqa: BLE001 - a collector's bug on a hostile record: refused, said, never raised
        return f"the collectors fail on it: {type(exc).__name__}"
    if not events:
        return "the collectors skip it (no usage in it)"
    return [Candidate(item.partition, item.offset, event.model_dump_json(exclude_none=True).encode(),
                      [event.event_id], partition_key(event)) for event in events]
