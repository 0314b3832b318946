"""Arrow's ISO-8601 parse of event times (tokenmeter/iso_times.py, issue 14, fast20) gives chrono's values or
refuses the column, so the worker's frame path and the loader's build keep chrono's results."""

from __future__ import annotations

import random

import polars as pl
import pyarrow as pa  # noqa: F401 - loaded, as in an Arrow worker and the loader
import pytest

from streams.columnar.frame_price import PARSEABLE_TS
from streams.columnar.validate import TS_FORMAT
from tokenmeter.iso_times import epoch_us
from warehouse.loader_frames import _TS_SHAPE, _ts_micros


def _chrono_worker(texts: pl.Series) -> list:
    return texts.str.to_datetime(TS_FORMAT, time_unit="us", time_zone="UTC", strict=False).dt.epoch("us").to_list()


def _chrono_loader(texts: pl.Series) -> list:
    return (texts.str.replace(r"Z$", "+00:00").str.strptime(pl.Datetime("us", "UTC"), "%Y-%m-%dT%H:%M:%S%.f%:z",
                                                            strict=False).dt.epoch("us").to_list())


def _random_time(rng: random.Random) -> str:
    year = rng.choice([rng.randint(1000, 9999), rng.randint(1960, 2100), 0, 1969, 1970, 2024, 9999])
    month, day = rng.choice([rng.randint(0, 19), rng.randint(1, 12)]), rng.choice([rng.randint(0, 39), rng.randint(28, 31)])
    hour, minute, second = rng.choice([rng.randint(0, 23), rng.randint(0, 29)]), rng.randint(0, 59), rng.randint(0, 59)
    fraction = rng.choice(["", "." + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 7)))])
    offset = rng.choice(["Z", "+00:00", "-00:00", f"{rng.choice('+-')}{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
                         "+24:00", "z", "+0000", ""])
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}{fraction}{offset}"


def test_each_time_arrow_takes_is_chronos_value_and_each_it_refuses_chrono_refuses_or_is_a_leap_second():
    rng = random.Random(20)
    texts = [_random_time(rng) for _ in range(20_000)]
    series = pl.Series(texts)
    worker, loader = _chrono_worker(series), _chrono_loader(series)
    in_worker_shape, in_loader_shape = series.str.contains(PARSEABLE_TS), series.str.contains(_TS_SHAPE)
    checked = 0
    for i, text in enumerate(texts):
        if not (in_worker_shape[i] or in_loader_shape[i]):
            continue
        parsed = epoch_us(pl.Series([text]))
        expected = [value for value, shaped in ((worker[i], in_worker_shape[i]), (loader[i], in_loader_shape[i]))
                    if shaped]
        if parsed is None:
            assert all(value is None for value in expected) or ":60" in text, text
        else:
            assert all(value == parsed[0] for value in expected), text
            checked += 1
    assert checked > 3_000  # enough valid times among the random ones


def test_one_refused_time_sends_the_whole_column_to_chrono():
    texts = pl.Series(["2026-12-06T08:00:00Z", "2026-06-30T23:59:60Z", "2026-02-29T00:00:00Z", None])
    assert epoch_us(texts) is None
    assert _chrono_worker(texts)[1] == _chrono_worker(pl.Series(["2026-07-01T00:00:00Z"]))[0]  # chrono's leap second
    valid, micros = _ts_micros(texts)  # the loader's shape has no second 60; chrono's values for the rest
    assert valid.tolist() == [True, False, False, False]
    assert micros[0] == _chrono_loader(texts)[0]


@pytest.mark.parametrize("texts", [["2026-12-06T08:00:00.5Z", "2026-12-06T09:30:00.123456+01:30", None],
                                   ["1969-12-31T23:59:59.999999-00:00"]])
def test_a_column_arrow_takes_keeps_its_nulls_and_values(texts):
    series = pl.Series(texts, dtype=pl.String)
    assert epoch_us(series).to_list() == _chrono_worker(series) == _chrono_loader(series)
    valid, micros = _ts_micros(series)
    assert valid.tolist() == [t is not None for t in texts]
    assert micros.tolist() == [0 if v is None else v for v in _chrono_loader(series)]
