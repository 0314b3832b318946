"""The shared dead-letter builder: every letter encodes and fits a Kafka message, whatever it carries."""

import hashlib

import orjson

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
