"""A dropdown preselected from the URL (`/anomalies?id=`, `/budgets?budget=`) starts with that value among its
options. Dash 4's Dropdown clears a value missing from its options on mount, and in a loaded CI run that clear landed
after the callback that loaded the real options: the anomaly an alert linked to showed "pick an anomaly"
(tests/dashboards/test_dashboard_pages_browser.py::test_finance_pages failed so once)."""

from __future__ import annotations

import pytest
from dash_pages import page_modules_alone


def _dropdown(component, component_id: str):
    if getattr(component, "id", None) == component_id:
        return component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, (list, tuple)) else [children] if children is not None else []:
        found = _dropdown(child, component_id)
        if found is not None:
            return found
    return None


@pytest.mark.parametrize("module, component_id, query", [
    ("dashboards.pages.anomalies", "anomalies-select", {"id": "anom-beta"}),
    ("dashboards.pages.anomalies", "anomalies-select", {"anomaly": "anom-beta"}),
    ("dashboards.pages.budgets", "budgets-select", {"budget": "alpha-monthly"}),
])
def test_a_value_from_the_url_is_among_the_dropdowns_first_options(module, component_id, query):
    with page_modules_alone() as import_page:  # no registration left for a later app (tests/dash_pages.py)
        layout = import_page(module).layout(**query)
    dropdown = _dropdown(layout, component_id)
    value = next(iter(query.values()))
    assert dropdown.value == value
    assert value in [option["value"] for option in dropdown.options]


def test_without_a_value_the_dropdown_starts_empty():
    with page_modules_alone() as import_page:
        layout = import_page("dashboards.pages.anomalies").layout

        assert _dropdown(layout(), "anomalies-select").options == []
