"""The shared dead-letter builder: every letter encodes and fits a Kafka message, whatever it carries."""

import copy
import hashlib
import json
from pathlib import Path

import orjson

from collectors.http_ingest import parse_keeping
from collectors.sink import dead_letter_record
from tokenmeter import deadletters


def test_huge_payload_is_cut_but_size_and_hash_kept():
    raw = b"x" * 5_000_000
    letter = deadletters.dead_letter("not JSON", raw, "worker", topic="t", partition=0, offset=7)
    encoded = deadletters.encode(letter)
    assert len(encoded) < 64_000
    assert letter["payload_bytes"] == 5_000_000
    assert letter["payload_sha256"] == hashlib.sha256(raw).hexdigest()
    assert letter["payload_truncated"] is True
    assert (letter["topic"], letter["partition"], letter["offset"]) == ("t", 0, 7)


def test_nested_deeper_than_orjson_allows_still_encodes():
    deep: list = []
    for _ in range(300):
        deep = [deep]
    letter = deadletters.dead_letter("too deep", deep, "worker")
    decoded = orjson.loads(deadletters.encode(letter))
    assert decoded["reason"] == "too deep"
    assert isinstance(decoded["payload"], str) and decoded["payload"].startswith("[[")


def test_small_json_payload_kept_as_structure_and_non_utf8_bytes_as_text():
    assert deadletters.dead_letter("r", {"a": 1}, "load")["payload"] == {"a": 1}
    letter = deadletters.dead_letter("r", b"\xff\xfe{", "load")
    assert letter["payload_bytes"] == 3 and "\ufffd" in letter["payload"]


def test_huge_reason_is_clipped():
    letter = deadletters.dead_letter("bad: " + "y" * 100_000, None, "worker")
    assert len(letter["reason"]) < 3_000 and letter["payload_bytes"] == 0


# --- Credentials gateways log (request headers) never reach a dead letter -----------------------------------

PAYLOADS = Path(__file__).parent / "conformance" / "payloads"
SECRETS = ("sk-proj-EndUserSecret0123456789", "apisix-consumer-key-4711", "kong-keyauth-cred-0815",
           "session=cookie-secret-42", "azure-key-abcdef987")


def _assert_no_secret(letter: dict) -> None:
    encoded = deadletters.encode(letter)
    for secret in SECRETS:
        assert secret.encode() not in encoded, (secret, encoded[:2000])


def _collector_letters(record: dict, dialect: str) -> list[dict]:
    """The HTTP collector's route: parse, then one letter per failed record (collectors.http_ingest)."""
    _, _, failures = parse_keeping([record], dialect, None)
    assert failures, "the record was expected to fail"
    return [dead_letter_record(exc.reason, record, "collector", index=i, path=exc.path) for i, exc in failures]


def test_kong_entry_with_credential_headers_is_dead_lettered_without_them():
    entry = json.loads((PAYLOADS / "kong" / "v2_log_format_openai_gpt4o.json").read_text())
    entry["request"]["headers"].update({"authorization": f"Bearer {SECRETS[0]}", "api-key": SECRETS[4],
                                        "Cookie": SECRETS[3]})
    entry["authenticated_entity"] = {"id": "cred-id-1", "key": SECRETS[2]}
    broken = copy.deepcopy(entry)
    broken["ai"] = "not an object"  # unreadable: the whole entry is dead-lettered as sent
    letters = _collector_letters(broken, "kong")
    for letter in letters:
        _assert_no_secret(letter)
        assert letter["payload_redacted"] == 4
        assert letter["payload"]["request"]["headers"]["authorization"] == "[REDACTED]"
        assert letter["payload"]["authenticated_entity"]["id"] == "cred-id-1"  # an id is not a secret
        raw = deadletters.payload_bytes(broken)  # size and hash of the ORIGINAL, to find it in the source
        assert letter["payload_bytes"] == len(raw)
        assert letter["payload_sha256"] == hashlib.sha256(raw).hexdigest()
    assert broken["request"]["headers"]["authorization"] == f"Bearer {SECRETS[0]}"  # the input is not changed


def test_apisix_entry_with_apikey_header_is_dead_lettered_without_it():
    entry = json.loads((PAYLOADS / "apisix" / "after_openai_chat_end_user.json").read_text())
    entry["request"]["headers"] = {"host": "gw", "apikey": SECRETS[1], "x-api-key": SECRETS[0]}
    entry["llm_summary"]["prompt_tokens"] = "twenty-three"
    _assert_no_secret(dead_letter_record("bad", entry, "collector"))
    as_text = json.dumps(entry, indent=2)  # a log line / Kafka value that parses: redacted as structure
    letter = deadletters.dead_letter("bad", as_text, "collector")
    _assert_no_secret(letter)
    assert letter["payload_redacted"] == 2 and json.loads(letter["payload"])["request"]["headers"]["host"] == "gw"
    for letter in _collector_letters(entry, "apisix"):
        _assert_no_secret(letter)


def test_otel_attributes_header_pairs_and_reason_are_redacted():
    span_attrs = [{"key": "http.request.header.authorization", "value": {"arrayValue": {"values": [
        {"stringValue": f"Bearer {SECRETS[0]}"}]}}}, {"key": "gen_ai.usage.input_tokens", "value": {"intValue": 3}}]
    letter = deadletters.dead_letter(f"bad header {{'x-api-key': '{SECRETS[4]}'}}",
                                     {"attributes": span_attrs, "headers": [["Cookie", SECRETS[3]], ["x", "y"]]},
                                     "collector")
    _assert_no_secret(letter)
    assert letter["payload"]["attributes"][1] == span_attrs[1]


def test_hostile_payloads_with_credentials_stay_bounded_and_deliverable():
    kong = {"request": {"headers": {"authorization": f"Bearer {SECRETS[0]}", "apikey": SECRETS[1]}}}
    huge = json.dumps(kong)[:-2] + ', "x": "' + "z" * 5_000_000  # cut inside: not JSON, kept as text
    deep = [["x-api-key", SECRETS[4]]]
    for _ in range(300):
        deep = [deep]
    free_text = f"upstream said: Authorization: Bearer {SECRETS[0]} (key {SECRETS[1]!r}); Bearer abc123def"
    for payload in (huge, huge.encode(), deep, free_text, {"a": [{"apikey": SECRETS[1]}] * 2000}):
        letter = deadletters.dead_letter("bad", payload, "collector")
        encoded = deadletters.encode(letter)
        assert len(encoded) < 200_000
        for secret in (SECRETS[0], SECRETS[4], "abc123def"):
            assert secret.encode() not in encoded
    assert "Bearer [REDACTED]" in deadletters.dead_letter("r", free_text, "c")["payload"]


def test_a_credential_in_a_logged_url_query_is_redacted():
    """hostile32: Kong's key-auth reads a key from the query string (`key_names: apikey`, `?apikey=<key>`), and
    Kong logs the request's `url` and `upstream_uri` with that query, APISIX its `request.url` / `uri`: the
    `querystring` object was redacted by name, the same key in the URL strings went into the dead letter as sent."""
    entry = json.loads((PAYLOADS / "kong" / "v2_log_format_openai_gpt4o.json").read_text())
    entry["request"]["url"] = f"http://kong:8000/openai?apikey={SECRETS[1]}&stream=false"
    entry["request"]["querystring"] = {"apikey": SECRETS[1], "stream": "false"}
    entry["upstream_uri"] = f"/v1/chat/completions?x=1&api_key={SECRETS[4]}#frag"
    entry["ai"] = "not an object"
    for letter in _collector_letters(entry, "kong"):
        _assert_no_secret(letter)
        assert letter["payload"]["request"]["url"] == "http://kong:8000/openai?apikey=[REDACTED]&stream=false"
        assert letter["payload"]["upstream_uri"] == "/v1/chat/completions?x=1&api_key=[REDACTED]#frag"
    reason = deadletters.dead_letter(f"cannot fetch /v1/models?token={SECRETS[0]}: 401", None, "collector")["reason"]
    assert SECRETS[0] not in reason
    assert deadletters.dead_letter("bad", "/v1/usage?prompt_tokens=12&x=1", "c")["payload"] == \
        "/v1/usage?prompt_tokens=12&x=1"  # a count named like a credential's ending is no credential
