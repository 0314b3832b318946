"""A bound on how far one Kafka record batch may inflate when a consumer decompresses it (issue 14, squeeze27).

aiokafka decompresses every compressed record batch it fetches whole, whatever codec the batch declares and however
large it inflates (aiokafka/codec.py): a producer of any topic we read can send a batch of a few KB that a consumer
inflates to gigabytes before any of our own guards (priced_arrow's declared sizes, dead letters) sees a record.
gzip, in the standard library, did that at ~1,000x; cramjam (a dependency since the worker sends snappy) adds lz4
(~160x) and zstd (~31,000x: 16 MiB of zeros in 534 bytes). Measured legitimate ratios are far below the bound: collectors' usage
micro-batches 4-9x, the worker's Arrow priced messages 5-12x (docs/rounds/benchmarks.md, squeeze27).

So each batch may inflate to at most MAX_INFLATE_RATIO times its compressed size, and the decoders stop at that
bound instead of checking afterwards: the memory a fetch can cost is bounded by the ratio times the fetch's bytes.
A refused batch does not stop its reader (inflate28): aiokafka's fetcher gets it as one marker record in its place
(tokenmeter/kafka_refused.py), which every reader turns into a dead letter before committing past it. snappy needs
no bound: its format cannot exceed ~22x.
"""

from __future__ import annotations

import importlib
import mmap
import threading
import zlib

# Legitimate batches measured at 4-12x (above). A ratio, with no floor in bytes: aiokafka yields a fetch's records
# lazily, but one `getmany` of 500 records may take them from 500 tiny batches of ~100 bytes, so a floor of F bytes a
# batch would let one fetch of ~50 KB inflate to 500 x F (an 8 MiB floor: 4 GB). The price: a small batch of one
# record repeated hundreds of times (no real gateway's log) is refused (tests/test_kafka_compression.py).
MAX_INFLATE_RATIO = 64

# aiokafka's record modules (C and pure Python) look the codec functions up as module globals on every batch.
_RECORD_MODULES = ("aiokafka.record._crecords.default_records", "aiokafka.record._crecords.legacy_records",
                   "aiokafka.record.default_records", "aiokafka.record.legacy_records")


class InflateRefused(ValueError):
    """A compressed record batch that would inflate beyond MAX_INFLATE_RATIO times its size, or that is corrupt.
    Carries what its dead letter reports (tokenmeter/kafka_refused.py): codec, compressed size, bound."""

    def __init__(self, message: str, codec: str, payload: bytes | bytearray | memoryview):
        super().__init__(message)
        self.codec, self.compressed_bytes, self.bound = codec, len(payload), _limit(payload)


def _limit(payload: bytes | bytearray | memoryview) -> int:
    return MAX_INFLATE_RATIO * len(payload)


def gzip_decode(payload: bytes | bytearray | memoryview) -> bytes:
    """aiokafka's gzip_decode (every gzip member, in order), stopping at the bound."""
    left, data, out = _limit(payload), bytes(payload), []
    while data:
        inflater = zlib.decompressobj(wbits=31)  # 16 + MAX_WBITS: one gzip member
        try:
            chunk = inflater.decompress(data, left + 1)
        except zlib.error as exc:
            raise InflateRefused(f"gzip batch is corrupt: {exc}", "gzip", payload) from exc
        if len(chunk) > left or inflater.unconsumed_tail:
            raise InflateRefused(f"gzip batch of {len(payload)} bytes inflates beyond {_limit(payload)} bytes "
                                 f"({MAX_INFLATE_RATIO}x)", "gzip", payload)
        if not inflater.eof:
            raise InflateRefused("gzip batch is truncated", "gzip", payload)
        out.append(chunk)
        left -= len(chunk)
        data = inflater.unused_data
    return b"".join(out)


def _into(codec: str, payload: bytes | bytearray | memoryview) -> bytes:
    """cramjam's frame decoder writing into a buffer of the bound; it refuses to write past its end."""
    import cramjam

    limit = max(_limit(payload), mmap.PAGESIZE)
    kept = limit <= _KEEP_BYTES
    buffer = _kept_buffer() if kept else mmap.mmap(-1, limit)
    try:
        with memoryview(buffer)[:limit] as window:
            size = getattr(cramjam, codec).decompress_into(bytes(payload), window)
            return bytes(window[:size])
    except cramjam.DecompressionError as exc:
        raise InflateRefused(f"{codec} batch of {len(payload)} bytes is corrupt or inflates beyond "
                             f"{_limit(payload)} bytes ({MAX_INFLATE_RATIO}x): {exc}", codec, payload) from exc
    finally:
        if not kept:
            buffer.close()


# One anonymous mapping per thread, reused: a fresh one per batch made lz4 and zstd decoding ~3x aiokafka's CPU
# (page faults on every batch's output: 47 against 16 ms for the bench's 37 MB of priced lz4 batches). Its pages
# are paid only as written, and stay with the thread (at most _KEEP_BYTES); a larger bound gets a mapping of its
# own, closed after the batch.
_KEEP_BYTES = 16 << 20
_buffers = threading.local()


def _kept_buffer() -> mmap.mmap:
    kept = getattr(_buffers, "map", None)
    if kept is None:
        kept = _buffers.map = mmap.mmap(-1, _KEEP_BYTES)
    return kept


def lz4_decode(payload: bytes | bytearray | memoryview) -> bytes:
    return _into("lz4", payload)


def zstd_decode(payload: bytes | bytearray | memoryview) -> bytes:
    return _into("zstd", payload)


_BOUNDED = {"gzip_decode": gzip_decode, "lz4_decode": lz4_decode, "zstd_decode": zstd_decode}


def install() -> None:
    """Replace aiokafka's unbounded decoders with the bounded ones, and let its fetcher step past a refused batch
    (tokenmeter/kafka_refused.py). Idempotent; every process that reads a topic imports tokenmeter.kafka_topics or
    tokenmeter.commitloop, which call this."""
    from tokenmeter import kafka_refused

    kafka_refused.install()
    replaced: set[str] = set()
    for name in _RECORD_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # the C extension is optional in aiokafka
            continue
        for function, bounded in _BOUNDED.items():
            if hasattr(module, function):
                setattr(module, function, bounded)
                replaced.add(function)
    if missing := sorted(set(_BOUNDED) - replaced):  # an aiokafka that moved them would inflate unbounded, silently
        raise RuntimeError(f"aiokafka's {', '.join(missing)} not found in {', '.join(_RECORD_MODULES)}: the inflation "
                           "bound (tokenmeter/kafka_inflate.py) cannot be installed; aiokafka is pinned in pyproject.toml")
