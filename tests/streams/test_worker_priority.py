"""`TOKENMETER_WORKER_NICE` and `TOKENMETER_WORKER_SCHED_SLICE_MS` (reserve10, issue 15): a worker's CPU priority,
so a pricing worker sharing the cores with an admitting budgets worker yields them first, and the time slice a
budgets worker asks the kernel for, so an arriving reservation preempts other work sooner. Every thread of the
worker gets them, the threads started before they were applied as well as those started after (Linux keeps both
per thread). The slice is read back from /proc/<pid>/task/<tid>/sched (`se.slice`), where the kernel shows it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from process_support import start_worker, stop, wait_for
from tokenmeter.settings import free_port

ROOT = Path(__file__).resolve().parents[2]


def _thread_nice(pid: int) -> dict[int, int]:
    """The nice value of each thread of `pid` (field 19 of /proc/<pid>/task/<tid>/stat)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(tid)] = int(fields[16])
    return out


def _thread_slices(pid: int) -> dict[int, int]:
    """The scheduler slice (ns) of each thread of `pid`, from /proc/<pid>/task/<tid>/sched."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            lines = open(f"/proc/{pid}/task/{tid}/sched").read().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("se.slice"):
                out[int(tid)] = int(line.split(":")[1])
    return out


def _slice_shown() -> bool:
    """Whether this kernel shows the slice and lets a task choose its own (Linux 6.12+, EEVDF)."""
    return (sys.platform.startswith("linux") and os.path.exists("/proc/self/sched")
            and "se.slice" in open("/proc/self/sched").read() and tuple(map(int, os.uname().release.split(".")[:2]))
            >= (6, 12))


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_lower_cpu_priority_reaches_threads_started_before_and_after_and_never_lowers_it():
    script = """
import json, os, threading
from streams.priority import lower_cpu_priority
gate = threading.Event()
early = threading.Thread(target=gate.wait); early.start()  # started before the setting
lower_cpu_priority(7)
late = threading.Thread(target=gate.wait); late.start()
first = {tid: os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in os.listdir("/proc/self/task")}
lower_cpu_priority(3)  # below what it runs at: left at 7 (lowering needs privileges, and was not asked for)
second = {tid: os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in os.listdir("/proc/self/task")}
gate.set(); early.join(); late.join()
print(json.dumps([first, second]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True)
    first, second = json.loads(out.stdout)
    assert len(first) >= 3 and set(first.values()) == {7}, first
    assert set(second.values()) == {7}, second


@pytest.mark.skipif(not _slice_shown(), reason="needs Linux 6.12+ showing se.slice in /proc")
def test_request_time_slice_reaches_every_thread_and_keeps_the_nice_value():
    script = """
import json, os, threading
from streams.priority import lower_cpu_priority, request_time_slice
gate, batch = threading.Event(), {}
def batch_thread():  # an operator's SCHED_BATCH thread keeps its policy
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0)); batch["tid"] = threading.get_native_id(); gate.wait()
early = threading.Thread(target=gate.wait); early.start()
in_batch = threading.Thread(target=batch_thread); in_batch.start()
while "tid" not in batch: pass
lower_cpu_priority(5)
assert request_time_slice(0.3)
late = threading.Thread(target=gate.wait); late.start()
nice = {tid: os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in os.listdir("/proc/self/task")}
print(json.dumps([os.getpid(), nice, os.sched_getscheduler(batch["tid"]) == os.SCHED_BATCH]), flush=True)
input()
gate.set(); early.join(); late.join(); in_batch.join()
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        pid, nice, still_batch = json.loads(proc.stdout.readline())
        slices = _thread_slices(pid)
        assert len(slices) >= 4 and set(slices.values()) == {300_000}, slices
        assert set(nice.values()) == {5}, nice
        assert still_batch
    finally:
        proc.communicate("\n", timeout=30)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_pricing_worker_runs_every_thread_at_the_configured_nice(kafka_bootstrap, tmp_path):
    """A real pricing worker with TOKENMETER_WORKER_NICE=9: once it prices (holds its usage partitions), every thread
    it has (the event loop, Faust's consumer thread, the pricing thread, aiokafka's) runs at nice 9; with
    TOKENMETER_WORKER_SCHED_SLICE_MS=0.3 too, every thread has a 0.3 ms slice (where the kernel shows it)."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENMETER_KAFKA_BOOTSTRAP=kafka_bootstrap,
               TOKENMETER_DATA_DIR=str(tmp_path / "pricing"), TOKENMETER_API_PORT=str(port),
               TOKENMETER_WORKER_ROLE="pricing", TOKENMETER_WORKER_NICE="9", TOKENMETER_WORKER_SCHED_SLICE_MS="0.3")
    proc = start_worker(env, tmp_path / "pricing.log")
    try:
        wait_for(lambda: _healthy(port), timeout=90,
                 what="the pricing worker holding its usage partitions")
        threads = _thread_nice(proc.pid)
        assert len(threads) >= 2 and set(threads.values()) == {9}, threads
        if _slice_shown():
            slices = _thread_slices(proc.pid)
            assert set(slices.values()) == {300_000}, slices
    finally:
        stop(proc)
