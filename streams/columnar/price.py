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
from functools import cache
from datetime import datetime, timedelta, timezone
from fnmatch import fnmatchcase
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import numpy as np
import polars as pl

from streams.pricing import COST_QUANTUM, PriceBook, service_tier_of
from streams.pricing.catalog import CatalogEntry
from streams.pricing.schema import PriceSet, PriceVersion
from tokenmeter.exprs import any_of, run_plan
from tokenmeter.stored_money import MAX_STORED_COST_PICO
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
    # price_frame's lookups (None: empty): (provider, model) -> entry_id; (batch, service_tier) -> tier; (org,
    # entry_id) -> ruled; (vid, tier, long, thinking) -> sid and its set's integers (_SET_SCHEMA)
    pair_ids: pl.DataFrame | None = None
    tier_names: pl.DataFrame | None = None
    org_rules: pl.DataFrame | None = None
    set_rows: pl.DataFrame | None = None
    _version_keys: tuple[np.ndarray, ...] | None = None  # `version_rows`' sorted keys, made on first use

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
    """numerator / divisor rounded half to even (divisor > 0): the quotient goes up when twice the rest is over the
    divisor, or equal to it with an odd quotient, i.e. when twice the rest plus the quotient's parity (0 or 1: floor
    division and modulo) is over it. One comparison where there were five nodes (fuse24: every node is planned
    and run per chunk)."""
    quotient = numerator // divisor
    return quotient + ((numerator % divisor) * 2 + quotient % 2 > divisor).cast(pl.Int64)


# Distinct keys a chunk's rows are looked up by, remembered per price table (their answers never change for a book);
# a table of more rows than this is started afresh (provider, model and org are input: unbounded)
LOOKUP_ROWS_MAX = 4096
_NO_SET = CompiledSet((0,) * 6, (1,) * 6, (LINE_LIMIT,) * 6, 0, False)  # what a combo without prices gathers
_SET_SCHEMA = {"vid": pl.Int64, "tier": pl.String, "long": pl.Int64, "thinking": pl.Boolean, "sid": pl.Int64,
               **{f"_{what}_{part}": pl.Int64 for part in TOKEN_PARTS for what in ("num", "div", "limit")},
               "_request": pl.Int64, "_bills": pl.Boolean}
_SET_KEYS = ("vid", "tier", "long", "thinking")


def _learn(old: pl.DataFrame | None, keys: pl.DataFrame, missing: pl.Series, answer) -> pl.DataFrame:  # noqa: ANN001
    """`old` (a lookup: key columns and answers) with the keys of `keys` (one row per frame row) where `missing`,
    answered by `answer(distinct keys) -> Series`. Past LOOKUP_ROWS_MAX it is started afresh with all the chunk's
    keys (not only the missing ones, so the next query finds every one)."""
    wanted = keys.filter(missing).unique()
    if old is not None and old.height + wanted.height > LOOKUP_ROWS_MAX:
        old, wanted = None, keys.unique()
    learnt = wanted.with_columns(answer(wanted))
    return learnt if old is None else pl.concat([old, learnt], how="vertical")


def _learn_keys(table: PriceTable, frame: pl.DataFrame, keyed: pl.DataFrame) -> bool:
    """Add to the table's lookups the keys of `frame` `keyed` (`_keyed`'s answers) found no answer for; whether
    there were any. Entries first: the rule lookup is keyed by their ids."""
    book = table.book
    entry_ids = keyed.get_column("entry_id")
    if entry_ids.null_count():
        table.pair_ids = _learn(table.pair_ids, frame.select("provider", "model"), entry_ids.is_null(), lambda pairs: (
            pl.Series("entry_id", [table.entry_id(p, m) for p, m in pairs.iter_rows()], dtype=pl.Int64)))
        return True
    learnt = False
    tiers = keyed.get_column("tier")
    if tiers.null_count():  # a missing service tier is asked as "" (as it always was), never as None
        table.tier_names = _learn(table.tier_names, frame.select("batch", "service_tier"), tiers.is_null(),
                                  lambda keys: pl.Series("tier", [_tier_name(b, s or "") for b, s in keys.iter_rows()],
                                                         dtype=pl.String))
        learnt = True
    ruled = keyed.get_column("ruled")
    if book.overrides is not None and ruled.null_count():
        table.org_rules = _learn(table.org_rules, pl.DataFrame([frame.get_column("org"), entry_ids]), ruled.is_null(),
                                 lambda keys: pl.Series("ruled", [
                                     entry_id >= 0 and _rule_may_apply(book, None if org in (None, "\x00") else org,
                                                                       table.entries[entry_id])
                                     for org, entry_id in keys.iter_rows()], dtype=pl.Boolean))
        learnt = True
    return learnt


def _keyed(table: PriceTable, frame: pl.DataFrame) -> pl.DataFrame:
    """entry_id, tier and ruled for each row of `frame`, from the table's lookups (null where a key is not in them
    yet), in one query of three joins on the key columns only (each was a select, a unique and a replace_strict:
    ~12 queries per chunk)."""
    overrides = table.book.overrides is not None
    plan = frame.lazy().select("provider", "model", "batch", "service_tier", *(["org"] if overrides else []))
    lookups = (("entry_id", pl.Int64, table.pair_ids, ["provider", "model"]),
               ("tier", pl.String, table.tier_names, ["batch", "service_tier"]),
               ("ruled", pl.Boolean, table.org_rules, ["org", "entry_id"]))
    for name, dtype, lookup, keys in lookups:
        if name == "ruled" and not overrides:
            plan = plan.with_columns(ruled=pl.lit(False))
        elif lookup is None:
            plan = plan.with_columns(pl.lit(None, dtype=dtype).alias(name))
        else:
            plan = plan.join(lookup.lazy(), on=keys, how="left", nulls_equal=True, maintain_order="left")
    return run_plan(plan.select("entry_id", "tier", "ruled"))


def _learn_sets(table: PriceTable, joined: pl.DataFrame, priced: pl.DataFrame) -> bool:
    """Add to the table's set lookup the (vid, tier, long, thinking) combos of `joined`'s rows `priced` (`_priced`'s
    columns) found no row for (a row with a version and no sid); whether there were any."""
    sid, vid = priced.get_column("sid"), joined.get_column("vid")
    if sid.null_count() == vid.null_count():  # rows without a version have none: the rest all have one
        return False

    def answer(combos: pl.DataFrame) -> list[pl.Series]:
        rows = []
        for key in combos.iter_rows():
            found = table.combo(*key)
            compiled = table.sets[found] if isinstance(found, int) else _NO_SET
            rows.append((found if isinstance(found, int) else -1,
                         *(value for i in range(len(TOKEN_PARTS))
                           for value in (compiled.num[i], compiled.div[i], compiled.limit[i])),
                         compiled.request_pico, compiled.bills_request))
        schema = {name: dtype for name, dtype in _SET_SCHEMA.items() if name not in _SET_KEYS}
        return pl.DataFrame(rows, schema=schema, orient="row").get_columns()

    versioned = vid.is_not_null()
    keys = pl.DataFrame([vid, joined.get_column("tier"), priced.get_column("long"), priced.get_column("thinking")])
    table.set_rows = _learn(table.set_rows, keys.filter(versioned), sid.filter(versioned).is_null(), answer)
    return True


@cache
def _pricing_exprs(threshold_count: int, zero: frozenset[str] = frozenset()
                   ) -> tuple[list[pl.Expr], list[pl.Expr], list[pl.Expr]]:
    """The expressions `price_frame` prices with, per number of input-length thresholds (built once: building them
    was ~2 ms of Python per chunk): (the input tier and thinking flag, the lines and too_big, the outcome and
    totals). `zero`: token parts 0 in every row (`price_frame`): their line is null (`tokens != 0` fails) and they are
    never too big (`0 > limit` is false or null, and any_of(...).fill_null(False) is the same without them), so
    neither is computed."""
    exceeded = [(pl.col(f"th_{k + 1}").is_not_null() & (pl.col("input_tokens") > pl.col(f"th_{k + 1}")))
                .fill_null(False).cast(pl.Int64) for k in range(threshold_count)]
    tiers = [(pl.sum_horizontal(exceeded) if exceeded else pl.lit(0, dtype=pl.Int64)).alias("long"),
             (pl.col("thinks") & (pl.col("t_reasoning") > 0)).fill_null(False).alias("thinking")]
    priced_ok = pl.col("sid").fill_null(-1) >= 0
    too_big, lines = [pl.lit(False)], []  # too_big goes first (the columns' order as before)
    for part in TOKEN_PARTS:
        if part in zero:
            lines.append(pl.lit(None, dtype=pl.Int64).alias(f"line_{part}"))
            continue
        # a part no row has (no cache writes, no reasoning) ends a null line: tokens are 0 in every row
        tokens = pl.col(f"t_{part}")
        too_big.append(tokens > pl.col(f"_limit_{part}"))
        amount = _round_half_even(tokens * pl.col(f"_num_{part}"), pl.col(f"_div_{part}"))
        lines.append(pl.when(priced_ok & (tokens != 0)).then(amount).alias(f"line_{part}"))
    lines.append(pl.when(priced_ok & pl.col("status_ok") & pl.col("_bills")).then(pl.col("_request"))
                 .alias("line_request"))
    # rows without a version have no set (null limits): not too big, as the empty set's limits said
    lines.insert(0, any_of(*too_big).fill_null(False).alias("too_big"))  # balanced: exprs.py
    line_names = [f"line_{p}" for p in (*TOKEN_PARTS, "request")]
    total = pl.sum_horizontal(line_names).fill_null(0)
    # a total the warehouse cannot store takes the per-row path, which letters it (tokenmeter/stored_money.py); the
    # lines are non-negative and each below the total, so the total alone decides
    outcome = (pl.when(pl.col("ruled") | (priced_ok & (pl.col("too_big") | (total >= MAX_STORED_COST_PICO))))
               .then(FALLBACK).when(priced_ok).then(PRICED).otherwise(UNPRICED))
    totals = [outcome.alias("outcome"), total.alias("cost_pico"),
              pl.any_horizontal([pl.col(c).is_not_null() for c in line_names]).fill_null(False).alias("has_lines")]
    return tiers, lines, totals


_PRICED_NEEDS = ("vid", "tier", "thinks", "input_tokens", "status_ok", "ruled", *(f"t_{part}" for part in TOKEN_PARTS))
_PRICED_GIVES = ("long", "thinking", "sid", "too_big", *(f"line_{p}" for p in (*TOKEN_PARTS, "request")), "outcome",
                 "cost_pico", "has_lines")


def _priced(table: PriceTable, joined: pl.DataFrame, zero: frozenset[str] = frozenset()) -> pl.DataFrame:
    """_PRICED_GIVES for each row of `joined`, in one query on the columns it needs (a join on the whole frame
    would copy every column); `zero`: token parts 0 in every row (`_pricing_exprs`)."""
    tiers, lines, totals = _pricing_exprs(table.threshold_count, zero)
    thresholds = [f"th_{k + 1}" for k in range(table.threshold_count)]
    plan = joined.lazy().select(*_PRICED_NEEDS, *thresholds).with_columns(tiers)
    if table.set_rows is None:
        plan = plan.with_columns(pl.lit(None, dtype=dtype).alias(name) for name, dtype in _SET_SCHEMA.items()
                                 if name not in _SET_KEYS)
    else:
        plan = plan.join(table.set_rows.lazy(), on=list(_SET_KEYS), how="left", nulls_equal=True,
                         maintain_order="left")
    return run_plan(plan.with_columns(lines).with_columns(totals).select(_PRICED_GIVES))


def version_rows(table: PriceTable, ts_us: pl.Series, entry_id: pl.Series) -> pl.DataFrame:
    """Per row, the version in force for its entry at its time (`table.version_frame`'s row less `entry_id`: from_us,
    vid, thinks, th_<k>; all null where none is: no entry, a time before the entry's first price, a null time):
    polars' backward as-of join by entry_id, as one binary search in numpy (inproc28). The join sorted the chunk by
    time and back by row around the join (~2.3-2.9 ms of a 28,000-row chunk, ~1.1 this way).

    Each version's key is (entry, rank of its start among all starts) and each row's (entry, rank of its time), as
    one integer: a version starting at or before the row's time has a rank <= the row's, so the last key <= the row's
    is the entry's latest version in force, if that key is the row's entry's at all. Versions of one entry starting at
    the same time keep `version_frame`'s order (a stable sort), so the last of them is taken, as the join took it."""
    if table._version_keys is None:
        frame = table.version_frame
        entries, starts = frame.get_column("entry_id").to_numpy(), frame.get_column("from_us").to_numpy()
        order = np.lexsort((starts, entries))  # stable: ties keep the frame's order
        distinct = np.unique(starts)
        span = len(distinct) + 1
        keys = entries[order] * span + np.searchsorted(distinct, starts[order], side="right")
        table._version_keys = (order, entries[order], keys, distinct)
    order, entries, keys, distinct = table._version_keys
    if not len(keys):  # a book without versions: nothing in force
        return table.version_frame.drop("entry_id").gather(pl.Series([None] * len(ts_us), dtype=pl.get_index_type()))
    span = len(distinct) + 1
    ids = entry_id.fill_null(-1).to_numpy()
    wanted = ids * span + np.searchsorted(distinct, ts_us.fill_null(0).to_numpy(), side="right")
    at = np.maximum(np.searchsorted(keys, wanted, side="right") - 1, 0)  # the last key <= the row's (or the first)
    found = (ids >= 0) & (entries[at] == ids) & (keys[at] <= wanted)
    if ts_us.null_count():
        found &= ts_us.is_not_null().to_numpy()
    rows = pl.Series("_v", order[at], dtype=pl.get_index_type())
    if not found.all():
        rows = rows.scatter(np.flatnonzero(~found), None)
    return table.version_frame.drop("entry_id").gather(rows)  # a null row where none is in force


def price_frame(table: PriceTable, frame: pl.DataFrame, zero: frozenset[str] = frozenset()) -> pl.DataFrame:
    """Add to `frame` (columns provider, model, org, ts_us, batch, service_tier, status_ok, input_tokens, t_<part>):
    outcome (PRICED/UNPRICED/FALLBACK), vid, sid, reason_code, line_<part> and line_request (pico, null when the
    breakdown has no such line), cost_pico and has_lines.

    Two queries per chunk in the common case (fuse24; there were ~30): the keys looked up, and the prices and
    lines; between them the versions in force, by a binary search (`version_rows`; the third query until inproc28). Keys the table's lookups lack (a new model, service tier, org or price set: the first chunks,
    rarely later) are answered in Python once and the query run again. `zero`: token parts (`t_<part>`) the caller
    knows to be 0 in every row (frame_price.write_frame: usage counts the traffic never sends), whose lines are not
    computed (null, as computed)."""
    keyed = _keyed(table, frame)
    while _learn_keys(table, frame, keyed):
        keyed = _keyed(table, frame)
    frame = frame.hstack(keyed.get_columns())
    versions = version_rows(table, frame.get_column("ts_us"), frame.get_column("entry_id"))
    joined = frame.with_row_index("_row").hstack(versions.get_columns())
    priced = _priced(table, joined, zero)
    while _learn_sets(table, joined, priced):
        priced = _priced(table, joined, zero)
    return joined.hstack(priced.get_columns())


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
