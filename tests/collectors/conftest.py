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
