"""Price the columnar rows: the catalog compiled once into a price table, an effective-dated as-of join on ts, and
exact integer arithmetic in pico-dollars (1e-12 USD, `COST_QUANTUM`).

Rounding equivalence with `streams.pricing.book.cost_lines`: there each line is `tokens * per_token_price`
(a Decimal product, exact while it has at most 28 digits) quantized once to 1e-12 with ROUND_HALF_EVEN, and
the total is the sum of the rounded lines. Here each per-token price is held as an integer numerator `num`
over `10**e` pico-dollars (exact: a catalog price is a finite decimal), a line is `tokens * num` (int64; rows
whose product could exceed 2**59 take the per-row path, so the Decimal product there is exact too) divided by
`10**e` with half-even rounding done on integers, and the total is the integer sum. Same numbers, no floats.

Input-length tiers and thinking prices (see `streams.pricing.book`): each version row of the as-of join carries its
thresholds (`th_1` .. `th_K`, null past its own) and whether it has a thinking price; a row's input tier (column
`long`, an integer: 0 base, i above the i-th threshold) is the count of thresholds its input exceeds, and its
thinking flag is `reasoning_tokens > 0` on such a version. The price set is the book's for (version, service tier,
input tier, thinking), compiled once.

Rows a negotiated rule may apply to (`overrides`) take the per-row fallback (today's code). Per-request tool fees
are added per row by the pipeline with today's `fee_lines`. Unpriced reasons are the book's exact texts.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from fnmatch import fnmatchcase
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import polars as pl

from streams.pricing import COST_QUANTUM, PriceBook, service_tier_of
from streams.pricing.catalog import CatalogEntry
from streams.pricing.schema import PriceSet, PriceVersion
from tokenmeter.exprs import any_of
from tokenmeter.timefmt import iso_effective

from .meter import TOKEN_PARTS

PICO = Decimal(10) ** 12
LINE_LIMIT = 2**59  # a line (and so a sum of 7 lines) stays far inside int64
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Row outcomes of `PriceTable.price`
PRICED, UNPRICED, FALLBACK = 0, 1, 2


def _epoch_us(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(microseconds=1)


@dataclass
class CompiledSet:
    """One (version, tier, context size) price set as integers: pico-dollars per token = num / 10**e."""

    num: tuple[int, ...]
    div: tuple[int, ...]
    limit: tuple[int, ...]  # largest token count whose line stays under LINE_LIMIT
    request_pico: int  # the per-request line, already rounded
    bills_request: bool  # the set has a non-zero request price (a line even if it rounds to 0)


def compile_set(prices: PriceSet) -> CompiledSet:
    nums, divs, limits = [], [], []
    for part in TOKEN_PARTS:
        pico = (prices.per_token[part] * PICO).normalize()
        sign, digits, exponent = pico.as_tuple()
        scale = max(0, -exponent)
        num = int(pico.scaleb(scale))
        nums.append(num)
        divs.append(10**scale)
        limits.append(LINE_LIMIT // num if num else LINE_LIMIT)
    request_pico = int(prices.request.quantize(COST_QUANTUM, ROUND_HALF_EVEN) * PICO) if prices.request else 0
    return CompiledSet(tuple(nums), tuple(divs), tuple(limits), request_pico, bool(prices.request))


@dataclass
class PriceTable:
    """A PriceBook compiled for columns: one row per (entry, version) for the as-of join; price sets on demand."""

    book: PriceBook
    entries: list[CatalogEntry] = field(default_factory=list)
    versions: list[tuple[CatalogEntry, PriceVersion]] = field(default_factory=list)
    version_frame: pl.DataFrame | None = None
    refs: list[dict[str, Any]] = field(default_factory=list)  # per version: the PriceRef as JSON
    _entry_ids: dict[str, int] = field(default_factory=dict)
    _combos: dict[tuple[int, str, int, bool], int | str] = field(default_factory=dict)
    sets: list[CompiledSet] = field(default_factory=list)
    threshold_count: int = 0  # the most input-length thresholds any version has

    @classmethod
    def compile(cls, book: PriceBook) -> "PriceTable":
        table = cls(book)
        entry_ids, starts, vids, thresholds, thinks = [], [], [], [], []
        for entry in book.entries.values():
            table._entry_ids[entry.key] = len(table.entries)
            for version in entry.versions:
                entry_ids.append(len(table.entries))
                starts.append(_epoch_us(version.effective_from))
                vids.append(len(table.versions))
                thresholds.append(version.thresholds)
                thinks.append(version.prices_thinking)
                table.versions.append((entry, version))
                ref = {"entry": entry.key, "effective_from": iso_effective(version.effective_from),
                       "catalog_version": book.catalog_version}
                table.refs.append({k: v for k, v in ref.items() if v is not None})
            table.entries.append(entry)
        table.threshold_count = max((len(t) for t in thresholds), default=0)
        columns: dict[str, list] = {"entry_id": entry_ids, "from_us": starts, "vid": vids, "thinks": thinks}
        for k in range(table.threshold_count):
            columns[f"th_{k + 1}"] = [t[k] if k < len(t) else None for t in thresholds]
        table.version_frame = pl.DataFrame(
            columns, schema={"entry_id": pl.Int64, "from_us": pl.Int64, "vid": pl.Int64, "thinks": pl.Boolean,
                             **{f"th_{k + 1}": pl.Int64 for k in range(table.threshold_count)}},
        ).sort("from_us")
        # an empty set at index 0 stands for "no set" in gathers
        table.sets.append(CompiledSet((0,) * 6, (1,) * 6, (LINE_LIMIT,) * 6, 0, False))
        return table

    def entry_id(self, provider: str, model: str) -> int:
        entry = self.book.resolve(provider, model).entry
        return -1 if entry is None else self._entry_ids[entry.key]

    def combo(self, vid: int, tier: str, input_tier: int, thinking: bool = False) -> int | str:
        """Index of the compiled price set, or the book's reason why there is none."""
        key = (vid, tier, int(input_tier), thinking)
        found = self._combos.get(key)
        if found is None:
            prices = self.versions[vid][1].price_set(tier, input_tier, thinking)
            if isinstance(prices, str):
                found = prices
            else:
                found = len(self.sets)
                self.sets.append(compile_set(prices))
            self._combos[key] = found
        return found


_tables: "weakref.WeakKeyDictionary[PriceBook, PriceTable]" = weakref.WeakKeyDictionary()


def price_table(book: PriceBook) -> PriceTable:
    table = _tables.get(book)
    if table is None:
        table = _tables[book] = PriceTable.compile(book)
    return table


def _rule_may_apply(book: PriceBook, org: str | None, entry: CatalogEntry) -> bool:
    """Whether a negotiated rule could apply to this org and entry at any time (such rows take the per-row path,
    which picks the rule in force at the event's ts exactly as today)."""
    overrides = book.overrides
    if overrides is None:
        return False
    rules = overrides._by_org.get(None, []) + (overrides._by_org.get(org, []) if org else [])  # noqa: SLF001
    for rule in rules:
        if rule.providers and entry.provider not in rule.providers:
            continue
        if rule.models and not any(fnmatchcase(entry.key, p) or fnmatchcase(entry.model, p) for p in rule.models):
            continue
        return True
    return False


def _tier_name(batch: bool, service_tier: str | None) -> str:
    class _Probe:  # service_tier_of reads only these two attributes
        pass

    probe = _Probe()
    probe.batch, probe.service_tier = batch, service_tier
    return service_tier_of(probe)  # type: ignore[arg-type]


def _round_half_even(numerator: pl.Expr, divisor: pl.Expr) -> pl.Expr:
    quotient = numerator // divisor
    twice_rest = (numerator % divisor) * 2
    up = (twice_rest > divisor) | ((twice_rest == divisor) & (quotient % 2 == 1))
    return quotient + up.cast(pl.Int64)


def _lookup(frame: pl.DataFrame, keys: pl.DataFrame, name: str, dtype: pl.DataType, values: list) -> pl.Series:
    """A Series `name`: for each row of `frame`, `values[i]` where the row equals row i of `keys` (distinct rows) on
    `keys`' columns, nulls equal; null where no row of `keys` matches."""
    table = keys.with_columns(pl.Series(name, values, dtype=dtype))
    return frame.select(keys.columns).join(table, on=keys.columns, how="left", nulls_equal=True,
                                           maintain_order="left").get_column(name)


def price_frame(table: PriceTable, frame: pl.DataFrame) -> pl.DataFrame:
    """Add to `frame` (columns provider, model, org, ts_us, batch, service_tier, status_ok, input_tokens, t_<part>):
    outcome (PRICED/UNPRICED/FALLBACK), vid, sid, reason_code, line_<part> and line_request (pico, null when the
    breakdown has no such line), cost_pico and has_lines."""
    book = table.book
    pair_keys = frame.select(pl.concat_str("provider", "model", separator="\x1f")).to_series()
    uniques = pair_keys.unique().to_list()
    ids = [table.entry_id(*key.split("\x1f", 1)) for key in uniques]
    frame = frame.with_columns(entry_id=pair_keys.replace_strict(uniques, ids, return_dtype=pl.Int64))

    tier_keys = frame.select(pl.concat_str(pl.col("batch").cast(pl.String), pl.col("service_tier").fill_null(""),
                                           separator="\x1f")).to_series()
    tier_uniques = tier_keys.unique().to_list()
    tier_names = [_tier_name(k.split("\x1f", 1)[0] == "true", k.split("\x1f", 1)[1]) for k in tier_uniques]
    frame = frame.with_columns(tier=tier_keys.replace_strict(tier_uniques, tier_names, return_dtype=pl.String))

    if book.overrides is not None:
        org_keys = frame.select(pl.concat_str(pl.col("org").fill_null("\x00"), pl.col("entry_id").cast(pl.String),
                                              separator="\x1f")).to_series()
        org_uniques = org_keys.unique().to_list()
        flags = []
        for key in org_uniques:
            org, entry_id = key.rsplit("\x1f", 1)
            entry_id = int(entry_id)
            flags.append(entry_id >= 0 and _rule_may_apply(book, None if org == "\x00" else org,
                                                            table.entries[entry_id]))
        frame = frame.with_columns(ruled=org_keys.replace_strict(org_uniques, flags, return_dtype=pl.Boolean))
    else:
        frame = frame.with_columns(ruled=pl.lit(False))

    # the as-of join on the three columns it needs, its version columns put back beside the frame: sorting the
    # whole frame (its strings and structs) there and back cost twice as much
    versions = (frame.select("ts_us", "entry_id").with_row_index("_row").sort("ts_us")
                .join_asof(table.version_frame, left_on="ts_us", right_on="from_us", by="entry_id", strategy="backward",
                           check_sortedness=False)
                .sort("_row").drop("_row", "ts_us", "entry_id"))
    joined = frame.with_row_index("_row").hstack(versions.get_columns())
    exceeded = [(pl.col(f"th_{k + 1}").is_not_null() & (pl.col("input_tokens") > pl.col(f"th_{k + 1}")))
                .fill_null(False).cast(pl.Int64) for k in range(table.threshold_count)]
    joined = joined.with_columns(
        long=pl.sum_horizontal(exceeded) if exceeded else pl.lit(0, dtype=pl.Int64),
        thinking=(pl.col("thinks") & (pl.col("t_reasoning") > 0)).fill_null(False))

    has_version = joined.get_column("vid").is_not_null()
    combo_frame = joined.filter(has_version).select("vid", "tier", "long", "thinking").unique()
    combo_sids = {}
    for vid, tier, input_tier, thinking in combo_frame.iter_rows():
        found = table.combo(vid, tier, input_tier, thinking)
        combo_sids[(vid, tier, input_tier, thinking)] = found if isinstance(found, int) else -1
    if combo_sids:  # joined on the four columns (inproc17: 3x cheaper than a text key per row and replace_strict)
        sid = _lookup(joined, combo_frame, "sid", pl.Int64, [combo_sids[k] for k in combo_frame.iter_rows()])
    else:
        sid = pl.Series("sid", [None] * joined.height, dtype=pl.Int64)
    joined = joined.with_columns(sid=sid)

    gather = joined.get_column("sid").fill_null(0).clip(lower_bound=0).cast(pl.UInt32)
    sets = table.sets
    line_columns = []
    too_big = [pl.lit(False)]
    # which token parts the batch has at all, in one query (a Series comparison and `any` per part were twelve)
    present = joined.select((pl.col(f"t_{part}") != 0).any() for part in TOKEN_PARTS).row(0)
    for i, part in enumerate(TOKEN_PARTS):
        if not present[i]:  # no such tokens in the batch (no cache writes, no reasoning):
            line_columns.append(pl.lit(None, dtype=pl.Int64).alias(f"line_{part}"))  # a null line, nothing to cap
            continue
        num = pl.Series([s.num[i] for s in sets], dtype=pl.Int64).gather(gather)
        div = pl.Series([s.div[i] for s in sets], dtype=pl.Int64).gather(gather)
        limit = pl.Series([s.limit[i] for s in sets], dtype=pl.Int64).gather(gather)
        tokens = pl.col(f"t_{part}")
        too_big.append(tokens > pl.lit(limit))
        amount = _round_half_even(tokens * pl.lit(num), pl.lit(div))
        line_columns.append(pl.when(tokens != 0).then(amount).otherwise(None).alias(f"line_{part}"))
    request = pl.Series([s.request_pico for s in sets], dtype=pl.Int64).gather(gather)
    bills = pl.Series([s.bills_request for s in sets], dtype=pl.Boolean).gather(gather)
    line_columns.append(pl.when(pl.col("status_ok") & pl.lit(bills)).then(pl.lit(request))
                        .otherwise(None).alias("line_request") if bills.any()
                        else pl.lit(None, dtype=pl.Int64).alias("line_request"))

    priced_ok = pl.col("sid").fill_null(-1) >= 0
    joined = joined.with_columns(too_big=any_of(*too_big)).with_columns(  # balanced: exprs.py
        [pl.when(priced_ok).then(c).otherwise(None) for c in line_columns])
    line_names = [f"line_{p}" for p in (*TOKEN_PARTS, "request")]
    outcome = (pl.when(pl.col("ruled") | (priced_ok & pl.col("too_big"))).then(FALLBACK)
               .when(priced_ok).then(PRICED).otherwise(UNPRICED))
    return joined.with_columns(
        outcome=outcome,
        cost_pico=pl.sum_horizontal(line_names).fill_null(0),
        has_lines=pl.any_horizontal([pl.col(c).is_not_null() for c in line_names]).fill_null(False),
    )


def unpriced_reason(table: PriceTable, provider: str, model: str, entry_id: int, vid: int | None, tier: str,
                    input_tier: int, ts: str, service_tier: str | None) -> tuple[str, dict[str, Any] | None]:
    """The book's exact reason (and PriceRef, if it has one) for an unpriced row; `input_tier` is the row's `long`
    column. Whether a call thinks never changes the reason (a service tier lacks prices for both or neither)."""
    if entry_id < 0:
        resolution = table.book.resolve(provider, model)
        return resolution.reason or "unknown model", None
    entry = table.entries[entry_id]
    if vid is None:
        first = iso_effective(entry.versions[0].effective_from) if entry.versions else "never"
        when = datetime.fromisoformat(ts).isoformat()
        return f"no price for {entry.key} in force at {when} (first price from {first})", None
    reason = table.combo(vid, tier, input_tier)
    asked = f"service_tier {service_tier!r}" if tier != "batch" else "batch"
    return f"{entry.key}: {reason} ({asked})", table.refs[vid]


__all__ = ["FALLBACK", "PRICED", "UNPRICED", "PriceTable", "price_frame", "price_table", "unpriced_reason"]
