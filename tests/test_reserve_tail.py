"""app/reserve_tail.py: the split of the slowest reservations into phases (client and worker on one clock), and
what the worker's traced loop ran during them."""

from app.reserve_tail import breakdown, phases


def _timed(due: float, lateness: float, before: float, ack: float, after: float) -> tuple:
    sent = due + lateness / 1000
    start = sent + before / 1000
    reserve = 0.1 + 0.02 + ack + 0.01
    answered = start + reserve / 1000 + after / 1000
    return (due, sent, answered, {"reserve": reserve, "prep": 0.1, "queue": 0.02, "ack": ack, "answer": 0.01,
                                  "start": start})


def test_phases_tile_the_latency():
    split = phases(*_timed(10.0, lateness=0.5, before=2.0, ack=3.0, after=0.4))
    assert round(split["lateness"] + split["before"] + split["prep"] + split["queue"] + split["ack"] + split["answer"]
                 + split["after"], 6) == round(split["total"], 6)
    assert round(split["before"], 6) == 2.0 and round(split["after"], 6) == 0.4
    assert phases(10.0, 10.001, 10.002, {"reserve": 1.0}) is None  # a worker that gave no phases


def test_the_slowest_one_percent_and_the_loop_work_that_overlapped_them():
    timed = [_timed(i * 0.0005, lateness=0.3, before=0.5, ack=0.6, after=0.1) for i in range(990)]
    # ten slow ones, all during one traced 30 ms callback at t = 1.0 s, waiting before the handler
    timed += [_timed(1.0 + i * 0.001, lateness=0.3, before=25.0, ack=0.6, after=0.1) for i in range(10)]
    trace = {"callbacks": [[1.0, 0.030, 0.028, "task Agent._execute_actor"]], "gc": [[1.005, 0.002, 0]],
             "iterations": [[1.0, 0.031, 12]]}
    figures = breakdown(timed, trace)
    assert figures["slowest_count"] == 10
    assert figures["slowest_phase_median_ms"]["before"] == 25.0 and figures["all_phase_median_ms"]["before"] == 0.5
    assert figures["slowest_phase_share_pct"]["before"] > 90
    assert figures["slowest_with_slow_callback_pct"] == 100.0 and figures["all_with_slow_callback_pct"] == 1.0
    assert figures["slowest_overlapping_callbacks"] == [["task Agent._execute_actor", 1, 30.0, 28.0]]
    assert figures["slowest_busiest_iteration_median_ms"] == 31.0
    assert figures["slowest_with_gc_pause_pct"] > 0
