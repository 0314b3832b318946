"""Kafka-compressed record batches through the embedded broker (issue 14, squeeze27).

The worker may compress its record batches (TOKENMETER_WORKER_COMPRESSION): every codec's batches of real priced
Arrow messages come back from tansu byte for byte, counted as the bench's reader counts them. A hostile batch that
inflates far beyond its size (gzip needs no extra library, so this was open before any compression setting) is
refused by the consumer instead of being inflated whole: a reader importing the loader's modules gets one marker
record in its place and reads on (tokenmeter/kafka_refused.py).
"""

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

import warehouse.loader  # noqa: F401  (a reader process: the loader's imports are what bound its decoders)
from app.bench import _micro_batches, synthetic_events
from kafka_support import create_topic
from streams.batch import RawRecord
from streams.batch_overlap import _price, chunks
from streams.columnar import process_batch_columnar
from streams.pricing import load_price_book
from tokenmeter.priced_wire import count_priced



def _priced_messages(n: int = 3000) -> list[tuple[bytes, bytes, list]]:
    values = _micro_batches(synthetic_events(n, seed=7))
    records = [RawRecord(v, "tokenmeter.usage", i % 4, i) for i, (_, v) in enumerate(values)]
    book = load_price_book()
    out = []
    for part in chunks(records):
        _, messages, _ = _price(process_batch_columnar, part, book, "arrow")
        out += [(key, value, [("tokenmeter-format", b"arrow")]) for key, value in messages]
    return out


async def _read_all(bootstrap: str, topic: str, expected: int) -> list:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=8_000_000)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        got: list = []
        for _ in range(40):
            batch = await consumer.getmany(tp, timeout_ms=500)
            got += batch.get(tp, [])
            if len(got) >= expected:
                break
        return got
    finally:
        await consumer.stop()


@pytest.mark.parametrize("codec", ["lz4", "zstd", "snappy", "gzip"])
def test_compressed_priced_batches_come_back_whole(kafka_bootstrap, codec):
    messages = _priced_messages()
    topic = f"test.compressed-priced.{codec}.{uuid.uuid4().hex[:8]}"

    async def scenario() -> list:
        await create_topic(kafka_bootstrap, topic, 1)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, compression_type=codec, linger_ms=5,
                                    max_request_size=4_000_000)
        await producer.start()
        try:
            await asyncio.gather(*[await producer.send(topic, value, key=key, partition=0, headers=headers)
                                   for key, value, headers in messages])
        finally:
            await producer.stop()
        return await _read_all(kafka_bootstrap, topic, len(messages))

    got = asyncio.run(scenario())
    assert [(r.key, r.value) for r in got] == [(key, value) for key, value, _ in messages]
    assert sum(count_priced(r.value, r.headers) for r in got) == 3000


@pytest.mark.parametrize("codec", ["gzip", "lz4", "zstd"])
def test_a_batch_inflating_beyond_the_bound_is_refused(kafka_bootstrap, codec):
    """16 MiB of zeros: gzip ~16 KB on the wire (1,000x), lz4 ~100 KB, zstd 534 bytes; aiokafka inflated each
    whole before any reader's guard saw a record. Refused, it raised in the consumer (squeeze27); since inflate28
    it comes as one marker record and the next record follows (tests/test_kafka_refused_batches.py)."""
    bomb = bytes(16 << 20)
    topic = f"test.inflate.{codec}.{uuid.uuid4().hex[:8]}"

    async def scenario() -> list:
        await create_topic(kafka_bootstrap, topic, 1)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, compression_type=codec,
                                    max_request_size=32 << 20)
        await producer.start()
        try:
            await producer.send_and_wait(topic, bomb, partition=0)
            await producer.send_and_wait(topic, b"after", partition=0)
        finally:
            await producer.stop()
        return await _read_all(kafka_bootstrap, topic, 2)

    got = asyncio.run(scenario())
    assert [len(r.value) if r.value is not None else None for r in got] == [None, 5], \
        f"inflated without a bound: {[len(r.value or b'') for r in got]} bytes"
    # not inflated: one marker record in its place (tokenmeter/kafka_refused.py), and the reader reads on
    [(name, about)] = got[0].headers
    assert name == "tokenmeter-refused-batch" and b"inflates beyond" in about and got[1].value == b"after"


@pytest.mark.parametrize("codec", ["lz4", "zstd", "gzip"])
def test_bounded_decoders_give_aiokafkas_output(codec):
    """Every path of the bounded decoders (a batch whose bound fits the thread's kept buffer, and one larger than it,
    which gets a mapping of its own) returns what aiokafka's decoder returns."""
    import os

    from aiokafka import codec as aiokafka_codec

    from tokenmeter import kafka_inflate

    encode, decode = getattr(aiokafka_codec, f"{codec}_encode"), getattr(kafka_inflate, f"{codec}_decode")
    for payload in (b"", b"x" * 1000, os.urandom(400_000) + bytes(1_000_000), _priced_messages(300)[0][1]):
        assert decode(encode(payload)) == getattr(aiokafka_codec, f"{codec}_decode")(encode(payload)) == payload


@pytest.mark.parametrize("codec", ["lz4", "zstd", "gzip"])
def test_the_bound_is_a_ratio_even_for_a_small_batch(codec):
    """No floor in bytes: 500 tiny batches in one fetch, each allowed a floor, would inflate a few KB to gigabytes
    (a floor of 8 MiB was tried after squeeze27 and removed for that). So a small batch of one record repeated
    30,000 times (~100-1,000x, no real gateway's log) is refused like any batch past 64x."""
    from aiokafka import codec as aiokafka_codec

    from tokenmeter import kafka_inflate

    payload = b'{"model":"gpt-4o","input_tokens":1}\n' * 30_000
    packed = getattr(aiokafka_codec, f"{codec}_encode")(payload)
    assert len(payload) > kafka_inflate.MAX_INFLATE_RATIO * len(packed)
    assert not hasattr(kafka_inflate, "MIN_INFLATE_BYTES")
    with pytest.raises(kafka_inflate.InflateRefused, match="inflates beyond"):
        getattr(kafka_inflate, f"{codec}_decode")(packed)


@pytest.mark.parametrize(("setting", "codec"), [(None, "snappy"), ("none", None)])
def test_the_workers_producer_takes_the_setting(tmp_path, setting, codec):
    from streams.worker import create_worker_app
    from tokenmeter.settings import Settings, free_port

    async def producer_codec():
        extra = {} if setting is None else {"worker_compression": setting}
        app = create_worker_app(Settings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:9", api_port=free_port(),
                                         **extra))
        return app.conf.producer_compression_type  # what Faust hands aiokafka's producer (compression_type)

    assert asyncio.run(producer_codec()) == codec


def test_an_aiokafka_without_the_decoders_is_refused_loudly(monkeypatch):
    """The bound replaces aiokafka's private decoder functions by name: an aiokafka that moved them would have left
    every batch inflating unbounded, with no sign. install() now says so (aiokafka is pinned exactly)."""
    import importlib

    from tokenmeter import kafka_inflate

    for name in kafka_inflate._RECORD_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "zstd_decode"):
            monkeypatch.delattr(module, "zstd_decode")
    with pytest.raises(RuntimeError, match="aiokafka's zstd_decode not found"):
        kafka_inflate.install()
