"""The browser tests' readers (tests/dashboards/dash_seed.py) against the race CI hit: Dash replaces a table or a
KPI when a callback settles, and an element fetched before that and read after it is stale
(StaleElementReferenceException: the showback test failed so). The re-render is done here on purpose between
fetching and reading, so the race is deterministic: the old way of reading fails every time, the readers never."""

from __future__ import annotations

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By

from dash_seed import element_attribute, element_text, table_rows

pytestmark = pytest.mark.browser

PAGE = ("data:text/html,<div id='kpi' title='$1.00'>$1</div>"
        "<table id='t'><tr><td>alpha</td><td>1</td></tr><tr><td>gamma</td><td>0</td></tr></table>")
# What React does when a callback's output arrives: the old nodes leave the document, new ones take their place.
RE_RENDER = """
document.getElementById('kpi').replaceWith(Object.assign(document.createElement('div'),
    {id: 'kpi', title: '$2.00', innerText: '$2'}));
const table = document.createElement('table');
table.id = 't';
table.innerHTML = '<tr><td>alpha</td><td>2</td></tr><tr><td>gamma</td><td>0</td></tr>';
document.getElementById('t').replaceWith(table);
"""


def test_elements_read_after_a_re_render_are_stale_but_one_script_reads_are_not(dash_duo):
    driver = dash_duo.driver
    driver.get(PAGE)
    kpi = driver.find_element(By.CSS_SELECTOR, "#kpi")  # the old way: fetch the elements, read them later
    rows = driver.find_elements(By.CSS_SELECTOR, "#t tr")
    driver.execute_script(RE_RENDER)
    with pytest.raises(StaleElementReferenceException):
        kpi.get_attribute("title")
    with pytest.raises(StaleElementReferenceException):
        [row.text for row in rows]

    assert element_text(dash_duo, "#kpi") == "$2"
    assert element_attribute(dash_duo, "#kpi", "title") == "$2.00"
    assert table_rows(dash_duo, "#t tr") == [["alpha", "2"], ["gamma", "0"]]
    assert element_text(dash_duo, "#missing") == "" and element_attribute(dash_duo, "#missing", "title") is None
