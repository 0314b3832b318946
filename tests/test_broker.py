import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tokenmeter import topics


def test_broker_has_topics_and_round_trips(kafka_bootstrap):
    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topics.DEADLETTER, b'{"probe": 1}', key=b"k")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topics.DEADLETTER, bootstrap_servers=kafka_bootstrap,
                                    auto_offset_reset="earliest", group_id="probe")
        await consumer.start()
        try:
            listed = await consumer.topics()
            batch = await consumer.getmany(timeout_ms=5000)
        finally:
            await consumer.stop()
        return listed, [m.value for msgs in batch.values() for m in msgs]

    listed, values = asyncio.run(run())
    assert {s.name for s in topics.topic_specs()} <= listed
    assert b'{"probe": 1}' in values
