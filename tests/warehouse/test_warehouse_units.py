"""Pieces testable without chDB or a server: report rendering, parameter text, the ClickHouse backend's
failure path (no modern ClickHouse server can run here), migration file parsing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import polars as pl
import pytest

from tokenmeter.settings import Settings, free_port
from warehouse import WarehouseError, open_warehouse, render_report
from warehouse.backends import ClickHouseBackend, _chdb_params, normalize_params, redact_url
from warehouse.queries import spend_sql
from warehouse.schema import event_to_row, load_migrations, split_statements


@pytest.fixture
def frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "team": ["search", ""],
            "events": [3, 1],
            "cost_usd": [Decimal("12.345678901234"), Decimal("0.000000000001")],
        },
        schema={"team": pl.String, "events": pl.UInt64, "cost_usd": pl.Decimal(38, 12)},
    )


def test_report_prints_money_exactly(frame):
    table = render_report(frame, "table")
    assert "12.345678901234" in table and "0.000000000001" in table and "(none)" in table
    assert table.splitlines()[0].split() == ["team", "events", "cost_usd"]
    rows = orjson.loads(render_report(frame, "json"))
    assert rows[0] == {"team": "search", "events": 3, "cost_usd": "12.345678901234"}
    csv = render_report(frame, "csv").splitlines()
    assert csv == ["team,events,cost_usd", "search,3,12.345678901234", ",1,0.000000000001"]
    assert "(no rows)" in render_report(frame.clear(), "table")
    with pytest.raises(ValueError, match="format"):
        render_report(frame, "xml")


def test_report_json_times_are_iso():
    df = pl.DataFrame({"bucket": [datetime(2025, 1, 1, tzinfo=timezone.utc)], "cost_usd": [Decimal("1.5")]})
    assert orjson.loads(render_report(df, "json")) == [{"bucket": "2025-01-01T00:00:00+00:00", "cost_usd": "1.5"}]


def test_parameter_text():
    moment = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert normalize_params({"t": moment, "n": 5, "b": True}) == {"t": "2025-03-01 10:00:00.123", "n": 5, "b": "1"}
    assert _chdb_params({"s": "a\\b\tc'd"}) == {"s": "a\\\\b\\tc\\'d"}


def test_clickhouse_backend_reports_unreachable_server_clearly():
    url = f"http://default:s3cret@127.0.0.1:{free_port()}/tokenmeter"
    with pytest.raises(WarehouseError, match="TOKENMETER_CLICKHOUSE_URL") as info:
        ClickHouseBackend(url, connect_timeout=2)
    assert "s3cret" not in str(info.value)
    with pytest.raises(WarehouseError, match="cannot connect to ClickHouse"):
        open_warehouse(Settings(clickhouse_url=url), writer=True)  # picks the server, never chDB
    assert redact_url("https://u:p@h:8443/db") == "https://u:***@h:8443/db"


def test_queries_bind_every_value():
    sql, params = spend_sql(["team"], None, None, {"team": ["a'b", "c"], "org": "solo"})
    assert "a'b" not in sql and "solo" not in sql
    assert params == {"f_team_0": "a'b", "f_team_1": "c", "f_org_0": "solo"}
    assert "FROM spend_daily" in sql  # no window: whole days
    hourly_sql, _ = spend_sql(["team"], datetime(2025, 1, 1, 7), None, None)
    assert "FROM spend_hourly" in hourly_sql
    raw_sql, _ = spend_sql(["route"], datetime(2025, 1, 1, 0, 30), None, None)
    assert "FROM priced_events" in raw_sql


def test_migration_files_parse():
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert all(m.statements for m in migrations)
    assert split_statements("-- c;\nCREATE A;\n\nCREATE B;") == ["CREATE A", "CREATE B"]


def test_event_row_flattening(make_event):
    row = event_to_row(make_event("e1", "o", route="/v1/chat"))
    assert row["org"] == "o" and row["route"] == "/v1/chat" and row["project"] == ""
    assert row["cost_usd"] == Decimal("0.000123000000") and row["tags"] == [("env", "test")]
    assert row["price_entry"] == "openai/gpt-4o" and row["catalog_version"] == "t1"
    assert row["ts"] == datetime(2025, 3, 1, 10, 15, 30, 250000, tzinfo=timezone.utc)


def test_report_table_says_unpriced_where_a_group_has_no_priced_call():
    """`tokenmeter report --group-by team,model` printed the demo's unpriced model at 0.000000000000, a cost of zero;
    its cost is unknown. A group with some priced calls keeps its exact cost; JSON and CSV keep the number."""
    df = pl.DataFrame({"model": ["gpt-4o", "acme-internal-llm-v2", "mixed"], "events": [3, 72, 5],
                       "unpriced_events": [0, 72, 2],
                       "cost_usd": [Decimal("1.500000000000"), Decimal("0E-12"), Decimal("0.250000000000")]},
                      schema_overrides={"cost_usd": pl.Decimal(38, 12)})
    lines = render_report(df, "table").splitlines()
    assert lines[3].split() == ["acme-internal-llm-v2", "72", "72", "unpriced"]
    assert lines[2].split()[-1] == "1.500000000000" and lines[4].split()[-1] == "0.250000000000"
    assert render_report(df, "csv").splitlines()[2] == "acme-internal-llm-v2,72,72,0.000000000000"
    assert orjson.loads(render_report(df, "json"))[1]["cost_usd"] == "0.000000000000"


def test_report_table_ends_with_an_exact_total_row():
    """`tokenmeter report` had no total: a finance reader added the groups by hand. The table now ends with the exact
    sum of each count, token and cost column (Decimal, 28 significant digits are not enough for 12 decimals on large
    totals); a total of unpriced calls only says unpriced; JSON and CSV stay the groups alone."""
    df = pl.DataFrame({"team": ["search", "ads", "labs"], "events": [3, 4, 2], "unpriced_events": [0, 1, 0],
                       "input_tokens": [10, 20, 30],
                       "cost_usd": [Decimal("99999999999999999.999999999999"), Decimal("0.000000000001"),
                                    Decimal("1.500000000000")]},
                      schema_overrides={"cost_usd": pl.Decimal(38, 12)})
    lines = render_report(df, "table", total=True).splitlines()
    assert lines[-1].split() == ["total", "9", "1", "60", "100000000000000001.500000000000"]
    assert set(lines[-2]) <= {"-", " "} and lines[1] == lines[-2]
    assert len(lines[-1]) == len(lines[2])  # aligned with the groups
    assert render_report(df, "table").splitlines()[-1].split()[0] == "labs"  # only when asked (other reports)
    assert render_report(df, "csv", total=True) == render_report(df, "csv")
    assert render_report(df, "json", total=True) == render_report(df, "json")
    assert "total" not in render_report(df.head(1), "table", total=True)  # one group is its own total

    unpriced = pl.DataFrame({"model": ["x", "y"], "events": [2, 3], "unpriced_events": [2, 3],
                             "cost_usd": [Decimal("0E-12"), Decimal("0E-12")]},
                            schema_overrides={"cost_usd": pl.Decimal(38, 12)})
    assert render_report(unpriced, "table", total=True).splitlines()[-1].split() == ["total", "5", "5", "unpriced"]


def test_redact_url_hides_a_password_holding_an_at_sign():
    assert redact_url("http://u:p@ss@h:8123/db") == "http://u:***@h:8123/db"  # walk32: `ss@h` was left
    assert redact_url("http://h:8123/db") == "http://h:8123/db"


def test_an_unreachable_server_is_one_clear_error_without_the_drivers_warning(tmp_path):
    """ops34: `tokenmeter report` with TOKENMETER_CLICKHOUSE_URL at a server that does not answer printed
    clickhouse-connect's bare `Unexpected Http Driver Exception` (a WARNING, no detail) before tokenmeter's own
    error, which names the URL (password masked) and the cause; services logged it before every such error."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root), TOKENMETER_DATA_DIR=str(tmp_path),
               TOKENMETER_CLICKHOUSE_URL=f"http://default:s3cret@127.0.0.1:{free_port()}/tokenmeter")
    done = subprocess.run([sys.executable, "-m", "app", "report", "--group-by", "team"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0 and "cannot connect to ClickHouse" in done.stderr, done.stderr
    assert "Unexpected Http Driver Exception" not in done.stderr + done.stdout, done.stderr
    assert "s3cret" not in done.stderr + done.stdout
