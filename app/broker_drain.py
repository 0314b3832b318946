"""Before `tokenmeter up` stops its children cleanly: let the worker and the loader consume what the memory-only
embedded broker holds, since the broker keeps nothing across a stop (soak34).

Why: the soak lost acknowledged events without any broker loss. After a broker restart under load the worker and the
loader were still starting when the soak stopped `up` cleanly; the records the new broker had acknowledged meanwhile
were only in the broker, and the stop took them without a word (a crash at least reports what was at risk). So a
clean stop first waits, bounded by `stop_drain_seconds`, until the worker's group has committed every usage record
and the loader's every priced record (their commits follow their outputs' acknowledgements: usage committed means
priced produced, priced committed means loaded). Alerts are not waited for: the warehouse puts the undelivered ones
back in the outbox at the next start. Whatever is still waiting at the deadline is said loudly and returned, for the
status file, like a crash's loss.
"""

from __future__ import annotations

import time
from typing import Callable

from app.broker import BACKLOG_STAGES, Positions, StageSampler
from tokenmeter import topics

DRAINED_TOPICS = (topics.USAGE, topics.PRICED)  # in pipeline order: priced records come from the usage drained
SAMPLE_EVERY_S = 0.3


def _sample(loop, sampler: StageSampler) -> Positions | None:  # noqa: ANN001 - an asyncio loop
    """One sample with the drain's clients, kept from sample to sample as `up`'s backlog watcher keeps its own (new
    clients for every sample every 0.3 s cost the stop what they cost the watcher: soak35)."""
    import asyncio  # here: `tokenmeter status` imports the supervisor and runs no loop

    try:
        return loop.run_until_complete(asyncio.wait_for(sampler.positions(DRAINED_TOPICS), 5))
    except Exception:  # noqa: BLE001 - a busy broker: the next sample, or the deadline, decides; new clients then
        loop.run_until_complete(sampler.close())
        return None


def _left(sample: Positions, targets: dict[str, dict[int, int]]) -> dict[str, int]:
    """Per drained topic, records below the target offsets that its group has not committed yet."""
    return {topic: sum(max(0, min(target, sample[topic][p][0]) - sample[topic][p][1])
                       for p, target in targets.get(topic, {}).items()) for topic in DRAINED_TOPICS}


def drain_broker(bootstrap: str, partitions: int, fetch_wait: dict[str, int], timeout_s: float,
                 consumers_alive: Callable[[], bool], echo: Callable[[str], None]) -> dict | None:
    """Wait until the worker has committed every usage record acknowledged before the stop began, and then the
    loader every priced record produced until then (records acknowledged meanwhile, e.g. by collectors outside
    `up`, are not chased: the stop has begun); at most `timeout_s` and only while both run. Returns None when
    drained, else the loss: {"at", "waiting", "at_risk_records"}."""
    import asyncio

    loop = asyncio.new_event_loop()
    sampler = StageSampler(bootstrap, partitions, fetch_wait)
    try:
        return _drain(loop, sampler, timeout_s, consumers_alive, echo)
    finally:
        loop.run_until_complete(sampler.close())
        loop.close()


def _drain(loop, sampler: StageSampler, timeout_s: float, consumers_alive: Callable[[], bool],  # noqa: ANN001
           echo: Callable[[str], None]) -> dict | None:
    deadline = time.monotonic() + timeout_s
    targets: dict[str, dict[int, int]] = {}
    left: dict[str, int] | None = None
    announced = priced_final = False
    while True:
        sample = _sample(loop, sampler)
        if sample is not None:
            if not targets:  # what the broker had acknowledged when the stop began
                targets = {topic: {p: end for p, (end, _) in sample[topic].items()} for topic in DRAINED_TOPICS}
            left = _left(sample, targets)
            if not priced_final and left[topics.USAGE] == 0:  # the priced outputs of that usage all exist now
                targets[topics.PRICED] = {p: end for p, (end, _) in sample[topics.PRICED].items()}
                priced_final = True
                left = _left(sample, targets)
            if priced_final and not any(left.values()):
                if announced:
                    echo("      drained: what the broker acknowledged before the stop is metered and loaded")
                return None
        if time.monotonic() >= deadline or not consumers_alive():
            break
        if not announced and left is not None:
            echo(f"      waiting up to {timeout_s:.0f} s for the worker and the loader to consume what the memory-only "
                 f"broker holds ({_describe(left)})")
            announced = True
        time.sleep(SAMPLE_EVERY_S)
    records = sum(left.values()) if left is not None else None
    why = _why(left, consumers_alive(), timeout_s, time.monotonic() - (deadline - timeout_s))
    echo(f"!!! STOPPING WITH RECORDS ONLY IN THE MEMORY-ONLY BROKER: {_describe(left) if left else 'not known'}: "
         f"{why}. They are lost with this stop; re-send that range from its source if you can.")
    return {"at": time.time(), "waiting": left, "at_risk_records": records, "why": why}


def _why(left: dict[str, int] | None, consumers_alive: bool, timeout_s: float, waited_s: float) -> str:
    """Why the drain gave up, for the status file and the soak's result (soak35: the soak could not tell a drain
    that timed out from one whose worker or loader was down, or whose broker never answered a sample)."""
    if left is None:
        return f"the broker answered no sample in {waited_s:.0f} s, so what it holds is not known"
    if not consumers_alive:
        return f"the worker or the loader is not running (gave up after {waited_s:.0f} s)"
    stuck = " and ".join(who for topic, who in ((topics.USAGE, "the worker"), (topics.PRICED, "the loader"))
                         if left.get(topic))
    return f"not consumed within {timeout_s:.0f} s ({stuck or 'nobody'} still behind)"


def _describe(left: dict[str, int]) -> str:
    what = {topic: text for topic, _, text in BACKLOG_STAGES}
    return "; ".join(f"{n} {what[topic]}" for topic, n in left.items())
