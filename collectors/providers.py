"""One provider vocabulary for every dialect, so a price lookup by (provider, model) matches whatever the
gateway called the provider. Names follow LiteLLM's `litellm_provider` spellings (the community price map);
OpenTelemetry's `gcp.gemini`, Kong's `azure`, `mistral_ai` etc. are folded into them. Unknown names pass
through lower-cased rather than being rejected: a new provider must still be metered (and shown unpriced)."""

from __future__ import annotations

_ALIASES = {
    "openai": "openai",
    "azure": "azure",
    "azure_openai": "azure",
    "azure-openai": "azure",
    "azure.ai.openai": "azure",
    "az.ai.openai": "azure",
    "azure.ai.inference": "azure_ai",
    "az.ai.inference": "azure_ai",
    "anthropic": "anthropic",
    "claude": "anthropic",
    "gemini": "gemini",
    "google": "gemini",
    "gcp.gemini": "gemini",
    "google_ai_studio": "gemini",
    "vertex_ai": "vertex_ai",
    "vertex-ai": "vertex_ai",
    "vertexai": "vertex_ai",
    "gcp.vertex_ai": "vertex_ai",
    "gcp.gen_ai": "vertex_ai",
    "bedrock": "bedrock",
    "aws.bedrock": "bedrock",
    "aws_bedrock": "bedrock",
    "mistral": "mistral",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
    "cohere": "cohere",
    "cohere_chat": "cohere",
    "groq": "groq",
    "deepseek": "deepseek",
    "x_ai": "xai",
    "xai": "xai",
    "perplexity": "perplexity",
    "ibm.watsonx.ai": "watsonx",
    "watsonx": "watsonx",
    "huggingface": "huggingface",
    "ollama": "ollama",
    "openrouter": "openrouter",
}

# Model-name prefixes for records that name no provider (APISIX summaries, OpenMeter-style CloudEvents).
_MODEL_PREFIXES = (
    ("gpt-", "openai"), ("chatgpt-", "openai"), ("o1", "openai"), ("o3", "openai"), ("o4", "openai"),
    ("text-embedding-", "openai"), ("davinci", "openai"), ("babbage", "openai"), ("omni-moderation", "openai"),
    ("claude", "anthropic"), ("gemini", "gemini"), ("models/gemini", "gemini"), ("mistral", "mistral"),
    ("mixtral", "mistral"), ("codestral", "mistral"), ("command", "cohere"), ("deepseek", "deepseek"),
    ("grok", "xai"),
)


def normalize_provider(name: str | None) -> str | None:
    if type(name) is str:  # a gateway logs a handful of names: each read once (a pure function of the text)
        found = _NORMALIZED.get(name, _UNSEEN)
        if found is not _UNSEEN:
            return found
    if name is None:
        return None
    key = str(name).strip().lower()
    found = _ALIASES.get(key, key) if key else None
    if type(name) is str:
        if len(_NORMALIZED) >= 1024:  # many distinct names (hostile input): a bounded cache
            _NORMALIZED.clear()
        _NORMALIZED[name] = found
    return found


_NORMALIZED: dict[str, str | None] = {}
_UNSEEN = object()


def guess_provider(model: str | None) -> str | None:
    """Provider implied by a well-known model name (`openai/gpt-4o` prefixes are honoured first)."""
    if not model:
        return None
    lowered = model.strip().lower()
    if "/" in lowered:
        prefix, _, rest = lowered.partition("/")
        if prefix in _ALIASES:
            return _ALIASES[prefix]
        lowered = rest
    for prefix, provider in _MODEL_PREFIXES:
        if lowered.startswith(prefix):
            return provider
    return None
