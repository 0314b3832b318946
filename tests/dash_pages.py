"""Importing a dashboard page module on its own, without leaving it behind for the next test's app.

A page module registers its path in Dash's process-wide page registry when imported. A test that imports
`dashboards.pages.budgets` directly registers "/budgets" under that module name; the next `create_app` in the same
process loads its pages as `pages.budgets` (Dash's name for a pages folder), and Dash then answers every request
with a 500 ("modules ['dashboards.pages.budgets', 'pages.budgets'] have duplicate paths"). Which tests share a
process is xdist's choice, so this failed only in some runs."""

from __future__ import annotations

import importlib
import sys
from contextlib import contextmanager
from typing import Any, Iterator


@contextmanager
def page_modules_alone() -> Iterator[Any]:
    """Yields `import_page(name)`; afterwards the registry and sys.modules hold what they held before."""
    import dash

    if not dash.page_registry:  # the pages register themselves with an app: give them one
        dash.Dash(__name__, use_pages=True, pages_folder="")
    registry = dict(dash.page_registry)
    modules = set(sys.modules)
    try:
        yield importlib.import_module
    finally:
        dash.page_registry.clear()
        dash.page_registry.update(registry)
        for name in set(sys.modules) - modules:
            if name.startswith("dashboards.pages."):
                del sys.modules[name]


def component_texts(component: Any) -> list[str]:
    """Every text child under a Dash component, depth first: what a page's builder shows, without a browser."""
    out = []
    children = getattr(component, "children", None)
    if isinstance(children, str):
        out.append(children)
    elif isinstance(children, (list, tuple)):
        for child in children:
            out += component_texts(child)
    elif children is not None:
        out += component_texts(children)
    return out
