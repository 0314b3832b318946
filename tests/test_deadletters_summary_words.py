"""`tokenmeter deadletters summary` as walk36's on-call engineer read it: lines ~300 characters wide, and a `source`
column saying `worker` for events whose `source` was `kong`. Letters written by the worker's own engine
(process_batch) and stored as the loader stores them, in a real chDB warehouse of this file's own; the command
through click's CliRunner. No broker: the summary reads the warehouse only."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pytest
from click.testing import CliRunner

from app.cli import main
from app.deadletters_read import decode
from streams.batch import RawRecord, process_batch
from streams.pricing import load_price_book
from tokenmeter import deadletters, topics
from tokenmeter.settings import Settings
from warehouse_template import empty_warehouse_in

LONG_FIELD = "attribution.tags.cost_center_of_the_platform_teams_shared_gateway_for_the_whole_company"


def kong_event(n: int, **changes) -> dict:
    return {"event_id": f"kong-{n}", "ts": datetime.now(timezone.utc).isoformat(), "source": "kong",
            "provider": "openai", "model": "gpt-4o", "attribution": {"team": "growth"},
            "usage": {"input_tokens": 1000, "output_tokens": 10}, **changes}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Letters of the worker about kong's events (a negative token count; an unknown field with a long name: a
    long reason), and one about a record that is not JSON (no event, so no event source), stored as the loader
    stores them."""
    data_dir = empty_warehouse_in(tmp_path_factory.mktemp("deadletters-words"), tmp_path_factory)
    values = [orjson.dumps(kong_event(1, usage={"input_tokens": -5, "output_tokens": 1})),
              orjson.dumps(kong_event(2, usage={"input_tokens": -7, "output_tokens": 1})),
              orjson.dumps(kong_event(3, attribution={"team": "growth", LONG_FIELD: "x"})),
              b"{not json"]
    letters = process_batch([RawRecord(v, topics.USAGE, 0, i) for i, v in enumerate(values)],
                            load_price_book()).deadletters
    assert len(letters) == 4
    from warehouse import open_warehouse
    from warehouse.records_load import record_to_row

    stored = [orjson.loads(deadletters.encode(letter)) for letter in letters]  # as read from the topic
    wh = open_warehouse(Settings(data_dir=data_dir), writer=True, serve=False)
    try:
        wh.insert_records(topics.DEADLETTER, [record_to_row(topics.DEADLETTER, letter)[1] for letter in stored])
    finally:
        wh.close()
    return data_dir


def summary(data_dir, *args: str, columns: int = 100):
    env = {"TOKENMETER_KAFKA_BOOTSTRAP": "127.0.0.1:9", "TOKENMETER_DATA_DIR": str(data_dir), "COLUMNS": str(columns)}
    result = CliRunner().invoke(main, ["deadletters", "summary", *args], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_source_is_the_events_own_and_the_stage_the_one_that_rejected_it(data_dir):
    groups = orjson.loads(summary(data_dir, "--format", "json"))["groups"]
    negative = [(g["source"], g["stage"], g["letters"]) for g in groups
                if g["kind"].startswith("invalid event: usage.input_tokens")]
    assert negative == [("kong", "worker", 2)], groups  # the old code: ("worker", "worker", 2) for kong's events
    assert [g["source"] for g in groups if g["kind"].startswith("not JSON")] == ["worker"]  # no event: the stage
    only_kong = orjson.loads(summary(data_dir, "--source", "kong", "--format", "json"))["groups"]
    assert sum(g["letters"] for g in only_kong) == 3


def test_deadletters_show_names_the_same_source_as_the_summary():
    letter = process_batch([RawRecord(orjson.dumps(kong_event(9, usage={"input_tokens": -1, "output_tokens": 0})),
                                      topics.USAGE, 0, 9)], load_price_book()).deadletters[0]
    assert decode(0, 0, 0, deadletters.encode(letter)).source == "kong"  # `show --source kong` finds it


@pytest.mark.parametrize("columns", [80, 100, 160])
def test_the_table_fits_the_terminal_and_full_shows_every_word(data_dir, columns):
    table = summary(data_dir, columns=columns)
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= columns, "\n".join(lines)  # the old lines: ~300 characters
    assert "kong" in table and "4 letter(s) in 3 group(s)" in table
    assert "--full" in table  # a reason was cut: the way to the whole text is named
    full = summary(data_dir, "--full", columns=columns)
    assert max(len(line) for line in full.splitlines()) <= columns, full
    assert LONG_FIELD in "".join(full.split())  # wrapped, never cut
    assert "greater than or equal to 0" in " ".join(full.split())  # an example, as it was lettered
