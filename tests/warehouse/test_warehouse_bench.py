"""bench_warehouse on a small generated month (own process: chDB allows one open path per process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.slow(seconds=10)  # rough seconds: longest files first (tests/suite_order.py)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys, orjson
from warehouse.bench import bench_warehouse
print(orjson.dumps(bench_warehouse(sys.argv[1], rows=30_000, load_rows=3_000, repeats=1)).decode())
"""


def test_bench_reports_query_latency_and_load_throughput(tmp_path):
    # the loader's window setting, which the bench times unless told otherwise
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENMETER_LOAD_BATCH_ROWS="1000")
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, capture_output=True, timeout=180)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    figures = orjson.loads(result.stdout)
    assert figures["table_rows"]["priced_events"] == 30_000
    assert figures["load_rows_stored"] == 3_000 and figures["load_batch_rows"] == 1_000
    assert figures["query_p95_ms"] >= figures["query_p50_ms"] > 0 and figures["load_rows_per_s"] > 0
    assert figures["load_rows_per_cpu_s"] > 0
    assert {"cost_by_team_and_status", "cost_by_tag", "model_stats", "reconciliation"} <= set(figures["queries_p95_ms"])
    # the loader's own path from message bytes (decode, build, store), every row stored, none dead-lettered
    assert figures["load_path_rows_stored"] == 3_000 and figures["load_path_rows_per_s"] > 0
    assert set(figures["load_path_cpu_us_per_row"]) == {"decode", "build", "store"}
    # the same events as Arrow messages (TOKENMETER_PRICED_FORMAT=arrow): stored too, none dead-lettered
    assert figures["load_path_arrow_rows_stored"] == 3_000 and figures["load_path_arrow_rows_per_s"] > 0
    assert set(figures["load_path_arrow_cpu_us_per_row"]) == {"decode", "build", "store"}
    assert not (tmp_path / "bench-warehouse").exists()  # removed afterwards


def test_the_bench_month_names_only_models_the_bundled_catalog_prices_except_its_one_unknown():
    """The month re-priced by `app.bench_reprice` must be priced work: a model name the catalog does not know
    re-prices to unpriced (no price lookup, no cost lines), so the bench would measure less work than real traffic.
    Only `acme-internal-llm-v2` is meant to be unknown (the month's 2 % unpriced)."""
    import re

    from streams.pricing.book import load_price_book
    from warehouse.bench import MODELS

    book = load_price_book()
    pairs = [tuple(re.findall(r"'([^']*)'", m)) for m in MODELS]
    unknown = [f"{p}/{m}" for p, m in pairs if book.resolve(p, m).entry is None]
    assert unknown == ["acme/acme-internal-llm-v2"]
