"""The fast murmur2 partitions every key exactly as aiokafka's (Kafka's) default partitioner: hold records and their
tombstones, and budget-spend messages, land on the partitions they always did."""

import os
import random

from aiokafka.partitioner import DefaultPartitioner as AiokafkaPartitioner
from aiokafka.partitioner import murmur2 as reference

from streams.budgets.murmur import DefaultPartitioner, murmur2, partition_for
from streams.budgets.readiness import spend_partition


def test_the_same_hash_as_aiokafka_for_every_length_and_byte():
    rng = random.Random(15)
    keys = [b"", b"a", b"ab", b"abc", b"abcd", bytes(range(256)), b"\xff" * 77,
            *(os.urandom(n) for n in range(0, 130)), *(bytes(rng.getrandbits(8) for _ in range(rng.randrange(300)))
                                                     for _ in range(2000))]
    keys += [f"bench-reserve|rsv_{os.urandom(16).hex()}_p{rng.randrange(12)}".encode() for _ in range(500)]
    for key in keys:
        assert murmur2(key) == reference(key), key


def test_the_same_partition_as_the_default_partitioner():
    ours, theirs = DefaultPartitioner(), AiokafkaPartitioner()
    for i in range(3000):
        key = f"team-{i}|rsv_{i:032x}_p{i % 7}".encode()
        for count in (1, 4, 12):
            everything = list(range(count))
            assert ours(key, everything, everything) == theirs(key, everything, everything) == \
                partition_for(key, count)
        assert spend_partition(f"budget-{i}", 4) == (reference(f"budget-{i}".encode()) & 0x7FFFFFFF) % 4
    assert ours(None, [0, 1, 2], [2]) == 2  # no key: an available partition, as aiokafka's
