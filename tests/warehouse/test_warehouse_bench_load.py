"""`python -m warehouse.bench_load` options of issue 14 (loader6) on a tiny batch (own process: chDB allows one open
path per process): the insert settings compared, and the three JSON decoders timed over the same messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.slow(seconds=15)  # rough seconds: longest files first (tests/suite_order.py)

REPO = Path(__file__).resolve().parents[2]


def test_insert_settings_and_decoders_report_per_row_figures():
    result = subprocess.run([sys.executable, "-m", "warehouse.bench_load", "--rows", "200", "--batch", "200",
                             "--no-paths", "--insert-settings", "--decoders", "--repeats", "2"],
                            env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, timeout=180, cwd=REPO)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    figures = orjson.loads(result.stdout)
    assert "paths" not in figures
    for merges in ("merges running", "merges stopped"):
        variants = figures["insert_settings"][merges]
        assert set(variants) == {"chDB defaults", "optimize_on_insert=0", "optimize_on_insert=0, max_threads=1"}
        assert all(v["cpu_us_per_row"] >= 0 and v["wall_us_per_row"] > 0 for v in variants.values())
    assert set(figures["decoders_cpu_us_per_row"]) == {"orjson (dicts)", "chdb JSONEachRow (typed columns)",
                                                       "pyarrow.json (explicit schema, 1 thread)"}
