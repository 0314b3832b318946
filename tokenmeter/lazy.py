"""Public names of a package imported on first use (PEP 562), so importing one module of a stage does not load the
heavy libraries (polars, pyarrow, Dash, httpx, tiktoken) that other modules of it need (docs/rounds/testing.md,
startcost)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(namespace: dict[str, Any], sources: dict[str, str]) -> tuple[Callable[[str], Any],
                                                                             Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for the package whose globals are `namespace`: each name of `sources` (name ->
    defining module) is imported when first read, then kept in the package like an eager import would."""

    def __getattr__(name: str) -> Any:
        module = sources.get(name)
        if module is None:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(sources))

    return __getattr__, __dir__
