"""The loader's insert path after issue 14 (loader5): the anti-join is one lookup of the batch's ids and the new rows
go straight from Arrow into `priced_events` (no staging copy). It stores exactly what the staging protocol stored
(the reference below is that protocol as it was, 1efd783's `Warehouse._insert_new`): the same raw rows, rollup rows,
dedupe keys, crash markers and dead letters, on a randomised batch with ids stored before (some under another ts),
redelivered copies in the batch, hostile rows and rows of several months. Decoding a message pauses the GC and
restores it."""

from __future__ import annotations

import gc
import itertools
import random
from types import SimpleNamespace

import orjson
import pytest

from tests.warehouse.test_arrow_rows import _steady, hostile_batch, priced  # noqa: F401 (fixture)
from tests.warehouse.test_loader_columnar_equivalence import TABLES, _contents, _empty, _new_path
from tokenmeter import topics
from tokenmeter.commitloop import Batch
from warehouse import store
from warehouse.arrow_rows import build_batch
from warehouse.loader import _accept, _Batch, parse_record

pytestmark = pytest.mark.slow(seconds=30)  # rough seconds: longest files first (tests/suite_order.py)


def _staged_insert_new(self, table, anti_join: bool = True) -> int:
    """The staging protocol before loader5 (reference): staging table, anti-join copy to `<staging>_new`, count,
    marker, `INSERT ... SELECT` into priced_events, marker deleted."""
    staging, fresh = self._staging, f"{self._staging}_new"
    columns = store._COLUMN_LIST
    self.backend.command(f"TRUNCATE TABLE {staging}")
    self.backend.command(f"TRUNCATE TABLE {fresh}")
    self.backend.insert_arrow(staging, table)
    predicate = store._new_rows_predicate(staging) if anti_join else "1"
    self.backend.command(f"INSERT INTO {fresh} ({columns}) SELECT {columns} FROM {staging}"
                         f" WHERE {predicate} LIMIT 1 BY event_id")
    self.backend.command(f"TRUNCATE TABLE {staging}")
    new_rows = int(self.backend.query_arrow(f"SELECT count() AS n FROM {fresh}").column("n")[0].as_py())
    if new_rows:
        hours = f"SELECT DISTINCT toDateTime(toStartOfHour(ts), 'UTC') FROM {fresh}"
        self.backend.command(f"INSERT INTO rollup_insert_pending (hour) {hours}")
        self.backend.command(f"INSERT INTO priced_events ({columns}) SELECT {columns} FROM {fresh}")
        self.backend.command(f"DELETE FROM rollup_insert_pending WHERE hour IN ({hours})")
    self.backend.command(f"TRUNCATE TABLE {fresh}")
    return new_rows


def _randomised(priced, seed: int) -> tuple[list, list]:  # noqa: F811
    """(events stored before, the batch): worker events of every shape spread over three months, hostile variants,
    about a fifth of them stored before (half of those under another ts, the next day), redelivered copies."""
    rng = random.Random(seed)
    months = ("2026-01", "2026-03", "2026-05")  # 31 days: any day of the source ts stays valid
    plain = [e for e in priced if e.get("correlation") is None]
    events = [{**e, "event_id": f"{e['event_id']}-{seed}", "ts": rng.choice(months) + e["ts"][7:]}
              for e in rng.sample(plain, min(len(plain), 600))]
    items = hostile_batch(events)
    items = [i for i in items if not (isinstance(i, dict) and i.get("correlation") is not None)]
    stored_before = []
    for event in rng.sample(events, len(events) // 5):
        if rng.random() < 0.5:
            day = int(event["ts"][8:10])
            event = {**event, "ts": event["ts"][:8] + f"{day % 27 + 1:02d}" + event["ts"][10:]}
        # only what the loader stores was stored before (the corpus holds priced rows it refuses, e.g. a cost of
        # $1.5M, which insert_priced rejects outright): the batch still carries them
        # (and once per id: the corpus redelivers some events, and insert_priced counts the ids it stored)
        if build_batch([event])[0].num_rows and event["event_id"] not in {e["event_id"] for e in stored_before}:
            stored_before.append(event)
    items += rng.sample(items, 60)  # redelivered within the batch: the first copy wins
    rng.shuffle(items)
    return stored_before, items


def _load(wh, stored_before, items) -> tuple[dict, list]:
    _empty(wh)
    assert wh.insert_priced(stored_before) == len(stored_before)
    dead = _new_path(wh, items)
    return _contents(wh), sorted((d["offset"], _steady(d["reason"])) for d in dead)


@pytest.mark.parametrize("seed", [5, 14])
def test_direct_insert_stores_what_the_staging_protocol_stored(wh, priced, seed, monkeypatch):  # noqa: F811
    stored_before, items = _randomised(priced, seed)
    new, new_dead = _load(wh, stored_before, items)
    monkeypatch.setattr(store.Warehouse, "_insert_new", _staged_insert_new)
    old, old_dead = _load(wh, stored_before, items)
    assert len(old["priced_events"]) > 400 and len(old["spend_hourly"]) > 100 and len(old_dead) > 100
    for table in TABLES:
        assert new[table] == old[table], table
    assert new_dead == old_dead
    assert old["rollup_insert_pending"] == []


def test_a_batch_of_only_stored_ids_writes_nothing(wh, priced):  # noqa: F811
    # the first 50 storable events: stop at the 50th (a build per event over all ~5,000 took ~11 CPU-s)
    storable = (e for e in priced if e.get("correlation") is None and build_batch([e])[0].num_rows)
    events = list(itertools.islice(storable, 50))
    assert len(events) == 50
    _empty(wh)
    assert wh.insert_priced(events) == len({e["event_id"] for e in events})
    before = _contents(wh)
    assert wh.insert_priced(list(reversed(events))) == 0
    assert _contents(wh) == before


def test_decoding_pauses_the_gc_and_restores_it(priced):  # noqa: F811
    record = SimpleNamespace(topic=topics.PRICED, partition=0, offset=0, value=orjson.dumps(priced[:3]))
    bad = SimpleNamespace(topic=topics.ALERTS, partition=0, offset=1, value=b"{not json")
    broken = SimpleNamespace(topic=topics.PRICED, partition=0, offset=2, value=b"[1,")
    batch = _Batch()
    assert gc.isenabled()
    parse_record(record, batch)
    parse_record(bad, batch)
    parse_record(broken, batch)
    assert gc.isenabled()
    window = Batch(state=_Batch())
    assert _accept(window, [record, bad, broken, record]) == 6  # a fetch: the GC paused over all its records
    assert gc.isenabled() and len(window.state.dead) == 2
    assert len(batch.items) == 3 and len(batch.dead) == 2
    gc.disable()
    try:
        parse_record(record, batch)
        _accept(window, [record])
        assert not gc.isenabled()  # a caller's pause is left as it was
    finally:
        gc.enable()
