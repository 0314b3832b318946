"""A chunk's event times checked and rewritten in numpy (streams/columnar/uniform_ts.py, inproc34) give what the
frame path's polars expressions give: every text matches PARSEABLE_TS and the text is `_ts_text`'s, or None (then
those expressions run, as before)."""

from __future__ import annotations

import random

import polars as pl
import pyarrow  # noqa: F401 - an Arrow worker's process: uniform_ts reads the bytes through it

from streams.columnar.frame_price import PARSEABLE_TS, _ts_text
from streams.columnar.uniform_ts import uniform_ts


def _expected(texts: list[str]) -> tuple[bool, list[str | None]]:
    frame = pl.DataFrame({"ts": texts}, schema={"ts": pl.String})
    got = frame.select(ok=pl.col("ts").str.contains(PARSEABLE_TS).fill_null(False).all(), text=_ts_text())
    return got.get_column("ok")[0], got.get_column("text").to_list()


def _text(rng: random.Random, zulu: bool, offset: str | None = None, fraction: str | None = None) -> str:
    head = (f"{rng.randint(1000, 9999)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}")
    fraction = fraction if fraction is not None else f"{rng.randint(0, 999_999):06d}"
    if zulu:
        return f"{head}.{fraction}Z"
    return f"{head}.{fraction}{offset or rng.choice('+-')}{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"


def _check(texts: list[str]) -> pl.Series | None:
    got = uniform_ts(pl.Series("ts", texts, dtype=pl.String))
    ok, expected = _expected(texts)
    if got is not None:
        assert ok
        assert got.to_list() == expected
        assert got.name == "ts"
    return got


def test_uniform_texts_are_checked_and_written_as_the_expressions_do():
    rng = random.Random(34)
    zero = lambda: rng.choice(["000000", f"{rng.randint(0, 999_999):06d}"])  # noqa: E731
    shapes = {
        "zulu": [_text(rng, True, fraction=zero()) for _ in range(3000)],
        "zero offsets": [_text(rng, False, "+00:00"[0], zero())[:-5] + "00:00" for _ in range(3000)],
        "offsets": [_text(rng, False, fraction=zero()) for _ in range(3000)],
        "minus zero": [_text(rng, False, "-")[:-5] + "00:00" for _ in range(3000)],
    }
    for name, texts in shapes.items():
        texts = [t for t in texts if not t[-6:] in ("+00:00", "-00:00")] if name == "offsets" else texts
        assert _check(texts) is not None, name
    assert _check(["2026-12-07T15:29:04.162266+00:00"])[0] == "2026-12-07T15:29:04.162266Z"
    assert _check(["2026-12-07T15:29:04.000000+00:00"])[0] is None  # pydantic drops the fraction: the caller's


def test_any_other_text_leaves_the_chunk_to_the_expressions():
    rng = random.Random(35)
    good = [_text(rng, True) for _ in range(100)]
    twists = ["2026-12-07T15:29:04.16226Z", "2026-12-07T15:29:04Z", "2026-12-07 15:29:04.162266Z",
              "0026-12-07T15:29:04.162266Z", "2026-12-07T15:29:60.162266Z", "2026-12-07T15:29:04.162266z",
              "2026-1a-07T15:29:04.162266Z", "2026-12-07T15:29:04,162266Z", "2026-12-07T15:29:04.1+00:00",
              "2026-12-07T15:29:04.162266+24:00", "2026-12-07T15:29:04.162266+00:60", "2026-12-07T15:29:04.162266*00:00",
              "2026-12-07T15:29:04.162266+0000", "2026-12-07T15:29:04.16226\u00e9Z"]
    for twist in twists:
        assert _check(good[:50] + [twist] + good[50:]) is None, twist
    assert uniform_ts(pl.Series("ts", [*good, None], dtype=pl.String)) is None
    mixed = ["2026-12-07T15:29:04.162266+00:00", "2026-12-07T15:29:04.162266+02:00"]
    assert _check(mixed) is None  # zero and other offsets in one chunk: the expressions
    assert _check(mixed[1:] * 3) is not None
    sliced = pl.concat([pl.Series("ts", ["2026-12-07T15:29:04.1+00:00"]), pl.Series("ts", good)]).slice(1)
    assert uniform_ts(sliced).to_list() == _expected(good)[1]  # a slice (an offset into the buffers): its own rows
