"""Seasonal baselines learn from any start: a slot that first saw only zeros (a key absent on its first Monday,
a quiet night) must still learn the level that follows (issue #17, point 4)."""

from __future__ import annotations

from streams.anomalies.baseline import A_DAYTYPE, A_GLOBAL, A_HOW, Seasonal

SLOTS = ((0, A_HOW), (168, A_DAYTYPE), (216, A_GLOBAL))


def test_slot_that_starts_at_zero_learns_the_new_level():
    base = Seasonal()
    for _ in range(12):
        base.update(SLOTS, 0.0)
    for _ in range(288):
        base.update(SLOTS, 5.0)
    # 288 samples at rate 0.04 (and 0.08): within a few percent of 5; even the slow global slot has moved far.
    assert base.level[168] > 4.5, base.level[168]
    assert base.level[0] > 4.9, base.level[0]
    assert base.level[216] > 1.0, base.level[216]


def test_hour_of_week_slot_of_a_key_absent_on_its_first_week():
    base = Seasonal()
    how = ((10, A_HOW), (168 + 10, A_DAYTYPE), (216, A_GLOBAL))
    for _ in range(12):  # first Monday 10:00-11:00: the key did not exist yet
        base.update(how, 0.0)
    for _ in range(36):  # the next three Mondays, ~3 calls per bucket
        base.update(how, 3.0)
    assert base.level[10] > 2.0, base.level[10]


def test_outlier_is_still_clipped_once_the_level_is_learnt():
    base = Seasonal()
    for i in range(200):
        base.update(SLOTS, 10.0 + (i % 3))
    before = base.level[168]
    base.update(SLOTS, 10_000.0)  # one huge sample barely moves a mature slot
    assert base.level[168] - before < 1.0
