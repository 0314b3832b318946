"""walk33: the Budgets page said nothing of a budget's `spend_before_definition` (seed32): a budget defined mid-period
showed its live spend alone as the period's Committed while its decision record said "pending", and a budget whose
state dates from before seed32 (defined mid-period, counted from its definition on) read like any other until
`tokenmeter budget rebuild --all`. The owner's record, the warehouse row and the page now carry it."""

from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import orjson
import pytest

from dash_pages import component_texts
from dashboards.budgets_data import _status
from streams.budgets import parse_budget
from streams.budgets.owner import BudgetOwner
from warehouse.records_load import enforcement_row

UTC = timezone.utc


@pytest.fixture(scope="module")
def pages():
    """The page modules, imported alone (tests/dash_pages.py: never as `dashboards.pages.<name>` for good)."""
    from dash_pages import page_modules_alone

    with page_modules_alone() as import_page:
        yield import_page


@pytest.fixture(scope="module")
def page(pages):
    return pages("dashboards.pages.budgets")


def _owner(period: str = "month") -> BudgetOwner:
    budget = parse_budget({"name": "search", "scope": {"team": "search"}, "period": period, "limit": "10",
                           "action": "block"})
    return BudgetOwner({"search": budget})


def _shown(page, record: dict, now: datetime) -> tuple[list[str], str | None]:
    status = _status({**enforcement_row(record, now), "scope": {"team": "search"}})
    return component_texts(page.status_rows([status])[1]), page.spend_before_message([status])


def test_a_pending_seed_is_on_the_page_and_gone_once_counted(page):
    owner = _owner()
    owner.restore("search", None)  # a new budget: its period's spend from before it is taken from the warehouse
    now = datetime.now(UTC)
    record = owner.enforcement_record(owner.runtimes["search"], now)
    assert enforcement_row(record, now)["spend_before_definition"] == "pending"
    cells, message = _shown(page, record, now)
    assert "$0.00 + spend from before the budget: pending" in cells
    assert message and "search: the period's spend from before the budget was defined is being counted" in message
    state = page.status_rows([_status({**enforcement_row(record, now), "scope": {"team": "search"}})])[1].children[0]
    assert state.children[2].children == "pending"  # trust34: the State column said "ok" beside the banner
    assert "spend from before the budget was defined" in state.children[2].title
    out = owner.complete_seed("search", {now.replace(minute=0, second=0, microsecond=0): D("4")}, {}, [], now=now)
    counted = out.enforcement[0][1]
    assert counted["spend_before_definition"] == "counted" and counted["spend"] == "4"
    cells, message = _shown(page, counted, now)
    assert "$4.00" in cells and message is None and "ok" in cells and "pending" not in cells


def test_a_state_from_before_seed32_says_unknown_until_rebuilt_or_its_period_ends(page):
    owner = _owner()
    owner.restore("search", None)
    owner.complete_seed("search", {}, {}, [])
    old_state = owner.state_of(owner.runtimes["search"])
    del old_state["seed"]  # as the code before seed32 wrote it
    again = _owner()
    again.restore("search", orjson.loads(orjson.dumps(old_state)))
    now = datetime.now(UTC)
    record = again.enforcement_record(again.runtimes["search"], now)
    assert record["spend_before_definition"] == "unknown"
    cells, message = _shown(page, record, now)
    assert "$0.00 + spend from before the budget: unknown" in cells
    assert message and "stop the workers and run `tokenmeter budget rebuild --all`" in message
    # the mark survives the state topic (a restart) and ends with the period whose spend it doubts
    kept = _owner()
    kept.restore("search", orjson.loads(orjson.dumps(again.state_of(again.runtimes["search"]))))
    assert kept.enforcement_record(kept.runtimes["search"], now)["spend_before_definition"] == "unknown"
    next_month = (now.replace(day=1) + timedelta(days=32)).replace(day=1, hour=1)
    assert kept.enforcement_record(kept.runtimes["search"], next_month)["spend_before_definition"] == "counted"
    # `budget rebuild` counts the whole period from the warehouse
    state, _ = kept.rebuild("search", now, {}, period_total=D("3"))
    rebuilt = _owner()
    rebuilt.restore("search", state)
    assert rebuilt.enforcement_record(rebuilt.runtimes["search"], now)["spend_before_definition"] == "counted"


def test_records_written_before_say_nothing(page):
    owner = _owner()
    owner.restore("search", None)
    owner.complete_seed("search", {}, {}, [])
    now = datetime.now(UTC)
    record = {k: v for k, v in owner.enforcement_record(owner.runtimes["search"], now).items()
              if k != "spend_before_definition"}
    cells, message = _shown(page, record, now)
    assert "$0.00" in cells and message is None


def test_a_pending_budget_already_over_its_limit_says_over_budget():
    """The live spend alone past the limit is over budget whatever the seed adds (trust34)."""
    now = datetime.now(UTC)
    row = {**enforcement_row({**_owner_record(now), "spend": "11", "percent": "110"}, now), "scope": {"team": "search"}}
    assert _status(row).state == "over budget"
    assert _status({**row, "spend": "1", "percent": "10"}).state == "pending"


def _owner_record(now: datetime) -> dict:
    owner = _owner()
    owner.restore("search", None)
    return owner.enforcement_record(owner.runtimes["search"], now)


def test_an_unknown_spend_before_the_definition_is_never_called_ok(page, pages):
    """trust35: a state from before seed32 ("unknown" spend before the definition) read "ok" in the State column
    beside the banner saying its spend is not known complete, and counted in the Overview's "N ok"."""
    from dashboards.summary_data import Headline

    headline_texts = pages("dashboards.pages.overview").headline_texts
    now = datetime.now(UTC)
    row = {**enforcement_row(_owner_record(now), now), "scope": {"team": "search"}, "spend_before_definition": "unknown"}
    state = page.status_rows([_status(row)])[1].children[0].children[2]
    assert state.children == "unknown"
    assert "`tokenmeter budget rebuild --all` counts the whole period" in state.title
    assert _status({**row, "spend": "11", "percent": "110"}).state == "over budget"  # past the limit whatever it adds
    counted = _status({**row, "budget": "ads", "spend_before_definition": "counted"})
    head = Headline(today_usd=D(0), month_usd=D(0), budgets=[counted, _status(row)])
    assert headline_texts(head)["budgets"][0] == "1 ok, 1 unknown"
