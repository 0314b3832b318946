"""Real-format payloads (from shared/reference/formats.md and the providers' docs) for the dialect tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import pytest

PAYLOADS = Path(__file__).parent / "payloads"


@pytest.fixture
def payload() -> Callable[[str], Any]:
    """payload("kong_openai") -> a fresh deep copy of payloads/kong_openai.json (`.sse` files as text)."""

    def load(name: str) -> Any:
        for suffix in (".json", ".sse"):
            path = PAYLOADS / f"{name}{suffix}"
            if path.exists():
                text = path.read_text()
                return copy.deepcopy(json.loads(text)) if suffix == ".json" else text
        raise FileNotFoundError(name)

    return load


SOURCED = PAYLOADS / "sourced"


@pytest.fixture
def sourced() -> Callable[[str], Any]:
    """sourced("apisix_anthropic_cache_summary") -> (payload, provenance) of payloads/sourced/<name>.json.

    Each file holds a payload copied from a public repository (or built from one exactly as the named source
    code builds it) and its provenance: repository, path, commit, and how it was derived."""

    def load(name: str) -> tuple[Any, dict[str, Any]]:
        document = json.loads((SOURCED / f"{name}.json").read_text())
        provenance = document["provenance"]
        assert provenance.get("repository") and provenance.get("path") and provenance.get("commit"), name
        return copy.deepcopy(document["payload"]), provenance

    return load
