"""`tokenmeter export --month M --archived NAME`: the file a close gave before `reopen` archived it. Before, an archived
close could be listed (`close --list`) and read by hand, but no command exported it again (reopen26's note)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from warehouse.archived_close import archived_close_view
from warehouse.backends import WarehouseError
from warehouse.export import export_month
from warehouse.month_close import close_month
from warehouse.month_reopen import reopen_history, reopen_month

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def closes(warehouse_settings):
    directory = Path(warehouse_settings.data_dir).resolve() / "closes"  # the CLI's
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_an_archived_close_exports_the_file_it_gave_byte_for_byte(warehouse_settings, wh, make_event, closes):
    """May closed and exported; a late May event; May re-opened and closed again. The archived close exports the
    first file exactly (FOCUS and CSV), the month's current books the restated one; the CLI says which it wrote."""
    wh.insert_priced([make_event("ar-a", "arch-org", team="a", cost="0.1", ts="2020-05-10T08:00:00Z"),
                      make_event("ar-b", "arch-org", team="b", cost="0.3", ts="2020-05-11T08:00:00Z")])
    first = close_month(wh, closes, "2020-05", closed_by="cfo")
    sent = {fmt: export_month(wh, "2020-05", fmt, ["team"], closes=closes) for fmt in ("focus", "csv")}
    wh.insert_priced([make_event("ar-late", "arch-org", team="a", cost="0.05", ts="2020-05-20T08:00:00Z")])
    [record] = reopen_month(closes, "2020-05", reopened_by="controller", reason="late invoice")
    second = close_month(wh, closes, "2020-05", closed_by="cfo")
    assert (first["total_usd"], second["total_usd"]) == ("0.400000000000", "0.450000000000")
    now = export_month(wh, "2020-05", "csv", ["team"], closes=closes)
    assert now != sent["csv"]

    name = record["archived"].rsplit("/", 1)[-1]
    for given in (record["archived"], "closes/" + record["archived"], name):
        with archived_close_view(closes, "2020-05", given) as (view, found):
            assert found["close"] == first
            assert {fmt: export_month(wh, "2020-05", fmt, ["team"], closes=view) for fmt in sent} == sent
    assert export_month(wh, "2020-05", "csv", ["team"], closes=closes) == now  # nothing in the closes changed

    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENMETER_DATA_DIR=str(warehouse_settings.data_dir))
    run = subprocess.run([sys.executable, "-m", "app", "export", "--month", "2020-05", "--format", "csv",
                          "--archived", name], env=env, capture_output=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout == sent["csv"]
    note = run.stderr.decode()
    assert f"exported 2020-05 as closed {first['closed_at']} by cfo (0.400000000000 USD)" in note, note
    assert "re-opened" in note and "late invoice" in note and "Not the month's current books" in note, note


def test_archived_close_names_and_changed_snapshots_are_refused(wh, make_event, closes):
    """Only a name `close --list` shows is opened (never a path from the command line), and a snapshot whose
    sha256 is not the one its close recorded is refused rather than exported."""
    wh.insert_priced([make_event("ar-t", "arch-org", team="a", cost="0.2", ts="2020-03-10T08:00:00Z")])
    close_month(wh, closes, "2020-03", closed_by="cfo")
    [record] = reopen_month(closes, "2020-03", reopened_by="controller", reason="restate")
    for hostile in ("../../etc", "/etc/passwd", "", ".reopened", "2020-03", record["archived"] + "/../.."):
        with pytest.raises(WarehouseError, match=r"no archived close .* of 2020-03; archived closes of 2020-03: "
                                                 + record["archived"]):
            with archived_close_view(closes, "2020-03", hostile):
                pass
    with pytest.raises(WarehouseError) as huge:
        with archived_close_view(closes, "2020-03", "x" * 1_000_000):
            pass
    assert len(str(huge.value)) < 400  # named, not echoed whole
    with pytest.raises(WarehouseError, match="is not YYYY-MM"):
        with archived_close_view(closes, "../2020-03", record["archived"]):
            pass
    with pytest.raises(WarehouseError, match="archived closes of 2020-04: none"):
        with archived_close_view(closes, "2020-04", record["archived"]):
            pass
    snapshot = closes / record["archived"] / "charges.parquet"
    snapshot.write_bytes(snapshot.read_bytes() + b"\0")
    with pytest.raises(WarehouseError, match=r"^charges.parquet of the archived close .* changed since the close "
                                             r"\(sha256 .*, its close.json recorded .*\): not exported"):
        with archived_close_view(closes, "2020-03", record["archived"]):
            pass
    assert [r["archived"] for r in reopen_history(closes)] == [record["archived"]]


def test_an_archived_close_whose_kept_finance_file_changed_is_refused_by_its_own_name(wh, make_event, closes,
                                                                                         tmp_path):
    """walk29: an archived close's kept cost-centers copy edited by hand was refused as "cost_centers.yaml, the
    cost-centers file 2020-05 was closed with, changed ...: re-open and close the month": that names the month's
    current close (whose copy was untouched) and advice an archived close cannot take. It names the archive now."""
    centers = tmp_path / "centers.yaml"
    centers.write_text("cost_centers:\n  - match: {team: a}\n    cost_center: CC-A\n    gl_account: \"6400\"\n"
                       "    owner: fin@example.com\n")
    wh.insert_priced([make_event("af-t", "arch-fin-org", team="a", cost="0.2", ts="2020-05-10T08:00:00Z")])
    close_month(wh, closes, "2020-05", closed_by="cfo", finance_files=(centers, None))
    [record] = reopen_month(closes, "2020-05", reopened_by="controller", reason="restate")
    close_month(wh, closes, "2020-05", closed_by="cfo", finance_files=(centers, None))
    kept = closes / record["archived"] / "cost_centers.yaml"
    kept.write_text(kept.read_text().replace("CC-A", "CC-EDITED"))
    with pytest.raises(WarehouseError, match=rf"^cost_centers.yaml of the archived close {record['archived']} changed "
                                             r"since the close \(sha256 .*\): not exported"):
        with archived_close_view(closes, "2020-05", record["archived"]) as (view, _):
            export_month(wh, "2020-05", "csv", ["team"], closes=view)
    assert b"CC-A" in export_month(wh, "2020-05", "csv", ["team"], closes=closes)  # the current close: untouched
