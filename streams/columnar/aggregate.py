"""Aggregate priced rows per (input partition, scope|UTC hour), in first-seen order like `streams.batch`.

Costs are summed as integer pico-dollars. `Aggregate.cost_usd` is a Decimal whose exponent today depends on
its parts (Decimal(0) for an all-unpriced group, exponent -12 once a priced line joined), and its JSON text
follows that exponent, so the sum is rebuilt the same way.
"""

from __future__ import annotations

from decimal import Decimal

import polars as pl

from streams.batch import Aggregate

INT64_SAFE = 2**62


def _cost(pico: int, quantized: bool) -> Decimal:
    return Decimal(pico).scaleb(-12) if quantized else Decimal(pico)


def aggregate(partition: list[int], key: list[str], input_tokens: list[int], output_tokens: list[int],
              cost_pico: list[int], quantized: list[bool], unpriced: list[bool]) -> dict[tuple[int, str], Aggregate]:
    if not key:
        return {}
    if max(max(cost_pico), max(input_tokens), max(output_tokens)) * len(key) >= INT64_SAFE:
        return _aggregate_exact(partition, key, input_tokens, output_tokens, cost_pico, quantized, unpriced)
    frame = pl.DataFrame({"partition": partition, "key": key, "input": input_tokens, "output": output_tokens,
                          "cost": cost_pico, "quantized": quantized, "unpriced": unpriced},
                         schema={"partition": pl.Int64, "key": pl.String, "input": pl.Int64, "output": pl.Int64,
                                 "cost": pl.Int64, "quantized": pl.Boolean, "unpriced": pl.Boolean})
    grouped = frame.group_by("partition", "key", maintain_order=True).agg(
        pl.len().alias("events"), pl.col("input").sum(), pl.col("output").sum(), pl.col("cost").sum(),
        pl.col("quantized").any(), pl.col("unpriced").sum().cast(pl.Int64))
    return {
        (p, k): Aggregate(events, i, o, _cost(c, q), u)
        for p, k, events, i, o, c, q, u in grouped.select(
            "partition", "key", "events", "input", "output", "cost", "quantized", "unpriced").iter_rows()
    }


def _aggregate_exact(partition, key, input_tokens, output_tokens, cost_pico, quantized, unpriced):
    """Python ints for batches whose sums could leave int64 (hostile token counts that took the per-row path)."""
    sums: dict[tuple[int, str], list] = {}
    for p, k, i, o, c, q, u in zip(partition, key, input_tokens, output_tokens, cost_pico, quantized, unpriced):
        group = sums.get((p, k))
        if group is None:
            sums[(p, k)] = [1, i, o, c, q, int(u)]
        else:
            group[0] += 1
            group[1] += i
            group[2] += o
            group[3] += c
            group[4] = group[4] or q
            group[5] += u
    return {scope: Aggregate(n, i, o, _cost(c, q), u) for scope, (n, i, o, c, q, u) in sums.items()}


__all__ = ["aggregate"]
