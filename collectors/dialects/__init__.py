"""The input dialects, one module per format; `DIALECTS` maps each name to its parser."""

from __future__ import annotations

from collectors.dialects import anthropic, apisix, canonical, cloudevents, gemini, kong, litellm, openai, otel
from collectors.dialects.base import Dialect

DIALECTS: dict[str, Dialect] = {
    module.DIALECT.name: module.DIALECT
    for module in (canonical, kong, apisix, litellm, otel, cloudevents, openai, anthropic, gemini)
}

__all__ = ["DIALECTS", "Dialect"]
