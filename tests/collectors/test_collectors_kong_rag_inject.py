"""Kong's AI RAG Injector embeds the query with an embeddings provider before the LLM call and logs that call's
tokens in `ai.proxy.rag-inject` (embeddings_tokens / embeddings_provider / embeddings_model; Kong's audit log
reference, 3.x and AI Gateway v2, Kong/developer.konghq.com app/ai-gateway/ai-audit-log-reference.md). The
provider bills it, so it is its own event `<request id>:rag-inject` (operation embeddings), never dropped."""

from __future__ import annotations

import pytest

from collectors import DIALECTS, DialectError

kong = DIALECTS["kong"]
RAG = {"vector_db": "pgvector", "injected": True, "fetch_latency": 154, "chunk_ids": ["chunk-1", "chunk-2"],
       "embeddings_latency": 37, "embeddings_tokens": 62, "embeddings_provider": "openai",
       "embeddings_model": "text-embedding-3-small"}


def _entry(payload, rag):
    entry = payload("kong_openai")
    entry["ai"]["proxy"]["rag-inject"] = rag
    return entry


def test_the_rag_injector_embedding_call_is_its_own_event(payload):
    chat, embedding = kong.parse(_entry(payload, dict(RAG)))
    assert (chat.model, chat.usage.input_tokens, chat.usage.output_tokens) == ("gpt-4o-2024-08-06", 13, 12)
    assert embedding.event_id == f"{chat.event_id}:rag-inject"
    assert (embedding.provider, embedding.model, embedding.operation) == ("openai", "text-embedding-3-small",
                                                                          "embeddings")
    assert (embedding.usage.input_tokens, embedding.usage.output_tokens) == (62, 0)
    assert embedding.ts == chat.ts and embedding.latency_ms == 37
    assert embedding.attribution.tags.get("kong_plugin") == "rag-inject"


@pytest.mark.parametrize("rag", [
    {"vector_db": "pgvector", "injected": False, "fetch_latency": 3},  # no embedding logged
    dict(RAG, embeddings_tokens=0),
])
def test_no_embedding_tokens_no_extra_event(payload, rag):
    assert len(kong.parse(_entry(payload, rag))) == 1


@pytest.mark.parametrize("rag, reason", [
    (dict(RAG, embeddings_tokens="lots"), "embeddings_tokens"),
    (dict(RAG, embeddings_model=None), "embeddings_model"),
])
def test_an_unreadable_embedding_record_is_refused_naming_the_field(payload, rag, reason):
    with pytest.raises(DialectError) as refused:
        kong.parse(_entry(payload, rag))
    assert reason in str(refused.value)


@pytest.mark.parametrize("tokens", [2**64, 10**13, 1e308])
def test_embedding_tokens_beyond_the_contract_are_a_dead_letter_naming_the_field(payload, tokens):
    """A count above the contract's bound built the embedding's Usage outside the event's validation: pydantic's
    ValidationError escaped parse_record and stopped the Kafka bridge (found by
    tests/collectors/test_hostile_corpus.py). It is a DialectError naming the field."""
    with pytest.raises(DialectError) as refused:
        kong.parse(_entry(payload, dict(RAG, embeddings_tokens=tokens)))
    assert "rag-inject" in str(refused.value) and "input_tokens" in str(refused.value), str(refused.value)
