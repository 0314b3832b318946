"""Meter the columnar rows: provider usage, split into the parts each priced once.

Rows whose usage must be counted from text (no provider usage) never reach this module: they take the per-row
fallback, which runs today's tiktoken metering (`streams.metering.meter`) for exactly those rows.
"""

from __future__ import annotations

import polars as pl

# Cost parts in the order `streams.pricing.book.cost_lines` lists them (and a breakdown shows them).
TOKEN_PARTS = ("input", "cached_input", "cache_write_5m", "cache_write_1h", "output", "reasoning")


def usage_frame(usage: list[tuple[int, int, int, int, int, int]]) -> pl.DataFrame:
    """Provider usage as columns, plus the token count of each cost part: uncached input = input - cache reads -
    cache writes; 5-minute writes = writes - 1-hour writes; visible output = output - reasoning."""
    names = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens", "output_tokens",
             "reasoning_tokens")
    parts = list(zip(*usage)) if usage else [()] * len(names)
    frame = pl.DataFrame({name: pl.Series(name, values, dtype=pl.Int64) for name, values in zip(names, parts)})
    return frame.with_columns(
        (pl.col("input_tokens") - pl.col("cached_input_tokens") - pl.col("cache_write_tokens")).alias("t_input"),
        pl.col("cached_input_tokens").alias("t_cached_input"),
        (pl.col("cache_write_tokens") - pl.col("cache_write_1h_tokens")).alias("t_cache_write_5m"),
        pl.col("cache_write_1h_tokens").alias("t_cache_write_1h"),
        (pl.col("output_tokens") - pl.col("reasoning_tokens")).alias("t_output"),
        pl.col("reasoning_tokens").alias("t_reasoning"),
    )


__all__ = ["TOKEN_PARTS", "usage_frame"]
