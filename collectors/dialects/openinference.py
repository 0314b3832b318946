"""OpenInference spans (Arize's conventions) read as OpenTelemetry GenAI spans by the `otel` dialect.

Envoy AI Gateway traces its calls with OpenInference attributes, not `gen_ai.*`: its tests assert the gateway's
span equals the one the OpenInference Python OpenAI instrumentation records (envoyproxy/ai-gateway
tests/internal/testopeninference/spans). Phoenix/Arize instrumentations emit the same. An `LLM` or `EMBEDDING` span
(`openinference.span.kind`) is translated to the GenAI names before the usual reading:
- llm.model_name / embedding.model_name -> gen_ai.response.model; llm.provider, else llm.system ->
  gen_ai.provider.name (`aws` -> bedrock); operation chat (LLM) or embeddings (EMBEDDING);
- llm.token_count.prompt (all input, cache reads included, as OpenAI's prompt_tokens) -> input_tokens,
  .prompt_details.cache_read / .cache_write -> cache read / creation, .completion (reasoning included) ->
  output_tokens, .completion_details.reasoning -> reasoning.
Other kinds (CHAIN, TOOL, AGENT, RETRIEVER, ...) wrap or follow model calls and carry no usage of their own:
skipped, like GenAI's invoke_agent spans. A span that has `gen_ai.*` attributes too is read by those alone.
Cannot carry: cost, service tier, provider-side tool fees (web search calls).
"""

from __future__ import annotations

from typing import Any

SPAN_KIND = "openinference.span.kind"
METERED_KINDS = {"LLM": "chat", "EMBEDDING": "embeddings"}
_TOKEN_NAMES = {
    "llm.token_count.prompt": "gen_ai.usage.input_tokens",
    "llm.token_count.completion": "gen_ai.usage.output_tokens",
    "llm.token_count.prompt_details.cache_read": "gen_ai.usage.cache_read.input_tokens",
    "llm.token_count.prompt_details.cache_write": "gen_ai.usage.cache_creation.input_tokens",
    "llm.token_count.completion_details.reasoning": "gen_ai.usage.reasoning.output_tokens",
}
_PROVIDERS = {"aws": "bedrock"}  # OpenInference's llm.provider values that name a cloud, not its model service


def _kind(attributes: dict[str, Any]) -> str | None:
    """The span kind when it is text: anyone can write a span, and a list or object here is no kind."""
    kind = attributes.get(SPAN_KIND)
    return kind if type(kind) is str else None


def is_metered_span(attributes: dict[str, Any]) -> bool:
    return _kind(attributes) in METERED_KINDS


def as_genai(attributes: dict[str, Any]) -> dict[str, Any]:
    """The span's attributes with the GenAI names added for an OpenInference LLM/EMBEDDING span; else unchanged."""
    kind = _kind(attributes)
    if kind not in METERED_KINDS or any(key.startswith("gen_ai.") for key in attributes):
        return attributes
    translated = dict(attributes)
    model = attributes.get("llm.model_name") or attributes.get("embedding.model_name")
    if model is not None:
        translated["gen_ai.response.model"] = model
    provider = attributes.get("llm.provider") or attributes.get("llm.system")
    if provider is not None:
        translated["gen_ai.provider.name"] = _PROVIDERS.get(str(provider).lower(), provider)
    translated["gen_ai.operation.name"] = METERED_KINDS[kind]
    for source, target in _TOKEN_NAMES.items():
        if attributes.get(source) is not None:
            translated[target] = attributes[source]
    return translated


__all__ = ["SPAN_KIND", "as_genai", "is_metered_span"]
