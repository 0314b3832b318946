"""The loader's in-process filter of the dedupe keys (warehouse/stored_ids.py, issue 14, load24): ids it rules out are
not looked up in RocksDB, and nothing is stored twice: not after keys written outside the loader's insert (raw SQL,
a heal), not through a second handle of the process, not after a failed insert, not under another ts."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from warehouse import stored_ids


def _ids(prefix: str, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = "abcdef0123456789-_ÄΩ✓ "
    return [f"{prefix}{i}-" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for i in range(count)]


def test_the_filter_holds_every_id_added_across_layers_and_rules_out_most_others(monkeypatch):
    monkeypatch.setattr(stored_ids, "MIN_CAPACITY", 1000)
    id_filter = stored_ids.StoredIdFilter(1000)
    added = _ids("in-", 9000, 1)
    for start in range(0, len(added), 700):  # windows; the first layer fills at 1,000 and two more are added
        id_filter.add(pa.array(added[start:start + 700]))
    assert len(id_filter._layers) == 4 and id_filter.count == 9000
    assert id_filter.may_hold(pa.chunked_array([added[:4000], added[4000:]])).all()  # no false negative
    assert id_filter.may_hold(pa.array(added, pa.binary())).all()  # a server may return String as binary
    others = id_filter.may_hold(pa.array(_ids("out-", 20000, 2)))
    # false positives (looked up in RocksDB, never wrongly skipped): ~1-1.5 % per full layer, and they add up over
    # layers (here four; a loader's filter is built with a quarter of room and rarely grows)
    assert others.mean() < 0.02 * len(id_filter._layers)
    one_layer = stored_ids.StoredIdFilter(9000)
    one_layer.add(pa.array(added))
    assert one_layer.may_hold(pa.array(_ids("out-", 20000, 2))).mean() < 0.02


def _sent_to_lookup(wh, monkeypatch) -> list[int]:
    """Sizes of the id lists the lookup sends to RocksDB (through the `_event_ids` Memory table)."""
    sent: list[int] = []
    real = wh.backend.insert_arrow

    def counting(table_name, table, *args, **kwargs):
        if table_name.endswith("_event_ids"):
            sent.append(table.num_rows)
        return real(table_name, table, *args, **kwargs)

    monkeypatch.setattr(wh.backend, "insert_arrow", counting)
    return sent


def test_only_ids_the_filter_cannot_rule_out_are_looked_up(wh, org, make_event, monkeypatch):
    stored = [make_event(f"{org}-s{i}", org) for i in range(300)]
    assert wh.insert_priced(stored) == 300
    sent = _sent_to_lookup(wh, monkeypatch)
    new = [make_event(f"{org}-n{i}", org) for i in range(3000)]
    assert wh.insert_priced(new + stored) == 3000  # the stored copies are refused, as before
    # every stored id is looked up (the filter holds it), and of the new ones only its few false positives
    assert 300 <= sum(sent) <= 300 + 0.05 * 3000, sent
    sent.clear()
    assert wh.insert_priced([make_event(f"{org}-m{i}", org) for i in range(2000)]) == 2000
    assert sum(sent) <= 0.05 * 2000, sent


def _copy_through_sql(wh, event_id: str, new_id: str) -> None:
    wh.backend.command("INSERT INTO priced_events (event_id, ts, org, team, cost_usd) SELECT {new:String}, ts, org,"
                       " team, cost_usd FROM priced_events WHERE event_id = {old:String}",
                       {"new": new_id, "old": event_id})


def test_keys_written_outside_the_loaders_insert_are_never_missed(wh, org, make_event):
    assert wh.insert_priced([make_event(f"{org}-0", org)]) == 1  # the filter exists now
    _copy_through_sql(wh, f"{org}-0", f"{org}-sql")  # a writer's raw SQL: its view writes the key
    wh.backend.command("INSERT INTO priced_event_ids (event_id, ts) SELECT {id:String}, now64(3)",
                       {"id": f"{org}-healed"})  # as heal_pending_hours writes keys of raw rows
    assert wh.insert_priced([make_event(f"{org}-sql", org), make_event(f"{org}-healed", org),
                             make_event(f"{org}-new", org)]) == 1
    assert wh.query("SELECT count() AS n FROM priced_events WHERE event_id = {id:String}",
                    {"id": f"{org}-sql"}).to_dicts() == [{"n": 1}]


def test_a_second_handle_of_the_process_shares_the_filter(wh, warehouse_settings, org, make_event):
    from warehouse import open_warehouse

    assert wh.insert_priced([make_event(f"{org}-0", org)]) == 1
    other = open_warehouse(warehouse_settings, writer=True)  # e.g. the endpoint's re-pricer, `dedup reapply`
    try:
        assert other.backend is wh.backend
        assert other.insert_priced([make_event(f"{org}-1", org)]) == 1
    finally:
        other.close()
    assert wh.insert_priced([make_event(f"{org}-1", org), make_event(f"{org}-0", org)]) == 0


def test_a_failed_insert_leaves_its_ids_in_the_filter(wh, org, make_event, monkeypatch):
    assert wh.insert_priced([make_event(f"{org}-0", org)]) == 1
    id_filter = wh.backend.stored_id_filter
    real = wh.backend.insert_arrow

    def stored_then_failed(table_name, table, *args, **kwargs):
        real(table_name, table, *args, **kwargs)
        if table_name == "priced_events":
            raise RuntimeError("killed after the rows were written")

    monkeypatch.setattr(wh.backend, "insert_arrow", stored_then_failed)
    with pytest.raises(RuntimeError):
        wh.insert_priced([make_event(f"{org}-1", org)])
    monkeypatch.setattr(wh.backend, "insert_arrow", real)
    assert wh.backend.stored_id_filter is id_filter  # kept, not rebuilt: its own insert's ids are in it
    assert wh.insert_priced([make_event(f"{org}-1", org)]) == 0


def test_event_id_alone_decides_whatever_the_ts_with_a_filter_built_at_start(wh, org, make_event):
    soon = (datetime.now(timezone.utc) + timedelta(hours=6)).isoformat()  # far-dated, within the contract's day
    events = [make_event(f"{org}-{i}", org, ts=ts) for i, ts in
              enumerate(["2020-01-01T00:00:00Z", "2025-03-01T10:15:30.250Z", soon])]
    assert wh.insert_priced(events) == 3
    wh.backend.stored_id_filter = None  # what a restarted loader has: built again from the keys
    assert wh.load_stored_ids() >= 3
    moved = [make_event(f"{org}-{i}", org, ts="2025-09-09T09:09:09Z") for i in range(3)]
    assert wh.insert_priced(moved) == 0
    raw = wh.query("SELECT count() AS n FROM priced_events WHERE org = {org:String}", {"org": org}).to_dicts()
    assert raw == [{"n": 3}]


def test_the_filter_costs_about_ten_bits_per_id():
    id_filter = stored_ids.StoredIdFilter(4_000_000)
    assert id_filter.nbytes <= 4_000_000 * 2 * stored_ids.BITS_PER_ID / 8  # rounded up to a power of two words
    assert id_filter.may_hold(pa.array(["x"])).dtype == np.bool_
