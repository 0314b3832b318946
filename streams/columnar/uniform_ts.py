"""A chunk's event times checked and rewritten as pydantic writes them, byte by byte in numpy, when every text has
one of the two shapes collectors write: `YYYY-MM-DDTHH:MM:SS.ffffffZ` (27 bytes, pydantic's own dump) or
`YYYY-MM-DDTHH:MM:SS.ffffff±HH:MM` (32 bytes, Python's isoformat of an aware time).

`frame_price.write_frame` asked polars for `PARSEABLE_TS` (a regex) and `_ts_text` (~12 string expressions, each
over the whole column): ~0.3 CPU-us per event of the ~4 the in-process path costs (inproc34). Here the texts are
one (rows x 27 or 32) byte matrix, and each position is compared once. Exact by construction:

- every text is checked position by position against the shape, which is `PARSEABLE_TS` with a fraction of
  exactly six digits: a text that passes matches the regex. If any text does not pass (another length, a null,
  a fraction of other length, a byte out of place), this gives None and the caller uses the regex and the
  expressions as before, for the whole chunk;
- the text is `_ts_text`'s for texts of these shapes: the text itself (canonical: Z after six digits, or a
  non-zero offset), the text's first 26 bytes and `Z` for a zero offset (`+00:00`, `-00:00`), null where the
  fraction is `.000000` (pydantic drops it; the caller then writes the column with `validate._pydantic_column`).

pyarrow hands over the bytes (an Arrow worker has it loaded; a JSON worker keeps it out, and gets None).
"""

from __future__ import annotations

import sys

import numpy as np
import polars as pl

_ZULU, _OFFSET = 27, 32  # the two lengths taken


def _shape(length: int) -> tuple[np.ndarray, np.ndarray]:
    """Per byte of a text of `length`: its lowest byte and the span above it. `YYYY-MM-DDTHH:MM:SS.ffffff` then
    `Z`, or a sign (`+`..`-`, the `,` between them refused apart) and `HH:MM` (hour `0`..`2`, 20-23 apart)."""
    ranges = ["19", *["09"] * 3, "--", "09", "09", "--", "09", "09", "TT", "09", "09", "::", "09", "09", "::", "05",
              "09", "..", *["09"] * 6]
    ranges += ["ZZ"] if length == _ZULU else ["+-", "02", "09", "::", "05", "09"]
    low = np.array([ord(r[0]) for r in ranges], np.uint8)
    return low, np.array([ord(r[1]) for r in ranges], np.uint8) - low


_SHAPES = {length: _shape(length) for length in (_ZULU, _OFFSET)}
_TILED: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # length -> the shape repeated for the most rows seen yet
_ZERO_FRACTION = np.frombuffer(b"000000", np.uint8)


def _fits(rows: np.ndarray) -> bool:
    """Whether every text (a row of bytes) has its length's shape: each byte minus its lowest within its span (in
    uint8 a byte below the lowest wraps round above it), the whole matrix in one flat pass."""
    n, length = rows.shape
    tiled = _TILED.get(length)
    if tiled is None or len(tiled[0]) < n * length:
        low, span = _SHAPES[length]
        tiled = _TILED[length] = (np.tile(low, max(n, 1024)), np.tile(span, max(n, 1024)))
    flat = rows.reshape(-1)
    if not ((flat - tiled[0][:n * length]) <= tiled[1][:n * length]).all():
        return False
    if length == _OFFSET:
        sign, tens, units = rows[:, 26], rows[:, 27], rows[:, 28]
        return bool((sign != ord(",")).all() and ((tens != ord("2")) | (units <= ord("3"))).all())
    return True


def uniform_ts(texts: pl.Series) -> pl.Series | None:
    """pydantic's text of each event time (null where the fraction is `.000000`), or None when not every text has
    one shape (then the caller checks and rewrites them with polars' expressions)."""
    if "pyarrow" not in sys.modules or texts.len() == 0 or texts.null_count():
        return None
    import pyarrow as pa

    array = texts.to_arrow()  # large_string: int64 offsets, one data buffer
    if not pa.types.is_large_string(array.type):
        return None
    n = len(array)
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int64, n + 1, array.offset * 8)
    length = int(offsets[1] - offsets[0])
    if length not in (_ZULU, _OFFSET) or int(offsets[n] - offsets[0]) != n * length:
        return None
    if not (np.diff(offsets) == length).all():
        return None
    rows = np.frombuffer(data_buffer, np.uint8, n * length, int(offsets[0])).reshape(n, length)
    if not _fits(rows):
        return None
    # `.000000`: pydantic drops it (the caller's part). Asked of the rows ending in 0 alone, position by position:
    # a comparison of (rows x 6) bytes with a row of six cost ~1 ms a 28,000-row chunk
    ending = np.flatnonzero(rows[:, 25] == ord("0"))
    zero_fraction = ending[(rows[ending, 20:26] == _ZERO_FRACTION).all(axis=1)]
    if length == _ZULU:
        text = texts
    else:
        zero = rows[:, 27] == ord("0")
        for position in (28, 30, 31):  # 29 is the colon
            zero &= rows[:, position] == ord("0")
        if zero.all():  # the first 26 bytes and Z
            data = np.empty((n, _ZULU), np.uint8)
            data[:, :26] = rows[:, :26]
            data[:, 26] = ord("Z")
            text = pl.from_arrow(pa.LargeStringArray.from_buffers(
                n, pa.py_buffer(np.arange(0, (n + 1) * _ZULU, _ZULU, dtype=np.int64)), pa.py_buffer(data)))
        elif not zero.any():  # canonical as written
            text = texts
        else:  # some zero offsets, some not: rare (one source's clock per chunk); polars' expressions decide
            return None
    if not len(zero_fraction):
        return text.alias(texts.name)
    written = np.ones(n, bool)
    written[zero_fraction] = False
    return pl.select(pl.when(pl.lit(pl.Series(written))).then(pl.lit(text))).to_series().alias(texts.name)


__all__ = ["uniform_ts"]
