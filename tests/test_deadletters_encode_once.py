"""The dead-letter builder encodes a JSON payload once (suiteA28): its size, its hash, whether it is kept as
structure and the text the credential screen reads all come from one `orjson.dumps`; before, a dict's letter
encoded it three times (the dead-letter sweeps build ~50,000 letters a run). The letters are the same as the
builder's before (a copy of it below) for every kind of payload it meets."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest

from tokenmeter import deadletters
from tokenmeter.deadletters import MAX_PAYLOAD_CHARS, MAX_REASON_CHARS, _clip, _deep_repr, _redacted
from tokenmeter.redaction import redact_text


def _before(reason: str, payload: Any, stage: str) -> dict[str, Any]:
    """tokenmeter/deadletters.py's builder as of 061d78c (without the time)."""
    def payload_bytes(value: Any) -> bytes:
        if value is None:
            return b""
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        if isinstance(value, str):
            return value.encode("utf-8", "surrogatepass")
        try:
            return orjson.dumps(value, default=str)
        except (TypeError, orjson.JSONEncodeError, RecursionError):
            return _deep_repr.repr(value).encode()

    def encodes(value: Any) -> bool:
        try:
            orjson.dumps(value, default=str)
            return True
        except (TypeError, orjson.JSONEncodeError, RecursionError):
            return False

    raw = payload_bytes(payload)
    text = raw.decode("utf-8", "replace")
    truncated = len(text) > MAX_PAYLOAD_CHARS
    kept: Any = payload if (isinstance(payload, (dict, list)) and not truncated and encodes(payload)) \
        else text[:MAX_PAYLOAD_CHARS]
    kept, redacted = _redacted(kept)
    return {"reason": redact_text(_clip(str(reason), MAX_REASON_CHARS))[0], "stage": stage, "payload": kept,
            "payload_bytes": len(raw), "payload_sha256": hashlib.sha256(raw).hexdigest(),
            "payload_truncated": truncated, "payload_redacted": redacted}


def _deep(levels: int) -> list:
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


PAYLOADS = {
    "none": None, "int": 7, "float": 1.5, "nan": float("nan"), "bool": True, "text": "not json",
    "json text": '{"usage": {"input_tokens": 1}}', "json text with a key": '{"headers": {"x-api-key": "abc"}}',
    "bytes": b'{"a": 1}', "not utf-8": b"\xff\xfe{", "lone surrogate text": "\ud800x",
    "dict": {"event_id": "e", "usage": {"input_tokens": 1, "prompt_tokens": 2}},
    "dict with a credential": {"headers": {"Authorization": "Bearer abcdefgh123", "x": "y"}, "n": 1},
    "list of header pairs": [["apikey", "k-123"], ["accept", "json"]],
    "bearer in a value": {"note": "Bearer abcdefghijk"}, "key-like value": {"v": "sk-abcdefghijklmnop"},
    "decimal (str default)": {"cost": Decimal("0.01"), "api_key": "k"},
    "datetime": {"ts": datetime(2026, 1, 1, tzinfo=timezone.utc)}, "set (str default)": {"s": {1}},
    "non-str key": {1: "a"}, "lone surrogate in a dict": {"a": "\ud800"},
    "300 levels": _deep(300), "300 levels with a key": {"token": "t", "x": _deep(300)},
    "huge": {"x": "y" * 100_000, "password": "p"}, "huge list": list(range(10_000)),
    "empty dict": {}, "empty list": [],
}


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_every_kind_of_payload_gives_the_letter_it_gave_before(name):
    payload = PAYLOADS[name]
    letter = deadletters.dead_letter("bad: Bearer abcdefghijk", payload, "worker")
    assert letter.pop("at") and letter == _before("bad: Bearer abcdefghijk", payload, "worker")
    deadletters.encode(letter)


def test_a_dict_payload_is_encoded_once(monkeypatch):
    calls = []
    real = orjson.dumps
    monkeypatch.setattr(deadletters.orjson, "dumps", lambda *a, **k: calls.append(1) or real(*a, **k))
    letter = deadletters.dead_letter("r", {"usage": {"input_tokens": 1}, "model": "m"}, "worker")
    assert letter["payload"] == {"usage": {"input_tokens": 1}, "model": "m"} and len(calls) == 1
