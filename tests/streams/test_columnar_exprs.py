"""The columnar path's cheaper-to-plan forms (inproc14) give the values of the forms they replaced: balanced boolean
trees (tokenmeter/exprs.py) against left-deep chains, Kleene nulls included; the kind totals of a frame read by
`frames.scan` from null counts against the per-row sums."""

import itertools
from functools import reduce

import polars as pl
import pytest

from streams.columnar import frames
from streams.columnar.corpus import Corpus
from tokenmeter.exprs import all_of, any_of
from streams.pricing import load_price_book


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5])
def test_balanced_trees_match_chains_on_every_truth_value(width):
    rows = list(itertools.product([True, False, None], repeat=width))
    frame = pl.DataFrame({f"c{k}": [row[k] for row in rows] for k in range(width)}, schema={f"c{k}": pl.Boolean
                                                                                           for k in range(width)})
    columns = [pl.col(f"c{k}") for k in range(width)]
    got = frame.select(all=all_of(*columns), any=any_of(*columns))
    want = frame.select(all=reduce(lambda a, b: a & b, columns), any=reduce(lambda a, b: a | b, columns))
    assert got.equals(want)


def test_no_conditions_is_an_error():
    with pytest.raises(ValueError):
        all_of()


@pytest.mark.parametrize("seed", [3, 11])
def test_kind_totals_equal_the_per_row_sums(seed):
    records = list(Corpus(load_price_book(), seed=seed).records(4_000))  # collector micro-batches, twists, bad rows
    scanned = frames.scan(records)
    assert scanned is not None and scanned.frame.height
    frame = scanned.frame
    for tagged in (False, True):
        kinds = [pl.sum_horizontal(group) for group in frames._kind_counts()]
        if tagged:
            kinds.append(pl.col("attribution").struct.field("tags").is_not_null())
        assert frames._kind_totals(frame, tagged) == frame.select(k.sum().alias(f"k{i}") for i, k in
                                                                 enumerate(kinds)).row(0)


def test_usage_checks_take_exactly_what_the_usage_model_takes():
    """tokenmeter.exprs.usage_checks is Usage's rules as columns (the worker's and the loader's row checks use it):
    on random counts, edges and absent parts, a row passes exactly when `Usage` validates it."""
    import random

    import polars as pl
    from pydantic import ValidationError

    from tokenmeter.events import MAX_TOKENS, USAGE_PARTS, Usage
    from tokenmeter.exprs import all_of, usage_checks

    rng = random.Random(7)
    values = [None, 0, 1, 5, 10, 100, MAX_TOKENS, MAX_TOKENS + 1, -1]
    rows = [{part: rng.choice(values) for part in USAGE_PARTS} for _ in range(3000)]
    frame = pl.DataFrame({"usage": rows}, schema={"usage": pl.Struct({part: pl.Int64 for part in USAGE_PARTS})})
    taken = frame.select(all_of(*usage_checks(pl.col("usage")))).to_series().to_list()

    def valid(row: dict) -> bool:
        try:
            Usage(**{part: value for part, value in row.items() if value is not None})
        except ValidationError:
            return False
        return True

    assert taken == [valid(row) for row in rows]
    assert any(taken) and not all(taken)
