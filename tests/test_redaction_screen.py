"""The screen in front of redaction (tokenmeter/redaction.py): it may skip a value or text only when the full
passes would have replaced nothing, so redacted dead letters are the same with and without it."""

from __future__ import annotations

import random
from pathlib import Path

import orjson

from tokenmeter import redaction
from tokenmeter.redaction import REDACTED, redact_text, redact_value

PAYLOADS = Path(__file__).parent / "conformance" / "payloads"
NAMES = ["authorization", "Authorization", "X-Api-Key", "apikey", "x-goog-api-key", "cookie", "set-cookie",
         "access_token", "client_secret", "private_key", "password", "http.request.header.authorization",
         "AUTHORIZATION", "to\u212aen", "my token", "prompt_tokens", "total_tokens", "token_count", "tokens",
         "credential", "authenticated_entity", "key", "model", "secret_sauce", "api_key_id", "Secret"]
ENDS = ["", " ", "\t", "\u3000", "\xa0", "\x1f", "\n", "s", "_", ".", "-x", "\"", "'", ":"]
VALUES = ["Bearer abcdefgh1234", "sk-ABCDEFGH12345678", "AIzaSyA1234567890abcdefghij", "gpt-4o", 12, 0.5, True,
          None, "2026-01-01T00:00:00Z", "authorization: Basic dXNlcjpwYXNz", "plain text", "tas" + "k-12345678"]


def _random_value(rng: random.Random, depth: int = 0):
    kind = rng.random()
    if depth > 4 or kind < 0.35:
        return rng.choice(VALUES)
    if kind < 0.7:
        return {rng.choice(NAMES) + rng.choice(ENDS): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    if kind < 0.85:
        return [rng.choice(NAMES) + rng.choice(ENDS), rng.choice(VALUES)]  # a header pair
    return {"key": rng.choice(NAMES) + rng.choice(ENDS), "value": {"stringValue": rng.choice(VALUES)}}


def _same_value(value) -> None:
    screened, count = redact_value(value)
    walked, walked_count = redaction._walk(value)
    assert (orjson.dumps(screened), count) == (orjson.dumps(walked), walked_count), value


def _same_text(text: str) -> None:
    assert redact_text(text) == redaction._redact_text(text), text


def test_the_screen_changes_no_redaction_of_random_values_and_their_texts():
    rng = random.Random(20261206)
    for _ in range(4000):
        value = _random_value(rng)
        _same_value(value)
        text = orjson.dumps(value).decode()
        _same_text(text)
        _same_text(text[: rng.randint(0, len(text))])  # a payload cut at 16 KB ends anywhere
        name = rng.choice(NAMES) + rng.choice(ENDS)
        _same_text(f"{name}: {rng.choice(VALUES)}\n{name}={rng.choice(VALUES)}\n'{name}': '{rng.choice(VALUES)}'")


def test_the_screen_changes_nothing_on_real_gateway_payloads():
    for path in sorted(PAYLOADS.rglob("*.json")):
        raw = path.read_text()
        _same_text(raw)
        try:
            _same_value(orjson.loads(raw))
        except orjson.JSONDecodeError:
            pass


def test_usage_payloads_without_credentials_skip_the_walk():
    usage = {"usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}, "model": "gpt-4o"}
    assert redact_value(usage) == (usage, 0) and redact_value(usage)[0] is usage  # returned as is, not copied
    assert redact_value({"headers": {"x-api-key": "abc"}}) == ({"headers": {"x-api-key": REDACTED}}, 1)
