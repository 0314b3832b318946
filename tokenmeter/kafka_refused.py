"""A Kafka record batch refused by the inflation bound becomes one marker record, not a stopped reader (inflate28).

tokenmeter/kafka_inflate.py stops a gzip / lz4 / zstd batch at 64x its size. Raising from aiokafka's fetcher stops
the reader on that batch for good: aiokafka keeps the fetch position at the batch's first offset, so every retry
(and `tokenmeter up`'s restart of the worker) fetches the same batch again. Worse, the records of earlier batches in
the same fetch that `getmany` had already taken were dropped with the exception while the position had moved past
them.

So the fetcher's batches are wrapped (`install`): a compressed batch that raises InflateRefused while it is decoded
yields one marker record instead of its records. Its offset is the batch's LAST offset (from the header), so
aiokafka's own bookkeeping (`next_fetch_offset = record.offset + 1`, then the batch's `next_offset`) moves the fetch
position past the batch exactly as after a good one, and a reader committing "one past the last record" commits
past it. The marker has no key and no value (None) and one header, HEADER, with what the dead letter reports: first
and last offset, codec, compressed size, bound, reason. No payload bytes: they may hold secrets, and compressed
they cannot be redacted.

Each reader turns a marker into a dead letter (`dead_letter`) through its own dead-letter path, so the letter is
acknowledged before the offsets past it are committed: the commit loop (tokenmeter/commitloop.py) for its roles,
the worker (streams/worker.py), the collectors' Kafka bridge (collectors/kafka_bridge.py). The batch itself stays
on the broker until retention: `tokenmeter` readers never inflate it, an operator inspects it with the offsets
(docs/security.md).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from tokenmeter import deadletters
from tokenmeter.kafka_inflate import MAX_INFLATE_RATIO, InflateRefused

log = logging.getLogger("tokenmeter.kafka_refused")

HEADER = "tokenmeter-refused-batch"
_CODECS = {1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
_BOUNDED_CODECS = (1, 3, 4)  # only these decoders refuse (kafka_inflate); other batches are not wrapped


class _Marker:
    """Stands in for a refused batch's records where aiokafka's fetcher reads a record (`_consumer_record`)."""

    key = value = checksum = None

    def __init__(self, batch: Any, refused: InflateRefused):
        self.offset = batch.next_offset - 1
        self.timestamp = getattr(batch, "max_timestamp", -1)
        self.timestamp_type = getattr(batch, "timestamp_type", 0)
        about = {"first_offset": batch.base_offset, "last_offset": self.offset,
                 "codec": _CODECS.get(batch.compression_type, refused.codec),
                 "compressed_bytes": refused.compressed_bytes, "bound_bytes": refused.bound,
                 "reason": f"compressed record batch refused: {refused}"}
        self.headers = ((HEADER, orjson.dumps(about)),)


class _GuardedBatch:
    """A compressed batch whose records are its own, or one marker if decoding it is refused. What aiokafka's
    fetcher reads of a batch is copied here once (cheaper than forwarding each read: ~3 us a batch with
    __getattr__, measured with 4,000 gzip batches of 10 records)."""

    __slots__ = ("_batch", "validate_crc", "is_control_batch", "is_transactional", "producer_id", "base_offset",
                 "next_offset")

    def __init__(self, batch: Any):
        self._batch = batch
        self.validate_crc = batch.validate_crc
        self.is_control_batch, self.is_transactional = batch.is_control_batch, batch.is_transactional
        self.producer_id, self.base_offset, self.next_offset = batch.producer_id, batch.base_offset, batch.next_offset

    def __iter__(self):
        try:  # a v2 batch decodes its whole records section in iter() and is its own iterator (C and Python)
            return iter(self._batch)
        except InflateRefused as refused:
            return iter((_Marker(self._batch, refused),))

    def __next__(self):  # aiokafka reads a control batch's first record with next(); never compressed, but exact
        return next(self._batch)


class _GuardedRecords:
    """aiokafka's MemoryRecords for one partition's fetched bytes, its compressed batches wrapped."""

    __slots__ = ("_next_batch", "has_next", "size_in_bytes")

    def __init__(self, buffer: Any):
        records = _MemoryRecords(buffer)
        self.has_next, self.size_in_bytes, self._next_batch = records.has_next, records.size_in_bytes, records.next_batch

    def next_batch(self) -> Any:
        batch = self._next_batch()
        if batch is None or getattr(batch, "compression_type", 0) not in _BOUNDED_CODECS:
            return batch  # uncompressed and snappy batches go through untouched (no cost on the common path). A
            # legacy (v0/v1) message set has no compression_type: it decodes lazily inside aiokafka's generator, so
            # refused it still raises (Kafka 2.1+ and tansu write v2 batches)
        return _GuardedBatch(batch)


_MemoryRecords: Any = None


def install() -> None:
    """Make aiokafka's fetcher read fetched bytes through _GuardedRecords (idempotent; kafka_inflate.install)."""
    global _MemoryRecords
    from aiokafka.consumer import fetcher

    if fetcher.MemoryRecords is not _GuardedRecords:
        _MemoryRecords = fetcher.MemoryRecords
        fetcher.MemoryRecords = _GuardedRecords


def refusal(record: Any) -> dict[str, Any] | None:
    """What a marker record reports about its refused batch; None for any other record."""
    if getattr(record, "value", None) is not None:
        return None
    for name, value in getattr(record, "headers", None) or ():
        if name == HEADER:
            return orjson.loads(value)
    return None


def letter_fields(record: Any) -> tuple[str, dict[str, Any]]:
    """A marker record's dead-letter reason and context (besides topic, partition and offset, which every reader
    already writes: the marker's offset is the batch's last), logged once as the one clear line of the refusal."""
    about = refusal(record)
    assert about is not None, "letter_fields() takes a marker record (check refusal() first)"
    log.error("%s[%s] offsets %s..%s: %s batch of %s bytes refused (inflates over %s bytes, %dx); dead-lettered, "
              "reading on after it", record.topic, record.partition, about["first_offset"], about["last_offset"],
              about["codec"], about["compressed_bytes"], about["bound_bytes"], MAX_INFLATE_RATIO)
    return about["reason"], {"first_offset": about["first_offset"], "last_offset": about["last_offset"],
                             "codec": about["codec"], "compressed_bytes": about["compressed_bytes"],
                             "bound_bytes": about["bound_bytes"], "max_inflate_ratio": MAX_INFLATE_RATIO}


def dead_letter(record: Any, stage: str) -> dict[str, Any]:
    """The dead letter of a marker record: where the batch is and why it was refused, no payload."""
    reason, context = letter_fields(record)
    return deadletters.dead_letter(reason, None, stage, topic=record.topic, partition=record.partition,
                                   offset=record.offset, **context)
