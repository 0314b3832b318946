"""Boolean expressions built as balanced trees, for polars' query planner.

polars plans every eager query afresh (a worker batch runs ~90 of them), and its planner walks an expression's
subtree again for each node it resolves (types, projection height): a left-deep chain `a & b & c & ...` of n
conditions costs O(n^2) to plan. Measured with polars 2.1 on a 10-row frame: 40 conditions chained 0.94 ms, as a
balanced tree 0.40 ms; 80 conditions 5.9 ms against 0.86 ms. `all_of` / `any_of` give the same truth values (`&` and
`|` are associative, Kleene logic on nulls included) with a planning cost linear in n.

Shared (the contract package) because two stages plan such checks: the worker's frame path and the loader's
(`warehouse/loader_frames.py`, where the certificate's ~45 checks went 3.8 -> 2.6 ms per query).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence

import polars as pl

from tokenmeter.events import MAX_TOKENS, USAGE_PARTS


def _balanced(conditions: Sequence[pl.Expr], combine: Callable[[pl.Expr, pl.Expr], pl.Expr]) -> pl.Expr:
    level = list(conditions)
    if not level:
        raise ValueError("no conditions")
    while len(level) > 1:
        level = [combine(level[i], level[i + 1]) if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)]
    return level[0]


def all_of(*conditions: pl.Expr) -> pl.Expr:
    """`conditions[0] & conditions[1] & ...`, as a balanced tree."""
    return _balanced(conditions, operator.and_)


def any_of(*conditions: pl.Expr) -> pl.Expr:
    """`conditions[0] | conditions[1] | ...`, as a balanced tree."""
    return _balanced(conditions, operator.or_)


__all__ = ["all_of", "any_of", "run_plan", "usage_checks"]

# What polars' own eager calls (DataFrame.select, with_columns, filter) plan with: expression simplification only.
# A lazy `collect()` runs every optimizer pass (projection and predicate pushdown, common subexpressions, clustering
# of with_columns, ...), ~0.3 ms more for a query of 20 small expressions (fuse24, polars 2.1): more than a fused
# query saves over the separate eager ones. A chunk's queries are planned once each and read every column they
# name, so those passes find nothing to do.
EAGER_PLANNING = pl.QueryOptFlags.none(simplify_expression=True)


def run_plan(plan: pl.LazyFrame) -> pl.DataFrame:
    """`plan` collected as polars collects an eager query: EAGER_PLANNING, on the in-memory engine. `collect()`'s
    engine is "auto" (polars picks one when the query runs), where the eager calls run in memory: the worker's two
    pricing queries per chunk cost ~1.3x as much that way (inproc29: `price_frame` of the bench's two chunks,
    median 25.0 against 18.8 ms, 30 calls each alternating in one process, frames equal)."""
    return plan.collect(engine="in-memory", optimizations=EAGER_PLANNING)


def usage_checks(usage: pl.Expr) -> list[pl.Expr]:
    """`tokenmeter.events.Usage`'s rules on a struct column of its token counts (an absent count is 0): each within
    0..MAX_TOKENS, and the parts within their totals (`Usage._parts_within_totals`). One definition for the worker's
    frame path (streams/columnar/frames.py) and the loader's (warehouse/loader_frames.py)."""
    parts = {part: usage.struct.field(part).fill_null(0) for part in USAGE_PARTS}
    return [*(parts[part].is_between(0, MAX_TOKENS) for part in USAGE_PARTS),
            parts["cached_input_tokens"] + parts["cache_write_tokens"] <= parts["input_tokens"],
            parts["cache_write_1h_tokens"] <= parts["cache_write_tokens"],
            parts["reasoning_tokens"] <= parts["output_tokens"]]
