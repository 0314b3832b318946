"""arrow_encode._lines: the cost lines as an Arrow map, against the map built row by row, for rows that all have the
same lines (inproc28's path without the search for which lines a row has) and rows with different lines."""

import polars as pl
import pyarrow as pa

from streams.columnar.arrow_encode import LINE_PARTS, _lines

S = pa.string()


def expected(frame: pl.DataFrame) -> pa.MapArray:
    rows = frame.select(LINE_PARTS).rows()
    return pa.array([[(part, text) for part, text in zip(LINE_PARTS, row) if text is not None] for row in rows],
                    pa.map_(S, S))


def frame_of(lines: dict[str, list[str | None]], n: int) -> pl.DataFrame:
    return pl.DataFrame({part: lines.get(part, [None] * n) for part in LINE_PARTS},
                        schema={part: pl.String for part in LINE_PARTS})


def test_lines_every_row_has():
    n = 1_000
    frame = frame_of({"input": [f"0.{i:012d}" for i in range(n)], "cached_input": [f"1.{i:012d}" for i in range(n)],
                      "output": [f"2.{i:012d}" for i in range(n)]}, n)
    assert _lines(frame).equals(expected(frame))
    one = frame_of({"request": ["0.5"]}, 1)
    assert _lines(one).equals(expected(one))


def test_lines_rows_differ_and_none():
    n = 999
    frame = frame_of({"input": [f"0.{i}" for i in range(n)],
                      "output": [None if i % 3 == 0 else f"2.{i}" for i in range(n)],
                      "request": [f"9.{i}" if i % 7 == 0 else None for i in range(n)]}, n)
    assert _lines(frame).equals(expected(frame))
    assert _lines(frame_of({}, 4)).equals(expected(frame_of({}, 4)))
    assert len(_lines(frame_of({}, 0))) == 0
