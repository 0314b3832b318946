"""Old and new batch paths side by side on a randomised corpus: byte-identical or a report of the first
differences. `python -m streams.columnar.equivalence --events 1000000` (tests run it on ~20,000 events).
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

from .corpus import Corpus
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


def compare_batch(records: list[RawRecord], book: PriceBook) -> list[str]:
    """Differences between the two paths on one batch (empty when byte-identical)."""
    return compare(records, book)[0]


def compare(records: list[RawRecord], book: PriceBook) -> tuple[list[str], BatchResult]:
    """(differences between the two paths on one batch, the columnar result)."""
    old = process_batch(records, book)
    new = process_batch_columnar(records, book, now=_priced_at(old))
    a, b = fingerprint(old), fingerprint(new)
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


def run(events: int, book: PriceBook, batch_events: int = 10_000, seed: int = 14) -> dict[str, Any]:
    corpus = Corpus(book, seed)
    totals = {"events": 0, "batches": 0, "priced": 0, "unpriced": 0, "deadletters": 0, "mismatched_batches": 0,
              "problems": []}
    batch: list[RawRecord] = []
    size = 0

    def flush() -> None:
        nonlocal batch, size
        problems, result = compare(batch, book)
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

    for record in corpus.records(events):
        batch.append(record)
        size += record.value.count(b'"event_id"') if record.value else 1
        if size >= batch_events:
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
    args = parser.parse_args(argv)
    from streams.pricing import load_price_book

    book = load_price_book(overrides_path=args.overrides)
    started = time.perf_counter()
    totals = run(args.events, book, args.batch_events, args.seed)
    totals["seconds"] = round(time.perf_counter() - started, 1)
    print(orjson.dumps(totals, option=orjson.OPT_INDENT_2).decode())
    if totals["mismatched_batches"]:
        print("NOT EQUIVALENT", file=sys.stderr)
        return 1
    print(f"byte-identical: {totals['events']} events in {totals['batches']} batches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
