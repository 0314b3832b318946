"""The columnar re-price's breakdown diff (`warehouse.reprice_columnar.breakdowns_differ`) against the per-row
reference (`warehouse.reprice._pricing_of`: the two maps compared as dicts), on random maps that are equal, equal
in another order, of other amounts, other keys, other lengths or empty. The rows that need the sorted comparison
(same length, not equal as lists) are most of a price change's changed rows; reprice7 moved that comparison from
per-row strings to exploded, sorted columns (docs/rounds/benchmarks.md, "Re-price diff ... reprice7")."""

from __future__ import annotations

import random
from decimal import Decimal

import pyarrow as pa

from warehouse.reprice_columnar import breakdowns_differ
from warehouse.schema import ARROW_SCHEMA

MAP_TYPE = ARROW_SCHEMA.field("cost_breakdown").type
KEYS = ("input", "cached_input", "cache_write_5m", "cache_write_1h", "output", "reasoning", "request", "web_search")


def _amount(rng: random.Random) -> Decimal:
    return Decimal(rng.randrange(0, 10**9)).scaleb(-12)


def _variant(rng: random.Random, lines: list[tuple[str, Decimal]]) -> list[tuple[str, Decimal]]:
    """Another breakdown: the same, reordered, one amount changed, one key renamed, one line more or less."""
    kind = rng.randrange(6)
    other = list(lines)
    if kind == 1:
        rng.shuffle(other)
    elif kind == 2 and other:
        i = rng.randrange(len(other))
        other[i] = (other[i][0], other[i][1] + Decimal("1e-12"))
        rng.shuffle(other)
    elif kind == 3 and other:
        i = rng.randrange(len(other))
        unused = [key for key in KEYS if key not in dict(other)]
        if unused:
            other[i] = (rng.choice(unused), other[i][1])
        rng.shuffle(other)
    elif kind == 4 and other:
        other.pop(rng.randrange(len(other)))
    elif kind == 5:
        unused = [key for key in KEYS if key not in dict(other)]
        if unused:
            other.insert(rng.randrange(len(other) + 1), (rng.choice(unused), _amount(rng)))
    return other


def test_breakdowns_differ_exactly_where_the_dicts_differ():
    rng = random.Random(7)
    old, new = [], []
    for _ in range(3000):
        lines = [(key, _amount(rng)) for key in rng.sample(KEYS, rng.randrange(0, 5))]
        old.append(lines)
        new.append(_variant(rng, lines))
    differ = breakdowns_differ(pa.chunked_array([pa.array(old, MAP_TYPE)]),
                               pa.chunked_array([pa.array(new[:1500], MAP_TYPE), pa.array(new[1500:], MAP_TYPE)]))
    expected = [dict(a) != dict(b) for a, b in zip(old, new)]
    assert differ.to_list() == expected
    reordered_equal = sum(1 for a, b in zip(old, new) if a != b and dict(a) == dict(b))
    assert reordered_equal > 150 and sum(expected) > 1000  # both outcomes of the sorted comparison are exercised


def test_same_lines_in_another_order_with_one_equal_amount_elsewhere_still_differ():
    """Sorted by key and amount, not by amount alone: {a: 1, b: 2} against {a: 2, b: 1} differ."""
    one, two = Decimal("1e-12"), Decimal("2e-12")
    old = pa.chunked_array([pa.array([[("input", one), ("output", two)], [("input", one), ("output", two)]], MAP_TYPE)])
    new = pa.chunked_array([pa.array([[("output", one), ("input", two)], [("output", two), ("input", one)]], MAP_TYPE)])
    assert breakdowns_differ(old, new).to_list() == [True, False]
