"""The batch form's shared shortcuts (collectors/encoded.py, speed round 4): each gives exactly what the general
code it stands in for gives, over random inputs and at the edges (the accepted time range, the exact-millisecond
limit, zero fractions). The whole readers are held to the per-entry parsers in test_collectors_batch_form.py and
test_collectors_equivalence.py."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from collectors.coerce import epoch_to_datetime
from collectors.encoded import EXACT_EPOCH_MS_LIMIT, epoch_micros_text, utc_text
from tokenmeter.events import EARLIEST_EVENT_TS, MAX_EVENT_FUTURE

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _edges_ms() -> list[int]:
    earliest = int((EARLIEST_EVENT_TS - _EPOCH) / timedelta(milliseconds=1))
    latest = int((datetime.now(timezone.utc) + MAX_EVENT_FUTURE - _EPOCH) / timedelta(milliseconds=1))
    return [10**11, earliest - 1, earliest, earliest + 1, earliest + 1000, latest - 5000, latest + 5000,
            EXACT_EPOCH_MS_LIMIT - 1, 1_787_113_201_000, 1_787_113_201_719]


def test_epoch_milliseconds_read_as_the_kong_and_apisix_parsers_read_them() -> None:
    rng = random.Random(14)
    now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
    samples = _edges_ms() + [rng.randrange(10**11, EXACT_EPOCH_MS_LIMIT) for _ in range(5000)] \
        + [rng.randrange(now_ms - 10**11, now_ms + 3 * 86_400_000) for _ in range(5000)]
    for ms in samples:
        assert epoch_micros_text(ms * 1000) == utc_text(epoch_to_datetime(ms, "started_at")), ms


def test_epoch_microseconds_read_as_the_otel_parser_reads_them() -> None:
    rng = random.Random(15)
    now_us = int(datetime.now(timezone.utc).timestamp() * 1e6)
    samples = [rng.randrange(0, 2**52) for _ in range(3000)] \
        + [rng.randrange(now_us - 10**14, now_us + 3 * 86_400 * 10**6) for _ in range(5000)] \
        + [ms * 1000 for ms in _edges_ms()] + [ms * 1000 + 1 for ms in _edges_ms()]
    for micros in samples:
        assert epoch_micros_text(micros) == utc_text(_EPOCH + timedelta(microseconds=micros)), micros


def test_a_whole_second_has_no_fraction_and_the_cache_stays_bounded() -> None:
    assert epoch_micros_text(1_787_113_201 * 10**6) == "2026-08-19T04:20:01Z"
    assert epoch_micros_text(1_787_113_201 * 10**6 + 719_000) == "2026-08-19T04:20:01.719000Z"
    from collectors import encoded
    for second in range(1_700_000_000, 1_700_000_000 + 5000):
        epoch_micros_text(second * 10**6)
    assert len(encoded._SECOND_TEXT) <= 4096
