"""Bad input gives a DialectError naming a field, never another exception: every field of every reference
payload is replaced in turn by values of the wrong type."""

from __future__ import annotations

import copy
from typing import Any, Iterator

import pytest

from collectors import DialectError, parse_record
from collectors.decode import parse_sse

NAMES = ["kong_openai", "kong_legacy", "litellm_success", "apisix_entry", "otlp_traces", "cloudevent_openmeter",
         "openai_chat", "anthropic_message", "gemini_response", "openai_stream", "anthropic_stream"]
WRONG_VALUES = [None, "x", -1, 1.5, True, [], {}, [1], {"a": 1}, "12"]


def paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield prefix + (key,)
            yield from paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield prefix + (index,)
            yield from paths(child, prefix + (index,))


def replaced(record: Any, path: tuple, new: Any) -> Any:
    record = copy.deepcopy(record)
    target = record
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return record


@pytest.mark.parametrize("name", NAMES)
def test_wrong_types_never_crash(payload, name):
    record = payload(name)
    if isinstance(record, str):
        record = parse_sse(record)
    for dialect in (None, "canonical"):
        for path in paths(record):
            for value in WRONG_VALUES:
                try:
                    events = parse_record(replaced(record, path, value), dialect=dialect)
                except DialectError as exc:
                    assert str(exc)
                    continue
                for event in events:  # whatever parsed is a valid event
                    type(event).model_validate(event.model_dump())
