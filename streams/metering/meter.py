"""Decide the token usage of one event: the provider's numbers when present, else a count of the text."""

from __future__ import annotations

from typing import Literal

from tokenmeter.events import Content, Usage, UsageEvent

from .counting import count_message_tokens, count_text_tokens, count_tool_tokens
from .tokenizers import TokenizerUnavailable

TokensSource = Literal["provider", "estimated"]

_ZERO = Usage()


class MeteringError(ValueError):
    """An event whose usage cannot be known; `reason` says why (the worker dead-letters it)."""

    def __init__(self, reason: str, event_id: str | None = None):
        self.reason = reason
        self.event_id = event_id
        super().__init__(f"event {event_id}: {reason}" if event_id else reason)


def _has_text(content: Content | None) -> bool:
    return content is not None and (content.prompt is not None or content.completion is not None or bool(content.tools))


def count_content(content: Content, model: str) -> Usage:
    """Usage estimated from the call's text: prompt (+ tools) as input, completion as output.

    Reasoning tokens are invisible in the text, so estimates for reasoning models run low on output.
    """
    input_tokens = 0
    prompt = content.prompt
    if isinstance(prompt, str):
        input_tokens += count_text_tokens(prompt, model)  # plain prompt or embedding input: no chat framing
    elif prompt:
        input_tokens += count_message_tokens(prompt, model)
    if content.tools:
        input_tokens += count_tool_tokens(content.tools, model)
    output_tokens = count_text_tokens(content.completion, model) if content.completion else 0
    return Usage(input_tokens=input_tokens, output_tokens=output_tokens)


def meter(event: UsageEvent) -> tuple[Usage, TokensSource]:
    """Usage of `event` and where it came from.

    - Provider usage (`event.usage`) always wins: it is what the provider bills.
    - Else the content is counted (see `counting`) and marked `estimated`.
    - An `error` event with neither gets zero usage marked `estimated`: failed calls are not billed, and
      the zeros are our inference, not a number the provider reported.
    - An `ok` event with neither raises `MeteringError`: a successful call was billed, and pricing it at
      zero would hide spend.
    """
    if event.usage is not None:
        return event.usage, "provider"
    if _has_text(event.content):
        try:
            return count_content(event.content, event.model), "estimated"
        except TokenizerUnavailable as exc:
            raise MeteringError(str(exc), event.event_id) from exc
    if event.status == "error":
        return _ZERO.model_copy(), "estimated"
    raise MeteringError(
        "event has status 'ok' but neither usage nor content (prompt, completion or tools) to count tokens from",
        event.event_id,
    )
