"""The loader's insert into priced_events runs with `optimize_on_insert=0` (issue 14, loader6: the engines' merge pass
over each inserted block found nothing to fold and cost ~30 % of the insert's CPU). It stores exactly what the insert
with the default stored: the same raw rows, rollup rows, dedupe keys, markers and dead letters, merged or not, on a
randomised batch (ids stored before, redelivered copies, hostile rows, several months)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from tests.warehouse.test_arrow_rows import _steady, priced  # noqa: F401 (fixture)
from tests.warehouse.test_loader_columnar_equivalence import TABLES, _contents, _empty, _new_path
from tests.warehouse.test_loader_insert_path import _randomised
from warehouse import store

pytestmark = pytest.mark.slow(seconds=22)  # rough seconds: longest files first (tests/suite_order.py)


def _unmerged(wh) -> dict[str, list]:
    """Every table's rows as stored, without OPTIMIZE (sorted, load-time columns left out)."""
    contents = {}
    for table in TABLES:
        columns = [row["name"] for row in wh.backend.query_arrow(
            "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {t:String}"
            " AND default_expression NOT LIKE '%now%' ORDER BY position", {"t": table}).to_pylist()]
        listed = ", ".join(f"`{c}`" for c in columns)
        contents[table] = sorted(map(repr, wh.backend.query_arrow(f"SELECT {listed} FROM {table}").to_pylist()))
    return contents


def test_insert_settings_reach_the_engine(wh):
    """A block with two rows of one key: folded at insert by default, kept (until a merge) with the setting off."""
    wh.backend.command("DROP TABLE IF EXISTS insert_settings_probe")
    wh.backend.command("CREATE TABLE insert_settings_probe (k String, n Int64) ENGINE = SummingMergeTree ORDER BY k")
    try:
        block = pa.table({"k": ["a", "a"], "n": pa.array([1, 2], pa.int64())})
        wh.backend.insert_arrow("insert_settings_probe", block)
        wh.backend.insert_arrow("insert_settings_probe", block, settings=store.PRICED_INSERT_SETTINGS)
        rows = wh.backend.query_arrow("SELECT n FROM insert_settings_probe ORDER BY n").column("n").to_pylist()
        assert sorted(rows) == [1, 2, 3]  # folded (3) by the default insert, 1 and 2 as sent by the other
    finally:
        wh.backend.command("DROP TABLE insert_settings_probe")
    assert store.PRICED_INSERT_SETTINGS == {"optimize_on_insert": 0}


@pytest.mark.parametrize("seed", [6, 23])
def test_loader_insert_without_the_merge_pass_stores_the_same(wh, priced, seed, monkeypatch):  # noqa: F811
    stored_before, items = _randomised(priced, seed)
    results = {}
    for name, settings in (("default", {}), ("loader6", store.PRICED_INSERT_SETTINGS)):
        monkeypatch.setattr(store, "PRICED_INSERT_SETTINGS", settings)
        _empty(wh)
        dead = _new_path(wh, items)  # one insert into empty tables: nothing for a merge to fold yet
        unmerged = _unmerged(wh)
        _empty(wh)
        assert wh.insert_priced(stored_before) == len(stored_before)
        dead_after = _new_path(wh, items)
        results[name] = (unmerged, _contents(wh), sorted((d["offset"], _steady(d["reason"])) for d in dead),
                         sorted((d["offset"], _steady(d["reason"])) for d in dead_after))
    old, new = results["default"], results["loader6"]
    assert len(old[1]["priced_events"]) > 400 and len(old[1]["spend_hourly_tags"]) > 100 and len(old[3]) > 100
    for table in TABLES:
        assert new[0][table] == old[0][table], f"unmerged {table}"
        assert new[1][table] == old[1][table], f"merged {table}"
    assert new[2] == old[2] and new[3] == old[3]
