"""The worker keeps the pages of freed large blocks (streams/allocator.py): a batch allocates blocks of 100 KB to a
few MB again and again (priced messages, aiokafka's requests), and glibc's defaults served each as fresh pages,
every touched page a minor fault."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# faults per round of a batch's pattern: 30 blocks of 300 KB (priced messages) written and kept alive, then freed
FAULTS_PER_ROUND = """
import resource, sys
{setup}
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def round_(i):
    blocks = [bytes([i]) * 300_000 for _ in range(30)]
    del blocks
round_(0)
before = faults()
for i in range(10):
    round_(i)
print((faults() - before) / 10)
"""


def faults_per_round(setup: str, **env: str) -> float:
    return faults_per_round_and_output(setup, **env)[0]


def faults_per_round_and_output(setup: str, **env: str) -> tuple[float, list[str]]:
    """The faults per round, and the lines `setup` printed before them (one fresh process for both)."""
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_ROUND.format(setup=setup)], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, env={**{k: v for k, v in os.environ.items() if "MALLOC" not in k
                                                        and k != "GLIBC_TUNABLES"}, **env})
    assert out.returncode == 0, out.stderr
    *printed, faults = out.stdout.strip().splitlines()
    return float(faults), printed


_WATCH_PYARROW = ("import os, sys\n"
                  "class Watch:\n"
                  "    seen = None\n"
                  "    def find_spec(self, name, path=None, target=None):\n"
                  "        if name == 'pyarrow' and Watch.seen is None:\n"
                  "            Watch.seen = os.environ.get('MIMALLOC_PURGE_DELAY', 'unset')\n"
                  "sys.meta_path.insert(0, Watch())\n")


@functools.cache
def _fresh_process(module: str) -> tuple[float, str, str]:
    """One fresh process without allocator settings per module, read by the tests below (a worker's or loader's
    import is ~2 CPU-s; suite36): faults per round after `import module` and pyarrow, MIMALLOC_PURGE_DELAY as pyarrow
    was first imported, and jemalloc's setting for polars."""
    faults, [line] = faults_per_round_and_output(
        _WATCH_PYARROW + f"import {module}\nimport pyarrow\nprint(Watch.seen, os.environ.get('_RJEM_MALLOC_CONF'))")
    seen, polars_setting = line.split()
    return faults, seen, polars_setting


def test_the_worker_process_reuses_freed_large_blocks():
    # the worker's module sets it when imported (the CLI's `worker` command imports it before anything runs)
    assert _fresh_process("streams.worker")[0] < 100
    # without it, glibc gives the freed top of its heap back each round: its ~2,200 pages fault in again
    assert faults_per_round("") > 1000


def test_an_operators_glibc_setting_wins():
    code = "from streams.allocator import keep_freed_memory; assert keep_freed_memory() is False"
    assert faults_per_round(code, MALLOC_TRIM_THRESHOLD_="0") > 1000
    assert faults_per_round(code, GLIBC_TUNABLES="glibc.malloc.trim_threshold=0") > 1000


def test_the_loader_process_keeps_freed_pages_of_both_allocators():
    # fast23: the loader's 100,000-row windows gave their pages back between windows (polars' jemalloc after
    # 0.5-1 s, glibc above its thresholds) and faulted them in again; its module sets both when imported, before
    # polars loads (`tokenmeter load` sets them first thing too)
    faults, _, polars_setting = _fresh_process("warehouse.loader")
    assert polars_setting.endswith("dirty_decay_ms:30000,muzzy_decay_ms:30000")  # polars reads the last value
    assert faults < 100


def _purge_delay_when_pyarrow_loads(module: str, **extra_env: str) -> list[str]:
    """In a fresh process without allocator settings: MIMALLOC_PURGE_DELAY as pyarrow is first imported after
    `import module`, and jemalloc's setting for polars after it."""
    code = (_WATCH_PYARROW + f"import {module}\n"
            "import pyarrow\n"
            "print(Watch.seen, os.environ.get('_RJEM_MALLOC_CONF'))")
    env = {k: v for k, v in os.environ.items() if "MALLOC" not in k and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={**env, **extra_env})
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_the_loader_process_sets_pyarrows_purge_delay_before_pyarrow_loads():
    # load26: pyarrow's mimalloc gave freed pages back after 10 ms, and each 100,000-row window's build faulted them
    # in again as huge pages the kernel zeroed (a third of the build's CPU in the loader's path). mimalloc reads
    # MIMALLOC_PURGE_DELAY when libarrow loads, so the loader's module must set it before pyarrow is imported.
    assert _fresh_process("warehouse.loader")[1] == "30000"
    # an operator's value wins
    assert _purge_delay_when_pyarrow_loads("warehouse.loader", MIMALLOC_PURGE_DELAY="10")[0] == "10"


def test_the_worker_process_sets_pyarrows_purge_delay_before_pyarrow_loads():
    # inproc34: a worker sending Arrow builds each chunk's priced table with pyarrow, whose mimalloc gave the freed
    # pages back after 10 ms; the next chunk faulted them in again as huge pages the kernel zeroed (~4 % of the
    # pricing thread's samples in `perf`). The worker's module sets the delay when imported, before pyarrow loads.
    _, seen, polars_setting = _fresh_process("streams.worker")
    assert seen == "30000"
    assert polars_setting.endswith("dirty_decay_ms:30000,muzzy_decay_ms:30000")  # polars reads the last value
    assert _purge_delay_when_pyarrow_loads("streams.worker", MIMALLOC_PURGE_DELAY="10")[0] == "10"  # an operator's wins
