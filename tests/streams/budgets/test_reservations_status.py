"""Held, headroom, open and expired holds travel from the owner's enforcement record to the warehouse row and the
dashboard's Budgets table; records written before reservations still load and show '-'."""

from datetime import datetime, timezone
from decimal import Decimal as D

import pytest
from dash import html

from dash_pages import component_texts
from dashboards.budgets_data import _status
from streams.budgets import parse_budget
from streams.budgets.owner import BudgetOwner
from warehouse.records_load import enforcement_row

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def page():
    """The Budgets page module, imported without leaving its registration to a later app (tests/dash_pages.py)."""
    from dash_pages import page_modules_alone

    with page_modules_alone() as import_page:
        yield import_page("dashboards.pages.budgets")


def record_with_holds() -> dict:
    budget = parse_budget({"name": "search", "scope": {"team": "search"}, "limit": "10", "action": "block"})
    owner = BudgetOwner({"search": budget})
    owner.restore("search", None)
    owner.admit({"search": D("2.5")}, "r1", "q1", NOW.replace(hour=13), NOW)
    owner.admit({"search": D("1.5")}, "r2", "q2", NOW.replace(hour=12, minute=1), NOW)
    owner.tick(NOW.replace(hour=12, minute=2))  # r2 expires unsettled
    return owner.enforcement_record(owner.runtimes["search"], NOW.replace(hour=12, minute=2))


def test_the_enforcement_record_carries_held_headroom_and_expired_holds():
    record = record_with_holds()
    assert (record["held"], record["headroom"], record["open_reservations"], record["reservations_expired"]) == \
        ("2.5", "7.5", 1, 1)


def test_warehouse_row_and_dashboard_show_them(page):
    STATUS_HEADERS, status_rows = page.STATUS_HEADERS, page.status_rows
    row = enforcement_row(record_with_holds(), NOW)
    assert (row["held"], row["headroom"], row["open_reservations"], row["reservations_expired"]) == \
        (D("2.5"), D("7.5"), 1, 1)
    status = _status({**row, "scope": {"team": "search"}})
    table = status_rows([status])
    cells = component_texts(table[1])
    assert "$2.50 (1 open)" in cells and "$7.50" in cells and "1" in cells
    assert {"Committed", "Held", "Headroom", "Expired holds"} <= set(STATUS_HEADERS)
    assert len(table[1].children[0].children) == len(STATUS_HEADERS)


def test_records_from_before_reservations_still_load_and_show_a_dash(page):
    status_rows = page.status_rows
    old = {k: v for k, v in record_with_holds().items()
           if k not in ("held", "headroom", "open_reservations", "reservations_expired")}
    row = enforcement_row(old, NOW)
    assert (row["held"], row["headroom"], row["open_reservations"], row["reservations_expired"]) == (None, None, 0, 0)
    cells = component_texts(status_rows([_status({**row, "scope": {}})])[1])
    assert cells.count("-") >= 2
    assert isinstance(status_rows([])[0], html.Thead)
