"""The bridge's pending records per source partition (collectors/pending_records.py), without a broker: the
single-process file of earlier versions is migrated, a partition's record is only written by its lock holder, and a
member given a partition waits while another (a restarted member, a slow previous owner) still holds it."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from collectors.pending_records import PendingRecords, lowest

POSITIONS = {"tokenmeter.usage": {0: 40, 1: 7}, "tokenmeter.deadletter": {0: 3}}


def test_the_single_process_state_file_is_split_per_partition_and_read_back(tmp_path):
    legacy = tmp_path / "group.topic.json"
    legacy.write_bytes(orjson.dumps({"ranges": [{"topic": "kong", "partition": 0, "start": 10, "end": 15},
                                                {"topic": "kong", "partition": 2, "start": 4, "end": 9}],
                                     "positions": POSITIONS}, option=orjson.OPT_NON_STR_KEYS))
    records = PendingRecords(legacy)
    records.migrate_legacy()
    assert not legacy.exists()

    async def take() -> tuple:
        return await records.take({("kong", 0), ("kong", 1), ("kong", 2)})

    ranges, positions = asyncio.run(take())
    assert ranges == {("kong", 0): (10, 15), ("kong", 2): (4, 9)}
    assert positions[("kong", 0)] == positions[("kong", 2)] == POSITIONS
    records.release_all()


def test_a_partition_is_written_by_its_holder_only_and_taken_after_it_lets_go(tmp_path):
    state = tmp_path / "state.json"
    first, second = PendingRecords(state), PendingRecords(state)

    async def scenario() -> list[str]:
        order = []
        await first.take({("kong", 0)})
        first.save({("kong", 0): (0, 5)}, POSITIONS)
        with pytest.raises(RuntimeError):  # not held: a second member must not overwrite the holder's record
            second.save({("kong", 0): (5, 9)}, POSITIONS)
        waiting = asyncio.create_task(second.take({("kong", 0)}))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # the holder is still finishing its batch
        order.append("released")
        first.release({("kong", 0)})
        ranges, _ = await asyncio.wait_for(waiting, 5)
        order.append(f"taken {ranges}")
        return order

    assert asyncio.run(scenario()) == ["released", "taken {('kong', 0): (0, 5)}"]
    second.release_all()


def test_several_batches_in_doubt_are_read_back_from_the_lowest_positions():
    assert lowest([{"u": {0: 40, 1: 7}}, {"u": {0: 35, 1: 9}, "d": {0: 2}}]) == {"u": {0: 35, 1: 7}, "d": {0: 2}}


def test_a_batch_of_several_partitions_is_recorded_for_each(tmp_path):
    records, reader = PendingRecords(tmp_path / "state.json"), PendingRecords(tmp_path / "state.json")

    async def scenario() -> tuple:
        await records.take({("kong", 0), ("kong", 3)})
        records.save({("kong", 0): (5, 9), ("kong", 3): (7, 12)}, POSITIONS)
        records.release_all()
        return await reader.take({("kong", 0), ("kong", 3)})

    ranges, positions = asyncio.run(scenario())
    assert ranges == {("kong", 0): (5, 9), ("kong", 3): (7, 12)} and positions[("kong", 3)] == POSITIONS
    assert not list((tmp_path / "state.pending").glob("*.tmp"))
    reader.release_all()
