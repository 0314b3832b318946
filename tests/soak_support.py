"""Running the soak from a test so that a failure can be debugged from its message alone (soak35): CI's tmp dirs
are gone with its machine (soak34 had up.log and the collectors' logs, and no worker or loader log), so the message
names the seed, the commands that re-run that exact soak, where its logs are (under pytest's tmp_path, which
pytest keeps for its last 3 runs) and the last lines of each."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED_ENV = "TOKENMETER_SOAK_SEED"  # re-runs the test's soak with that seed
LOG_LINES = 6  # last lines of each log in a failure message
LINE_CHARS = 300


@dataclass
class SoakRun:
    seed: int
    args: list[str]  # after `python -m app soak`, without --json and --data-dir
    base: Path  # the soak's --data-dir: its logs/, the stack's data/logs/
    result: dict | None  # the JSON result; None when the soak printed none (crashed, or timed out)
    returncode: int | None
    stderr: str

    def failed_checks(self) -> list[str]:
        if self.result is None:
            return [f"the soak gave no result (exit {self.returncode})"]
        return [f"{c['name']}: {c['summary']} {json.dumps(c['details'], default=str)[:800]}"
                for c in self.result["checks"] if not c["ok"]]


def pick_seed() -> int:
    """The seed of this run: TOKENMETER_SOAK_SEED when set (a replay), else a fresh one, chosen here so that even a
    soak that prints nothing can be replayed."""
    return int(os.environ.get(SEED_ENV) or random.randrange(1 << 30))


def run_soak(base: Path, args: list[str], timeout: float, seed: int | None = None) -> SoakRun:
    seed = pick_seed() if seed is None else seed
    args = [*args, "--seed", str(seed)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "app", "soak", *args, "--json", "--data-dir", str(base)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the soak and its stack (children die with `up`: PDEATHSIG)
        stdout, stderr = proc.communicate()
        stderr += f"\n(killed after {timeout:.0f} s: past the soak's own time budget)"
    (base / "soak-stdout.json").write_text(stdout)  # the whole result, for a post-mortem beside the logs
    try:
        result = json.loads(stdout)
    except ValueError:
        result = None
    return SoakRun(seed, args, base, result, proc.returncode, stderr)


def log_tails(base: Path, lines: int = LOG_LINES) -> str:
    """Each log of the soak (its logs/: up, collectors) and of the stack (data/logs/: worker, loader, broker, ...)
    with its path and last lines."""
    out = []
    for path in sorted([*base.glob("logs/*.log"), *base.glob("data/logs/*.log")]):
        try:
            tail = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError as exc:
            tail = [f"(unreadable: {exc})"]
        out.append(f"--- {path} (last {len(tail)} lines)")
        out += [line[:LINE_CHARS] for line in tail]
    return "\n".join(out) or f"(no logs under {base})"


def failure_report(run: SoakRun, problems: list[str]) -> str:
    """What a failed soak test says: the problems, the seed and how to replay it, and the logs."""
    rerun = " ".join(run.args)
    result = run.result or {}
    drain = result.get("drain") or {}
    return "\n".join([
        *problems,
        *([f"the wait after the traffic: {drain.get('outcome')} after {drain.get('waited_s')} s"
           + (f": {drain['why']}" if drain.get("why") else "")] if drain else []),
        *(f"a clean stop left records in the broker: {loss}" for loss in result.get("stop_losses") or []),
        f"soak seed {run.seed}; replay it with",
        f"  {SEED_ENV}={run.seed} .venv/bin/python -m pytest tests/test_soak.py::test_three_cycle_soak_passes_every_check",
        f"  PYTHONPATH=. .venv/bin/python -m app soak {rerun} --data-dir /tmp/soak-{run.seed}",
        *(["soak stderr (last lines):", *run.stderr.strip().splitlines()[-10:]] if run.stderr.strip() else []),
        f"logs (kept under pytest's tmp_path): {run.base}",
        log_tails(run.base)])
