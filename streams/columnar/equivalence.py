"""Old and new batch paths side by side on a randomised corpus: byte-identical or a report of the first
differences. `python -m streams.columnar.equivalence --events 1000000` (tests run it on ~20,000 events).

`--priced-format arrow` is the worker's default configuration: pyarrow loaded (event times parsed by Arrow's cast,
tokenmeter/iso_times.py, and checked in numpy, uniform_ts.py) and the priced messages written as Arrow IPC, which
are compared too: by their keys, schemas and rows (the two paths build the same table through different buffers,
so the IPC bytes differ). A quarter of its batches are made of collector-written micro-batches whose times all
have one shape (corpus_times.py), since the main corpus mixes forms in every batch and never reaches that check.
`--priced-format json` (a JSON worker: pyarrow never imported) compares the JSON text only; run it in a process
of its own, as pyarrow once imported stays loaded.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import datetime
from typing import Any

import orjson

from streams.batch import BatchResult, RawRecord, process_batch
from streams.pricing import PriceBook
from tokenmeter.priced_wire import ARROW, JSON

from .corpus import Corpus
from .corpus_times import FORMS, uniform_records
from .pipeline import process_batch_columnar


# A future event's reason quotes the validator's clock ("latest accepted now: <now + MAX_EVENT_FUTURE>;"), read
# per event by tokenmeter.events.check_event_time: two runs of the same path a second apart differ there too.
_CLOCK_IN_REASON = re.compile(r"latest accepted now: [^;]*;")


def _letter(letter: dict[str, Any]) -> bytes:
    kept = {k: v for k, v in letter.items() if k != "at"}
    kept["reason"] = _CLOCK_IN_REASON.sub("latest accepted now: <clock>;", kept["reason"])
    return orjson.dumps(kept, default=str)


def fingerprint(result: BatchResult) -> dict[str, Any]:
    """Everything a batch result carries, as bytes. Dead letters drop the wall clock: `at` (when each was made) and
    the validator's clock quoted in a future event's reason."""
    return {
        "priced_messages": list(result.priced_messages()),
        "deadletters": [_letter(letter) for letter in result.deadletters],
        "origins": [orjson.dumps([p, o, e]) for p, o, e in result.origins],
        "counts": (result.events_in, result.priced_count, result.unpriced_count, result.assumed_count),
    }


def _priced_at(result: BatchResult) -> datetime | None:
    for _, _, event in result.origins:
        return datetime.fromisoformat(event["priced_at"])
    return None


def arrow_rows(result: BatchResult) -> list[tuple[bytes, str, bytes]]:
    """The Arrow messages as (key, schema, rows as JSON): what a reader of the topic gets from each."""
    import pyarrow.ipc as ipc

    out = []
    for key, value in result.messages(ARROW):
        table = ipc.open_stream(value).read_all()
        out.append((key, table.schema.to_string(), orjson.dumps(table.to_pylist(), default=str)))
    return out


def compare_batch(records: list[RawRecord], book: PriceBook, priced_format: str = JSON) -> list[str]:
    """Differences between the two paths on one batch (empty when byte-identical)."""
    return compare(records, book, priced_format)[0]


def compare(records: list[RawRecord], book: PriceBook, priced_format: str = JSON) -> tuple[list[str], BatchResult]:
    """(differences between the two paths on one batch, the columnar result); with `priced_format` ARROW the new
    path is run as an Arrow worker runs it and the Arrow messages are compared as well."""
    old = process_batch(records, book)
    new = process_batch_columnar(records, book, now=_priced_at(old), priced_format=priced_format)
    a, b = fingerprint(old), fingerprint(new)
    if priced_format == ARROW:
        a["arrow_messages"], b["arrow_messages"] = arrow_rows(old), arrow_rows(new)
    problems = []
    for part in a:
        if a[part] != b[part]:
            if part == "priced_messages":  # compare event by event: one message holds up to 500
                a[part] = [orjson.dumps(x) for _, v in a[part] for x in orjson.loads(v)]
                b[part] = [orjson.dumps(x) for _, v in b[part] for x in orjson.loads(v)]
            if isinstance(a[part], list):
                mismatch = next((i for i, (x, y) in enumerate(zip(a[part], b[part])) if x != y), None)
                detail = (f"lengths {len(a[part])} vs {len(b[part])}" if mismatch is None
                          else f"first at {mismatch}:\n  old {a[part][mismatch][:1500]!r}\n  new {b[part][mismatch][:1500]!r}")
            else:
                detail = f"{a[part]} vs {b[part]}"
            problems.append(f"{part}: {detail}")
    return problems, new


def run(events: int, book: PriceBook, batch_events: int = 10_000, seed: int = 14,
        priced_format: str = JSON) -> dict[str, Any]:
    if priced_format == ARROW:
        import pyarrow  # noqa: F401 - as in an Arrow worker's process: the Arrow time paths are taken
    corpus = Corpus(book, seed)
    timed = Corpus(book, seed + 1)  # the uniform-time batches' own stream: the main corpus stays what it was
    totals = {"events": 0, "batches": 0, "uniform_time_batches": 0, "priced": 0, "unpriced": 0, "deadletters": 0,
              "mismatched_batches": 0, "problems": []}
    batch: list[RawRecord] = []
    size = 0

    def flush() -> None:
        nonlocal batch, size
        problems, result = compare(batch, book, priced_format)
        totals["batches"] += 1
        totals["events"] += result.events_in
        totals["priced"] += result.priced_count - result.unpriced_count
        totals["unpriced"] += result.unpriced_count
        totals["deadletters"] += len(result.deadletters)
        if problems:
            totals["mismatched_batches"] += 1
            if len(totals["problems"]) < 5:
                totals["problems"].extend(problems[:3])
        batch, size = [], 0

    forms = list(FORMS)
    for record in corpus.records(events):
        batch.append(record)
        size += record.value.count(b'"event_id"') if record.value else 1
        if size >= batch_events:
            flush()
            if priced_format == ARROW and totals["batches"] % 3 == 0:  # then one of uniform times: a quarter
                form = forms[totals["uniform_time_batches"] % len(forms)]
                batch = list(uniform_records(timed, batch_events, form, seed * 31 + totals["batches"]))
                totals["uniform_time_batches"] += 1
                flush()
    if batch:
        flush()
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--batch-events", type=int, default=10_000)
    parser.add_argument("--overrides", help="a price overrides file (negotiated rules) to price with")
    parser.add_argument("--priced-format", choices=[ARROW, JSON], default=ARROW,
                        help="arrow (the worker's default: pyarrow loaded, Arrow messages compared too) or json")
    args = parser.parse_args(argv)
    from streams.pricing import load_price_book

    book = load_price_book(overrides_path=args.overrides)
    started = time.perf_counter()
    totals = run(args.events, book, args.batch_events, args.seed, args.priced_format)
    totals["seconds"] = round(time.perf_counter() - started, 1)
    print(orjson.dumps(totals, option=orjson.OPT_INDENT_2).decode())
    if totals["mismatched_batches"]:
        print("NOT EQUIVALENT", file=sys.stderr)
        return 1
    print(f"byte-identical: {totals['events']} events in {totals['batches']} batches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
