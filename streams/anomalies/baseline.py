"""Robust, seasonality-aware baselines for one metric of one scope.

Each slot keeps a level and a mean absolute deviation updated with a Huber-clipped EWMA: a sample far from the
level moves it by at most `CLIP` deviations, so an anomaly barely leaks into its own baseline (the robust
alternative to a median/MAD window, in constant memory). Slots, most specific first:

    hour of week (168)  ->  hour of day on the same kind of day, weekday or weekend (2 x 24)  ->  global (1)

`expected()` answers from the most specific slot that has seen enough samples (one full hour of 5-minute
buckets for hour of week, two for the fallbacks), so the first week uses weekday/weekend hour-of-day shapes;
volume metrics never fall back to the global level (it would flag every busy hour), ratios may.
Baselines are statistics, so they are floats; observed money stays exact (integer pico-dollars) elsewhere.
"""

from __future__ import annotations

from math import copysign

HOW, DAYTYPE, GLOBAL = 0, 168, 216
FULL_SIZE, DAILY_SIZE = 217, 121  # a daily baseline keeps quarter hours (96) + hours (24) of the day + global
MIN_SAMPLES = 12
CLIP = 3.0
# Per-slot learning rates: an hour-of-week slot sees 12 samples a week, so it must learn faster per sample
# than the hour-of-day slots (12 a day) or the global one (288 a day).
A_HOW, A_DAYTYPE, A_HOD, A_GLOBAL = 0.08, 0.04, 0.06, 0.005

Slots = tuple[tuple[int, float], ...]  # (slot index, learning rate), most specific first, global last


def full_slots(bucket_start: int) -> Slots:
    """Hour of week, weekday/weekend hour of day, global, for a UTC epoch second."""
    hour = bucket_start // 3600
    hod = hour % 24
    dow = (hour // 24 + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    return ((HOW + dow * 24 + hod, A_HOW), (DAYTYPE + (24 if dow >= 5 else 0) + hod, A_DAYTYPE), (GLOBAL, A_GLOBAL))


def daily_slots(bucket_start: int) -> Slots:
    """Quarter hour of the day, hour of the day, global: for ratios (tokens per request, error rate, cost per
    token) that follow the traffic mix of the day but not its volume. Quarter hours, because a batch job ending
    at :45 changes a team's mix within the hour; the hour slot answers while quarter hours are young."""
    quarter = (bucket_start // 900) % 96
    return ((quarter, A_HOD), (96 + quarter // 4, A_HOD / 2), (120, 0.01))


def quiet_slot_runs(first: int, buckets: int, bucket_s: int) -> list[tuple[int, float, int]]:
    """(slot, rate, times): the slots `full_slots` gives `buckets` consecutive buckets from `first`, with how many of
    them each one gets (an hour of week and its day-type hour per hour of the stretch, the global slot all)."""
    if first // 3600 == (first + (buckets - 1) * bucket_s) // 3600:  # (most stretches: within one hour)
        (how, a_how), (daytype, a_daytype), _ = full_slots(first)
        return [(how, a_how, buckets), (daytype, a_daytype, buckets), (GLOBAL, A_GLOBAL, buckets)]
    times: dict[tuple[int, float], int] = {}
    bucket, end = first, first + buckets * bucket_s
    while bucket < end:
        in_hour = -(-(min(end, (bucket // 3600 + 1) * 3600) - bucket) // bucket_s)  # this hour's buckets (ceiling)
        for slot in full_slots(bucket)[:2]:
            times[slot] = times.get(slot, 0) + in_hour
        bucket += in_hour * bucket_s
    return [(index, alpha, k) for (index, alpha), k in times.items()] + [(GLOBAL, A_GLOBAL, buckets)]


SCALE_RATE = 0.02
SCALE_FLOOR = 0.25  # a slot's deviation never counts as less than this share of the metric's typical size


class Seasonal:
    """Slots of one metric, plus `scale`: the typical size of its non-zero samples (all slots together), which
    floors every slot's deviation. Without it a slot that has seen only zeros (a key absent on its first Monday,
    a quiet night) has level 0 and deviation 0, and Huber clipping would let no later sample move it."""

    __slots__ = ("level", "dev", "n", "scale")

    def __init__(self, size: int = FULL_SIZE, level=None, dev=None, n=None, scale: float = 0.0):
        self.level = level or [0.0] * size
        self.dev = dev or [0.0] * size
        self.n = n or [0] * size
        self.scale = scale

    def expected(self, slots: Slots, min_samples: int = MIN_SAMPLES, allow_global: bool = True) -> tuple[float, float, int]:
        """(level, mean absolute deviation, samples) to judge a value against, or samples 0 when none is mature.

        Volume metrics (`allow_global=False`) take the highest mature seasonal level (hour of week, weekday or
        weekend hour of day): a young hour-of-week slot learnt from a single week can hold that week's dip (an
        outage, a team on another model), and the higher level only costs sensitivity, never a false alarm. They
        never fall back to the global level, which averages day and night and would flag every busy hour.
        Ratios take the most specific mature slot, then the global one (with twice the samples)."""
        n, level, dev = self.n, self.level, self.dev
        if not allow_global:
            best = None
            for index, _ in slots[:-1]:
                if n[index] >= min_samples and (best is None or level[index] > level[best]):
                    best = index
            if best is None and len(slots) == 3 and slots[1][0] >= DAYTYPE + 24 and n[slots[1][0] - 24] >= min_samples:
                # A young scope's first weekend: judge it against weekdays, which are busier for business
                # traffic (so this can only miss, not invent, an anomaly). Never the other way round.
                best = slots[1][0] - 24
            return (level[best], dev[best], n[best]) if best is not None else (0.0, 0.0, 0)
        last = len(slots) - 1
        for position, (index, _) in enumerate(slots):
            if n[index] >= (min_samples if position < last else 2 * min_samples):
                return level[index], dev[index], n[index]
        return 0.0, 0.0, 0

    def update(self, slots: Slots, x: float) -> None:
        # Hot: called for every scope and every closed bucket, hence no helper calls and no min()/max().
        level, dev, n = self.level, self.dev, self.n
        if x != 0.0:
            size = x if x > 0 else -x
            scale = self.scale
            if scale <= 0.0:
                scale = size
            elif size > 4 * scale:  # clipped like the levels: a spike barely moves the typical size
                scale += SCALE_RATE * 3 * scale
            else:
                scale += SCALE_RATE * (size - scale)
            self.scale = scale
        floor = SCALE_FLOOR * self.scale
        for index, alpha in slots:
            count = n[index]
            if count >= MIN_SAMPLES:
                lv, dv = level[index], dev[index]
                bound = 0.05 * lv if lv > 0 else -0.05 * lv
                if dv > bound:
                    bound = dv
                if floor > bound:
                    bound = floor
                bound = CLIP * bound if bound > 1e-12 else 3e-12
                d = x - lv
                if d > bound:
                    d = bound
                elif d < -bound:
                    d = -bound
                rate = alpha if alpha * (count + 1) >= 1 else 1.0 / (count + 1)
                level[index] = lv + rate * d
                dev[index] = dv + rate * ((d if d >= 0 else -d) - dv)
            elif count == 0:
                level[index] = x
                dev[index] = abs(x) * 0.25
            else:  # young slot: a plain running mean, unclipped (there is no level to trust yet)
                lv = level[index]
                rate = 1.0 / (count + 1)
                level[index] = lv + rate * (x - lv)
                dev[index] += rate * (abs(x - lv) - dev[index])
            n[index] = count + 1

    def update_zeros(self, runs: list[tuple[int, float, int]]) -> None:
        """`update(slots, 0.0)` for a quiet stretch of buckets, bit for bit, slot by slot (`quiet_slot_runs`): a zero
        sample leaves `scale` (so the floor) as it is, and each slot's step reads only that slot, so the order in
        which different slots learn does not matter; each slot still takes its own zero samples one by one."""
        level, dev, n = self.level, self.dev, self.n
        floor = SCALE_FLOOR * self.scale
        x, clip = 0.0, CLIP
        for index, alpha, times in runs:
            lv, dv, count = level[index], dev[index], n[index]
            if lv == 0.0 and dv == 0.0 and copysign(1.0, lv) > 0.0 and copysign(1.0, dv) > 0.0:
                n[index] = count + times  # (+0.0, +0.0) is where a zero sample leaves a slot that saw only zeros
                continue
            while times and (count < MIN_SAMPLES or alpha * (count + 1) < 1):
                # the body of `update` for one slot with x = 0.0 (same operations, same order), while young...
                if count >= MIN_SAMPLES:
                    bound = 0.05 * lv if lv > 0 else -0.05 * lv
                    if dv > bound:
                        bound = dv
                    if floor > bound:
                        bound = floor
                    bound = CLIP * bound if bound > 1e-12 else 3e-12
                    d = x - lv
                    if d > bound:
                        d = bound
                    elif d < -bound:
                        d = -bound
                    rate = 1.0 / (count + 1)
                    lv, dv = lv + rate * d, dv + rate * ((d if d >= 0 else -d) - dv)
                elif count == 0:
                    lv, dv = x, abs(x) * 0.25
                else:
                    rate = 1.0 / (count + 1)
                    lv, dv = lv + rate * (x - lv), dv + rate * (abs(x - lv) - dv)
                count += 1
                times -= 1
            count += times
            # ... then mature, where its rate is `alpha` for good (count only grows). While the scale's floor is the
            # largest of the three bounds (a level decayed below its deviation floor: most of a quiet night), the
            # bound is the same every step, so it is worked out once; the steps are the same operations in the same
            # order, and the first step where the deviation exceeds the floor leaves for the general loop below. The
            # level's share (0.05 |level|) is checked once: a zero sample never moves the level away from zero (the
            # step is at most the level itself, or less when clipped), so once under the floor it stays under.
            if floor > 1e-12 and (0.05 * lv if lv > 0 else -0.05 * lv) <= floor:
                fixed = clip * floor
                while times and dv <= floor:
                    d = x - lv
                    if d > fixed:
                        d = fixed
                    elif d < -fixed:
                        d = -fixed
                    lv, dv = lv + alpha * d, dv + alpha * ((d if d >= 0 else -d) - dv)
                    times -= 1
            for _ in range(times):
                bound = 0.05 * lv if lv > 0 else -0.05 * lv
                if dv > bound:
                    bound = dv
                if floor > bound:
                    bound = floor
                bound = clip * bound if bound > 1e-12 else 3e-12
                d = x - lv
                if d > bound:
                    d = bound
                elif d < -bound:
                    d = -bound
                lv, dv = lv + alpha * d, dv + alpha * ((d if d >= 0 else -d) - dv)
            level[index], dev[index], n[index] = lv, dv, count

    def to_json(self) -> list:
        return [[round(v, 9) for v in self.level], [round(v, 9) for v in self.dev], self.n, round(self.scale, 9)]

    @classmethod
    def from_json(cls, data: list) -> "Seasonal":
        scale = float(data[3]) if len(data) > 3 else max((abs(v) for v in data[0]), default=0.0)
        return cls(len(data[2]), [float(v) for v in data[0]], [float(v) for v in data[1]], [int(v) for v in data[2]],
                   scale)
