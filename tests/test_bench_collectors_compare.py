"""`app.bench_collectors_compare` alternates which tree runs first (a fixed order was worth ~+-20 % of wall rate at
load 5-9: docs/rounds/collectors.md, speed round 10)."""

from app.bench_collectors_compare import _median, round_order


def test_each_tree_runs_first_as_often_as_the_other():
    orders = [round_order(["abc123", "this"], n) for n in range(6)]
    assert orders[0] == ["abc123", "this"] and orders[1] == ["this", "abc123"]
    firsts = [order[0] for order in orders]
    assert firsts.count("this") == firsts.count("abc123") == 3
    assert all(sorted(order) == ["abc123", "this"] for order in orders)


def test_median_of_the_rounds_ratios():
    assert _median([1.2, 0.8, 1.0]) == 1.0
    assert _median([0.9, 1.1, 1.3, 0.7]) == 1.0
