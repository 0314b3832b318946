"""`warehouse.arrow_rows` (the loader's columnar row build) gives exactly the Arrow table the per-row path gives
(`rows_to_arrow` over `event_to_row`), and the same errors, on worker output and hostile variants in one batch."""

from __future__ import annotations

import copy
import random
import re

import pytest

from tests.warehouse.test_fast_rows import MUTATIONS, outcome, priced  # noqa: F401 (fixture)
from warehouse.arrow_rows import build_batch, rows_to_table
from warehouse.fast_rows import fast_row
from warehouse.schema import event_to_row, rows_to_arrow

NESTED = {
    ("attribution", "team"): [5, None, "", "t\u2028"], ("attribution", "tags"): [None, {"a": 1}, {}, {"k": "v"}, []],
    ("attribution", "org"): [["x"], "org-9"],
    ("usage", "input_tokens"): [-1, True, 1.0, "5", 10**12 + 1, 10**30, 0], ("usage", "output_tokens"): [None, 2**64],
    ("usage", "cached_input_tokens"): [10**9], ("usage", "tool_requests"): [
        {"web_search": 0}, {"web_search": 2, "file_search": 0}, {"telepathy": 1}, [], {"web_search": -1},
        {"web_search": True}, None],
    ("price", "entry"): [5, None, ""], ("price", "override"): [3, "manual"], ("price", "bogus"): [1],
    ("cost_breakdown", "input"): ["x", 0.1, "-0", "1e3", "0.1", None],
}


def _steady(reason: str) -> str:
    """An error text without the clock reading it may carry (the far-future check names "now")."""
    return re.sub(r"latest accepted now: [^;]*", "latest accepted now: NOW", reason)


def reference(items):
    """The per-row path: the table of the storable items and the errors of the others, by index."""
    rows, errors = [], []
    for index, item in enumerate(items):
        kind, result = outcome(event_to_row, item)
        if kind == "row":
            rows.append(result)
        else:
            errors.append((index, result))
    return rows_to_arrow(rows), errors


def hostile_batch(priced):  # noqa: F811
    rng = random.Random(1414)
    base = [e for e in priced if fast_row(e) is not None]
    items = list(priced)
    for field, values in MUTATIONS.items():
        for value in values:
            for item in rng.sample(base, 2):
                mutated = copy.deepcopy(item)
                mutated[field] = value
                items.append(mutated)
                gone = copy.deepcopy(item)
                gone.pop(field, None)
                items.append(gone)
    for (outer, inner), values in NESTED.items():
        for value in values:
            item = copy.deepcopy(rng.choice(base))
            if not isinstance(item.get(outer), dict):
                item[outer] = {"entry": "openai/gpt-4o"} if outer == "price" else {}
            item[outer][inner] = value
            items.append(item)
    for ts in ("2026-01-01T10:00:00+24:00", "2026-01-01T10:00:00+01:60", "2026-01-01T10:00:00-00:00",
               "2026-03-01T00:30:00.000001+01:00", "2026-12-31T23:59:59.999999-23:59", "2026-01-01T10:00:60Z",
               "2026-02-29T10:00:00Z", "2028-02-29T10:00:00Z", "2026-01-01T10:00:00.Z", "２026-01-01T10:00:00Z"):
        for key in ("ts", "priced_at"):
            item = copy.deepcopy(rng.choice(base))
            item[key] = ts
            items.append(item)
    items += [[], "x", None, 5, {"event_id": "only"}]
    rng.shuffle(items)
    return items


def test_columnar_table_equals_the_per_row_table_on_a_hostile_batch(priced):  # noqa: F811
    items = hostile_batch(priced)
    expected, expected_errors = reference(items)
    table, indices, errors = build_batch(items)
    assert table.schema == expected.schema
    assert table.equals(expected)
    assert [(i, _steady(str(e))) for i, e in errors] == [(i, _steady(e)) for i, e in expected_errors]
    assert len(indices) == table.num_rows and indices == sorted(indices)
    assert len(expected_errors) > 200 and expected.num_rows > 1000


def test_worker_output_without_correlation_is_taken_as_columns(priced):  # noqa: F811
    plain = [e for e in priced if e.get("correlation") is None]
    table, taken, left = rows_to_table(plain)
    assert len(taken) >= 0.95 * len(plain)
    assert all(fast_row(plain[i]) is not None for i in taken)
    assert table.equals(rows_to_arrow([event_to_row(plain[i]) for i in taken]))


@pytest.mark.parametrize("items", [[], [None], [{"event_id": "x"}]])
def test_small_and_empty_batches(items):
    table, indices, errors = build_batch(items)
    assert table.num_rows == len(indices) == 0 and len(errors) == len(items)
