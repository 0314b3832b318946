"""price.version_rows (inproc28): the version in force per row by one binary search, against polars' backward as-of
join by entry (what price_frame ran until then) on the book's versions and on a table with versions sharing a start:
times at, just before and just after each start, before every start, far after; rows without an entry, with a null
entry or a null time."""

import random

import polars as pl

from streams.columnar.price import PriceTable, version_rows
from streams.pricing import load_price_book


def joined(table: PriceTable, ts_us: pl.Series, entry_id: pl.Series) -> pl.DataFrame:
    """The as-of join price_frame ran before inproc28."""
    frame = pl.DataFrame([ts_us.alias("ts_us"), entry_id.alias("entry_id")])
    return (frame.lazy().with_row_index("_row").sort("ts_us")
            .join_asof(table.version_frame.lazy(), left_on="ts_us", right_on="from_us", by="entry_id",
                       strategy="backward", check_sortedness=False)
            .sort("_row").drop("_row", "ts_us", "entry_id").collect())


def rows_for(table: PriceTable, count: int, seed: int) -> tuple[pl.Series, pl.Series]:
    rng = random.Random(seed)
    versions = table.version_frame
    starts = versions.get_column("from_us").to_list()
    entries = versions.get_column("entry_id").to_list()
    ids = sorted(set(entries))
    times, owners = [], []
    for _ in range(count):
        pick = rng.randrange(len(starts))
        time = rng.choice([starts[pick], starts[pick] - 1, starts[pick] + 1, min(starts) - 10**6,
                           max(starts) + 10**12, rng.randrange(min(starts), max(starts) + 1)])
        owner = rng.choice([entries[pick], rng.choice(ids), -1])
        times.append(None if rng.random() < 0.03 else time)
        owners.append(None if rng.random() < 0.03 else owner)
    return pl.Series(times, dtype=pl.Int64), pl.Series(owners, dtype=pl.Int64)


def test_versions_of_the_book_as_the_as_of_join_found_them():
    table = PriceTable.compile(load_price_book())
    assert table.version_frame.height > 100 and table.version_frame.get_column("entry_id").n_unique() > 50
    ts_us, entry_id = rows_for(table, 30_000, seed=28)
    found = version_rows(table, ts_us, entry_id)
    expected = joined(table, ts_us, entry_id)
    assert found.columns == expected.columns
    assert found.equals(expected)
    assert 0 < found.get_column("vid").null_count() < found.height  # both cases met
    assert version_rows(table, ts_us, entry_id).equals(expected)  # the keys made once, kept


def test_versions_sharing_a_start_and_entries_without_versions():
    table = PriceTable(load_price_book())
    # entry 0: three versions, two starting at 100 (the frame's later one is in force); entry 2: one; entry 1: none
    table.version_frame = pl.DataFrame(
        {"entry_id": [0, 0, 2, 0, 0], "from_us": [50, 100, 100, 100, 300], "vid": [0, 1, 4, 2, 3],
         "thinks": [False, True, False, False, True], "th_1": [None, 5, None, 7, None]},
        schema={"entry_id": pl.Int64, "from_us": pl.Int64, "vid": pl.Int64, "thinks": pl.Boolean, "th_1": pl.Int64})
    ts_us = pl.Series([49, 50, 99, 100, 101, 299, 300, 10**15, 100, 99, 100, 5, None, 100], dtype=pl.Int64)
    entry_id = pl.Series([0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 2, -1, 0, None], dtype=pl.Int64)
    found = version_rows(table, ts_us, entry_id)
    assert found.get_column("vid").to_list() == [None, 0, 0, 2, 2, 2, 3, 3, None, None, 4, None, None, None]
    assert found.equals(joined(table, ts_us, entry_id))


def test_rows_with_no_version_in_force_at_all_and_a_book_without_versions():
    table = PriceTable.compile(load_price_book())
    for ts_us, entry_id in (([5], [0]), ([None, 10**15], [-1, None]), ([], [])):
        ts, ids = pl.Series(ts_us, dtype=pl.Int64), pl.Series(entry_id, dtype=pl.Int64)
        found = version_rows(table, ts, ids)
        assert found.equals(joined(table, ts, ids)) and found.get_column("vid").null_count() == len(ts_us)
    empty = PriceTable(load_price_book())
    empty.version_frame = table.version_frame.clear()
    ts, ids = pl.Series([5, None], dtype=pl.Int64), pl.Series([0, 1], dtype=pl.Int64)
    assert version_rows(empty, ts, ids).equals(joined(empty, ts, ids))
