"""The collectors' batch path writes what the per-record path writes, byte for byte (`collectors.equivalence`).

A randomised corpus of Kong, OTel and canonical records, valid and hostile (`collectors.corpus`), goes through the
Kafka bridge's conversion in fetches of many records and one record at a time; the usage-topic events and the dead
letters must be identical, with the dialect's default attribution and with a mapping of every selector kind. The
large size, and the comparison with an older commit of the parsers, run by command:
`python -m collectors.equivalence --events 200000 [--against COMMIT]`.
"""

from __future__ import annotations

import gc

import orjson
import pytest

from collectors import corpus, equivalence
from collectors.batch import collection_paused

pytestmark = pytest.mark.slow(seconds=18)  # rough seconds: longest files first (tests/suite_order.py)


@pytest.mark.parametrize("dialect", corpus.DIALECTS)
@pytest.mark.parametrize("custom_mapping", [False, True])
def test_batch_and_per_record_paths_write_the_same_bytes(dialect, custom_mapping):
    values = corpus.records(dialect, 1500, seed=f"suite-{custom_mapping}")
    mapping = corpus.MAPPINGS[dialect] if custom_mapping else None
    assert equivalence.compare_with_records(values, dialect, chunk=200, mapping=mapping) is None


@pytest.mark.parametrize("dialect", corpus.DIALECTS)
def test_corpus_mixes_valid_and_hostile_records(dialect):
    out = equivalence.batch_output(corpus.records(dialect, 1500), dialect)
    events = [event for _, value in out["messages"] for event in orjson.loads(value)]
    reasons = {orjson.loads(letter)["reason"] for letter in out["letters"]}
    assert len(events) > 1000 and len(reasons) > 20
    assert any("invalid JSON" in reason for reason in reasons)  # undecodable records are in it too
    assert out["counts"][1] > 0  # and records holding no LLM call (skipped)


def test_a_changed_byte_is_found():
    values = corpus.records("kong", 300)
    good = equivalence.batch_output(values, "kong")
    bad = orjson.loads(orjson.dumps(good))
    key, value = bad["messages"][-1]
    bad["messages"][-1] = [key, value.replace('"chat"', '"chat "', 1)]
    assert equivalence._first_difference(good, bad).startswith("messages[")


def test_collection_paused_restores_the_collector_state():
    assert gc.isenabled()
    with collection_paused():
        assert not gc.isenabled()
        with collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner pause does not end the outer one
    assert gc.isenabled()
    gc.disable()
    try:
        with collection_paused():
            pass
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()
