"""tokenmeter/period_names.py: a budget period key in words, and what it does with keys it did not write.
Period keys reach the texts from records on topics anyone can write to (enforcement, alerts), so any value must give
a text, never an exception in an alert or a dashboard callback."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tokenmeter.period_names import period_name

NOW = datetime(2026, 12, 5, 10, tzinfo=timezone.utc)


@pytest.mark.parametrize(("key", "words"), [
    ("day:2026-12-05@UTC", "today (2026-12-05, UTC)"),
    ("day:2026-12-04@UTC", "yesterday (2026-12-04, UTC)"),
    ("month:2026-12@Europe/Berlin", "this month (December 2026, Europe/Berlin)"),
    ("month:2026-11@Europe/Berlin", "last month (November 2026, Europe/Berlin)"),
    ("rolling:24h@2026-12-05T14Z", "the 24 hours to 2026-12-05 14:00 UTC"),
])
def test_keys_the_budgets_write_read_as_words(key, words):
    assert period_name(key, NOW) == words


@pytest.mark.parametrize("key", [
    "", "x" * 10_000, "day:garbage@Mars/Zone", "month:0000-00@UTC", "week:2026-13-99@UTC", "rolling:24h@UTC",
    "month:2026-12@../../etc/passwd",
    "rolling:24h@2026-02-31T10Z",  # no such day
    "rolling:24h@2026-12-05T99Z",  # no such hour: printed as "99:00" before
])
def test_a_key_of_another_shape_is_shown_as_it_is(key):
    assert period_name(key, NOW) == key


@pytest.mark.parametrize(("value", "text"), [(None, ""), (5, "5"), (["day"], "['day']")])
def test_a_value_that_is_not_text_gives_its_text_not_an_exception(value, text):
    assert period_name(value, NOW) == text  # a TypeError before


def test_a_huge_rolling_window_is_grouped_not_an_error():
    assert period_name("rolling:99999999999999999999h@2026-12-05T14Z", NOW) == \
        "the 99,999,999,999,999,999,999 hours to 2026-12-05 14:00 UTC"
