"""Batches of the equivalence corpus whose event times all have one of the two shapes collectors write, so that the
Arrow worker's numpy check of a chunk's times (`uniform_ts.py`) is taken, and its fall-backs too.

The main corpus mixes a dozen time forms in every batch (`Corpus._ts`), and `uniform_ts` takes a chunk only when
every text has one shape: on the main corpus it never ran (inproc34's note). A chunk is the frame of a batch's
collector-written micro-batches, so each batch here is made only of those (`Corpus.collector_batch`'s events,
without its twists), every time rewritten to one FORM chosen per batch.
"""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta, timezone
from typing import Iterator

from streams.batch import RawRecord

# form -> what uniform_ts does with a chunk of it
FORMS = {
    "zulu": "taken: 27 bytes, `...ffffffZ`, written as is",
    "zulu_some_whole": "taken: 27 bytes, a few `.000000` (pydantic drops the fraction: written per row)",
    "offset": "taken: 32 bytes, non-zero offsets, written as is",
    "zero_offset": "taken: 32 bytes, `+00:00` / `-00:00` only, written as `Z`",
    "mixed_offsets": "not taken: zero and non-zero offsets in one chunk (polars' expressions decide)",
    "mixed_lengths": "not taken: 27 and 32 bytes in one chunk",
}
_OFFSETS = ["+02:00", "-05:30", "+14:00", "+05:45", "-08:00", "+23:59", "-23:59", "+01:00"]
_TS = re.compile(rb'"ts":"[^"]*"')
_START = datetime(2025, 1, 1, tzinfo=timezone.utc)


def _text(rng: random.Random, form: str) -> str:
    moment = _START + timedelta(seconds=rng.randint(0, 600 * 86400))  # 2025-01 .. 2026-08: inside the accepted range
    fraction = rng.randint(1, 999_999)
    if form == "zulu_some_whole" and rng.random() < 0.05:
        fraction = 0
    base = f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction:06d}"
    if form == "mixed_lengths":
        form = rng.choice(["zulu", "offset"])
    if form in ("zulu", "zulu_some_whole"):
        return base + "Z"
    if form == "zero_offset":
        return base + rng.choice(["+00:00", "-00:00"])
    if form == "mixed_offsets":
        return base + rng.choice(["+00:00", *_OFFSETS])
    return base + rng.choice(_OFFSETS)


def uniform_records(corpus, n_events: int, form: str, seed: int, first_offset: int = 1,
                    partitions: int = 4) -> Iterator[RawRecord]:
    """Records of about `n_events` collector-written events (micro-batches of 1-500), every time of the `form`."""
    rng = random.Random(seed)
    produced, offset = 0, first_offset
    while produced < n_events:
        size = min(rng.randint(1, 500), n_events - produced)
        value, size = corpus.collector_batch(size, twists=False)
        value = _TS.sub(lambda _: b'"ts":"' + _text(rng, form).encode() + b'"', value)
        produced += size
        yield RawRecord(value, "tokenmeter.usage", rng.randrange(partitions), offset)
        offset += 1


__all__ = ["FORMS", "uniform_records"]
