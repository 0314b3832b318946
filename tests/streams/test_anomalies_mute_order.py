"""Mutes and unmutes of one (kind, scope) folded by when people clicked them, not by the order Kafka hands them out.

`tokenmeter.anomaly-acks` is keyed by anomaly id and has several partitions, while a mute applies to a (kind,
scope). A mute sent from anomaly A's row and an unmute sent from a later anomaly B's row of the same scope land on
different partitions; a detector that restarts reads the partitions in whatever order its fetches return them
(`read_to_end`), so the old mute could be folded after the newer unmute and silence the scope again (anom24)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from streams.anomalies.acks import MuteTable, ack_record

NOW = datetime(2026, 12, 6, 13, 0, tzinfo=timezone.utc)
SCOPE = {"kind": "spend_rate", "scope_dim": "api_key", "scope_value": "search-k1", "by": "oncall"}


def mute(anomaly_id: str, at: datetime, hours: float = 24) -> dict:
    return ack_record(anomaly_id=anomaly_id, action="mute", mute_until=at + timedelta(hours=hours), at=at, **SCOPE)


def unmute(anomaly_id: str, at: datetime) -> dict:
    return ack_record(anomaly_id=anomaly_id, action="unmute", at=at, **SCOPE)


def test_a_newer_unmute_read_before_an_older_mute_still_wins():
    table = MuteTable()
    table.apply(unmute("anomaly-b", NOW + timedelta(minutes=30)))  # partition 2, fetched first after a restart
    table.apply(mute("anomaly-a", NOW))  # partition 0: clicked half an hour earlier
    assert not table.muted("spend_rate", "api_key", "search-k1", NOW + timedelta(hours=1))


def test_a_newer_mute_read_before_an_older_unmute_still_holds():
    table = MuteTable()
    table.apply(mute("anomaly-b", NOW + timedelta(minutes=30)))
    table.apply(unmute("anomaly-a", NOW))
    assert table.muted("spend_rate", "api_key", "search-k1", NOW + timedelta(hours=1))


def test_in_order_records_fold_as_before():
    table = MuteTable()
    table.apply(mute("anomaly-a", NOW))
    assert table.muted("spend_rate", "api_key", "search-k1", NOW + timedelta(hours=1))
    table.apply(unmute("anomaly-a", NOW + timedelta(minutes=5)))
    assert not table.muted("spend_rate", "api_key", "search-k1", NOW + timedelta(hours=1))
    table.apply(mute("anomaly-c", NOW + timedelta(minutes=10), hours=2))
    assert table.muted("spend_rate", "api_key", "search-k1", NOW + timedelta(hours=1))
    assert not table.muted("spend_rate", "api_key", "search-k1", NOW + timedelta(hours=3))  # expired
    assert table.to_json() == {"spend_rate|api_key|search-k1": "2026-12-06T15:10:00Z"}
