"""The detector's fast paths compute exactly what the plain code computes (docs/rounds/anomalies.md, "Detector speed"):
a quiet stretch learnt at once (`Seasonal.update_zeros` over `quiet_slot_runs`) is `Seasonal.update(slots, 0.0)`
bucket by bucket, bit for bit, on any slot state; and an engine that defers its quiet scopes' zero samples finds the
same anomalies and ends with the same baselines, to the last bit of every float, as one learning them bucket by
bucket."""

from __future__ import annotations

import random
import struct

import pytest

from streams.anomalies import sparse
from streams.anomalies.baseline import FULL_SIZE, MIN_SAMPLES, Seasonal, full_slots, quiet_slot_runs
from streams.anomalies.engine import AnomalyEngine
from streams.anomalies.scope_state import ScopeState

pytestmark = pytest.mark.slow(seconds=11)  # rough seconds: longest files first (tests/suite_order.py)


def _bits(base: Seasonal) -> tuple:
    """Every float of a baseline as its IEEE bits (so -0.0 differs from 0.0, and NaN from nothing)."""
    return (tuple(struct.pack("<d", v) for v in base.level), tuple(struct.pack("<d", v) for v in base.dev),
            tuple(base.n), struct.pack("<d", base.scale))


def _random_slot_values(rng: random.Random) -> tuple[float, float, int]:
    special = [0.0, -0.0, 5e-324, 1e-13, 1e-12, 3e-12, 1e300]
    level = rng.choice(special) if rng.random() < 0.3 else rng.lognormvariate(0, 4) * rng.choice((1, 1, 1, -1))
    dev = rng.choice(special) if rng.random() < 0.3 else abs(level) * rng.random() * 2
    count = rng.choice((0, 1, 2, MIN_SAMPLES - 1, MIN_SAMPLES, MIN_SAMPLES + 1, 24, 25, 200, 201, rng.randrange(10**5)))
    return level, dev, count


def test_a_quiet_stretch_is_learnt_bit_for_bit_as_update_learns_it_bucket_by_bucket():
    rng = random.Random(17)
    for case in range(300):
        fast = Seasonal(scale=rng.choice((0.0, 1e-9, 0.3, 250.0, rng.lognormvariate(0, 3))))
        for index in range(FULL_SIZE):
            fast.level[index], fast.dev[index], fast.n[index] = _random_slot_values(rng)
        plain = Seasonal(FULL_SIZE, list(fast.level), list(fast.dev), list(fast.n), fast.scale)
        bucket_s = rng.choice((300, 300, 60, 900, 7200))
        first, buckets = rng.randrange(0, 2**31, bucket_s), rng.choice((1, 2, 11, 12, 13, 40, 300, 2100))
        for i in range(buckets):
            plain.update(full_slots(first + i * bucket_s), 0.0)
        fast.update_zeros(quiet_slot_runs(first, buckets, bucket_s))
        assert _bits(plain) == _bits(fast), case


def _run(days: int) -> tuple[list, dict, list]:
    batches, _, facts = sparse.generate(seed=3, days=days, per_kind=1)
    engine, updates = AnomalyEngine(), []
    for batch in batches:
        updates += [(u.action, u.notify, u.record) for u in engine.observe(batch, now=facts["end"])]
    updates += [(u.action, u.notify, u.record) for u in engine.advance_to(facts["end"] + 3600)]
    raw = [(key, [_bits(getattr(state, name)) for name in ("spend", "tokens", "requests") if getattr(state, name)])
           for key, state in engine.scopes.items()]
    return updates, engine.snapshot(), raw


def test_an_engine_with_the_fast_quiet_path_finds_and_learns_exactly_what_the_plain_one_does(monkeypatch):
    fast = _run(days=4)
    def learn_now(state: ScopeState, bucket: int, bucket_s: int) -> None:  # the engine before: bucket by bucket
        for base in (state.spend, state.tokens, state.requests):
            if base is not None:
                base.update(full_slots(bucket), 0.0)

    with monkeypatch.context() as patch:
        patch.setattr(ScopeState, "owe_quiet", learn_now)
        plain = _run(days=4)
    assert fast[2] == plain[2]
    assert fast[1] == plain[1]
    assert fast[0] == plain[0] and fast[0], len(fast[0])
