"""Token counting from text, for events that arrive without provider usage.

OpenAI models are counted with their own tiktoken encoding and OpenAI's documented chat formula (the
cookbook's `num_tokens_from_messages`: 3 tokens per message, +1 when a message has a `name`, +3 to prime
the reply) plus the cookbook's `num_tokens_for_tools` approximation for tool definitions.

Other vendors do not publish their tokenizers (Anthropic, Google) or use vocabularies we do not ship, so
their counts are o200k counts (cl100k for Llama 3, whose 128k vocabulary extends cl100k) times a per-family
factor. Every count made here is an estimate; the caller marks it `estimated`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable

import orjson

from .tokenizers import get_encoding


@dataclass(frozen=True)
class TokenProfile:
    """How to count one model family."""

    family: str
    encoding: str
    factor: float  # estimate = ceil(count * factor); 1.0 for families whose tokenizer we run exactly
    exact_tokenizer: bool  # True when `encoding` is the model's real tokenizer
    # cookbook num_tokens_for_tools constants: (func_init, prop_init, prop_key, enum_init, enum_item, func_end)
    tool_constants: tuple[int, int, int, int, int, int]
    rationale: str


_O200K_TOOLS = (7, 3, 3, -3, 3, 12)  # cookbook values for gpt-4o / gpt-4o-mini
_CL100K_TOOLS = (10, 3, 3, -3, 3, 12)  # cookbook values for gpt-3.5-turbo / gpt-4

# Factors for vendors whose tokenizer we cannot run. They are rough, chosen to err slightly high (an
# estimate that under-bills is worse for budgets than one that over-bills), and easy to revisit:
PROFILES: dict[str, TokenProfile] = {
    "openai-o200k": TokenProfile(
        "openai-o200k", "o200k_base", 1.0, True, _O200K_TOOLS,
        "OpenAI's own tokenizer for gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1/o3/o4 (tiktoken.model)."),
    "openai-cl100k": TokenProfile(
        "openai-cl100k", "cl100k_base", 1.0, True, _CL100K_TOOLS,
        "OpenAI's own tokenizer for gpt-4, gpt-3.5-turbo and text-embedding-3 / ada-002 (tiktoken.model)."),
    "claude": TokenProfile(
        "claude", "o200k_base", 1.2, False, _O200K_TOOLS,
        "Anthropic's tokenizer is not public; counts from Anthropic's count_tokens endpoint are commonly "
        "reported 15-30% above OpenAI's tokenizers for English text and code. 1.2 is a middle value."),
    "gemini": TokenProfile(
        "gemini", "o200k_base", 1.05, False, _O200K_TOOLS,
        "Gemini's SentencePiece vocabulary (~256k) is not shipped; Google documents ~4 characters per token, "
        "close to o200k on English. 1.05 leaves a small margin."),
    "llama3": TokenProfile(
        "llama3", "cl100k_base", 1.0, False, _CL100K_TOOLS,
        "Llama 3.x uses a 128k tiktoken vocabulary that extends cl100k_base; cl100k counts are within a few "
        "percent (fewer tokens for non-English text)."),
    "llama4": TokenProfile(
        "llama4", "o200k_base", 1.05, False, _O200K_TOOLS,
        "Llama 4 uses a ~200k vocabulary not shipped here; o200k has the same size class."),
    "mistral": TokenProfile(
        "mistral", "o200k_base", 1.1, False, _O200K_TOOLS,
        "Mistral's Tekken (131k, tiktoken-based) and older SentencePiece (32k) vocabularies split English into "
        "somewhat more pieces than o200k; 1.1 covers the newer models."),
    "deepseek": TokenProfile(
        "deepseek", "o200k_base", 1.05, False, _O200K_TOOLS,
        "DeepSeek V3/R1 use a 128k byte-level BPE; DeepSeek documents ~0.3 tokens per English character."),
    "other": TokenProfile(
        "other", "o200k_base", 1.1, False, _O200K_TOOLS,
        "Unknown tokenizer (grok, nova, qwen, cohere, self-hosted ...): o200k plus a 10% margin."),
}

_PROVIDER_PREFIX = re.compile(r"^(?:[a-z0-9_.\-]+/)+")  # openai/gpt-4o, bedrock/us.anthropic.x, ...
_BEDROCK_REGION = re.compile(r"^(?:us|eu|apac|jp|au|ca|us-gov|global)\.")


@lru_cache(maxsize=4096)
def profile_for_model(model: str) -> TokenProfile:
    """Which tokenizer and factor count `model`; unknown models get the `other` profile."""
    name = _PROVIDER_PREFIX.sub("", model.strip().lower())
    name = _BEDROCK_REGION.sub("", name)
    if name.startswith("ft:"):
        name = name[3:]
    if re.match(r"(gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-oss|o1|o3|o4|codex)", name):
        return PROFILES["openai-o200k"]
    if re.match(r"(gpt-4|gpt-3\.5|gpt-35|text-embedding-3|text-embedding-ada-002|davinci-002|babbage-002)", name):
        return PROFILES["openai-cl100k"]
    if "claude" in name:
        return PROFILES["claude"]
    if "gemini" in name or "gemma" in name:
        return PROFILES["gemini"]
    if "llama4" in name or "llama-4" in name:
        return PROFILES["llama4"]
    if "llama" in name:
        return PROFILES["llama3"]
    if re.search(r"mistral|mixtral|codestral|ministral|magistral|pixtral|devstral", name):
        return PROFILES["mistral"]
    if "deepseek" in name:
        return PROFILES["deepseek"]
    return PROFILES["other"]


def _scaled(count: int, profile: TokenProfile) -> int:
    return count if profile.factor == 1.0 else math.ceil(count * profile.factor)


def _raw_len(encoding_name: str, text: str) -> int:
    # encode_ordinary: special-token text such as "<|endoftext|>" in user content counts as plain text
    # instead of raising, and it skips the special-token scan.
    return len(get_encoding(encoding_name).encode_ordinary(text)) if text else 0


def count_text_tokens(text: str, model: str) -> int:
    """Tokens of plain text (a completion, an embedding input, a non-chat prompt)."""
    profile = profile_for_model(model)
    return _scaled(_raw_len(profile.encoding, text), profile)


# Images cannot be counted without their size and detail level; OpenAI bills a low-detail image 85 tokens,
# the floor of its formula. We use that floor, so estimates for image-heavy prompts run low.
IMAGE_TOKENS_FLOOR = 85


def _value_texts(value: Any) -> tuple[list[str], int]:
    """Texts to encode for one message value, plus a count of images found in it."""
    if value is None:
        return [], 0
    if isinstance(value, str):
        return [value], 0
    if isinstance(value, list):  # content parts: [{"type": "text", "text": ...}, {"type": "image_url", ...}]
        texts: list[str] = []
        images = 0
        for part in value:
            if isinstance(part, dict):
                kind = part.get("type", "")
                if isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif "image" in kind:
                    images += 1
                else:
                    texts.append(orjson.dumps(part).decode())
            elif isinstance(part, str):
                texts.append(part)
        return texts, images
    # tool_calls, function_call and other structured values: count their compact JSON text
    return [orjson.dumps(value).decode()], 0


def count_message_tokens(messages: list[dict[str, Any]], model: str) -> int:
    """Prompt tokens of a chat request, OpenAI cookbook `num_tokens_from_messages`."""
    profile = profile_for_model(model)
    encoding = profile.encoding
    total = 0
    for message in messages:
        total += 3  # <|start|>{role}<|message|> ... <|end|>
        for key, value in message.items():
            texts, images = _value_texts(value)
            for text in texts:
                total += _raw_len(encoding, text)
            total += images * IMAGE_TOKENS_FLOOR
            if key == "name":
                total += 1
    total += 3  # every reply is primed with <|start|>assistant<|message|>
    return _scaled(total, profile)


def _function_of(tool: dict[str, Any]) -> dict[str, Any]:
    # Chat Completions: {"type": "function", "function": {...}}; Responses API and Anthropic: flat.
    inner = tool.get("function")
    return inner if isinstance(inner, dict) else tool


def _strip_period(text: str) -> str:
    return text[:-1] if text.endswith(".") else text


def count_tool_tokens(tools: Iterable[dict[str, Any]], model: str) -> int:
    """Tokens the tool definitions add to the prompt, OpenAI cookbook `num_tokens_for_tools`.

    The cookbook renders each function as `name:description` and each top-level property as
    `name:type:description` plus enum items, with fixed per-function/property overheads measured against
    the API (exact for its example: 101 tokens on gpt-4o, 105 on gpt-4). Beyond what the cookbook covers,
    nested object/array schemas are counted as their compact JSON text, an over-estimate, and non-function
    tools (web search, code interpreter ...) as the JSON of their definition.
    """
    profile = profile_for_model(model)
    encoding = profile.encoding
    func_init, prop_init, prop_key, enum_init, enum_item, func_end = profile.tool_constants
    total = 0
    any_tool = False
    for tool in tools:
        any_tool = True
        function = _function_of(tool)
        if "name" not in function:
            total += _raw_len(encoding, orjson.dumps(tool).decode())
            continue
        total += func_init
        description = _strip_period(str(function.get("description") or ""))
        total += _raw_len(encoding, f"{function['name']}:{description}")
        schema = function.get("parameters") or function.get("input_schema") or {}
        properties = schema.get("properties") if isinstance(schema, dict) else None
        if properties:
            total += prop_init
            for prop_name, prop in properties.items():
                total += prop_key
                prop = prop if isinstance(prop, dict) else {}
                if "enum" in prop:
                    total += enum_init
                    for item in prop["enum"]:
                        total += enum_item + _raw_len(encoding, str(item))
                prop_type = prop.get("type", "")
                prop_type = "|".join(map(str, prop_type)) if isinstance(prop_type, list) else str(prop_type)
                prop_desc = _strip_period(str(prop.get("description") or ""))
                total += _raw_len(encoding, f"{prop_name}:{prop_type}:{prop_desc}")
                nested = {k: prop[k] for k in ("properties", "items", "anyOf", "oneOf") if k in prop}
                if nested:
                    total += _raw_len(encoding, orjson.dumps(nested).decode())
    if any_tool:
        total += func_end
    return _scaled(total, profile)
