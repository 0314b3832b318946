"""tokenmeter.timefmt replaced four private `_iso` helpers (budget ledger, price book, price history, exports): the
text must be byte for byte what each of them wrote, or stored JSON, priced events' price references and the
finance exports would change under the same data. The old helpers are kept here, verbatim, as the oracle."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from tokenmeter.timefmt import iso_effective, iso_utc


def _ledger_iso(ts):  # streams/budgets/ledger.py before
    return ts.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if ts else None


def _book_iso(ts):  # streams/pricing/book.py before
    if ts is None:
        return None
    return ts.date().isoformat() if ts.time() == datetime.min.time() else ts.isoformat()


def _price_history_iso(moment):  # warehouse/price_history.py before
    if isinstance(moment, datetime):
        return moment.date().isoformat() if moment.time() == datetime.min.time() else moment.isoformat()
    return str(moment)


def _export_iso(moment):  # warehouse/export.py before
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


MOMENTS = [
    datetime(2026, 3, 1, tzinfo=timezone.utc),  # midnight UTC
    datetime(2026, 3, 1, 12, 30, 5, tzinfo=timezone.utc),
    datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=timezone.utc),  # microseconds
    datetime(2026, 3, 1, 12, 30, 5, 1000, tzinfo=timezone.utc),
    datetime(2026, 3, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),  # midnight elsewhere
    datetime(2026, 3, 1, 0, 30, tzinfo=timezone(timedelta(hours=2))),  # the day before in UTC
    datetime(2026, 10, 25, 2, 30, tzinfo=ZoneInfo("Europe/Berlin")),  # a DST change
    datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-8))),  # leap day, next day in UTC
    datetime(1970, 1, 1, tzinfo=timezone.utc),
    datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc),
]


@pytest.mark.parametrize("moment", MOMENTS, ids=str)
def test_the_ledger_and_export_texts_are_unchanged(moment):
    assert iso_utc(moment) == _ledger_iso(moment)
    assert iso_utc(moment, "seconds") == _export_iso(moment)
    assert iso_utc(moment).endswith("Z") and "+" not in iso_utc(moment)


@pytest.mark.parametrize("moment", MOMENTS, ids=str)
def test_the_price_book_and_price_history_texts_are_unchanged(moment):
    assert iso_effective(moment) == _book_iso(moment) == _price_history_iso(moment)


def test_none_and_stored_text():
    assert iso_utc(None) is None and _ledger_iso(None) is None
    assert iso_effective(None) is None and _book_iso(None) is None
    assert iso_effective("2024-10-02") == _price_history_iso("2024-10-02") == "2024-10-02"
    assert iso_effective(date(2024, 10, 2)) == "2024-10-02"


def test_the_text_reads_back_as_the_same_moment():
    for moment in MOMENTS:
        # (timestamps: PEP 495 makes an ambiguous local time unequal to any moment in another zone)
        assert datetime.fromisoformat(iso_utc(moment)).timestamp() == moment.timestamp()
        assert datetime.fromisoformat(iso_utc(moment, "seconds")).timestamp() == int(moment.timestamp())


def test_people_utc_writes_the_minute_or_the_second_in_utc():
    from tokenmeter.timefmt import people_utc

    moment = datetime(2026, 11, 26, 5, 0, 7, 512345, tzinfo=timezone(timedelta(hours=1)))
    assert people_utc(moment) == "2026-11-26 04:00 UTC"
    assert people_utc(moment, seconds=True) == "2026-11-26 04:00:07 UTC"
    assert people_utc("2026-11-26T04:00:07.512345Z", seconds=True) == "2026-11-26 04:00:07 UTC"
    assert people_utc(None, seconds=True) is None
