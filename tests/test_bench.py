"""`tokenmeter bench` runs its three measurements and reports them (figures are not asserted: speed is measured
by the benchmark, not by tests)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow(seconds=40)  # rough seconds: longest files first (tests/suite_order.py)
ROOT = Path(__file__).resolve().parents[1]


def test_bench_json_reports_all_figures(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENMETER_DATA_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "app", "bench", "--events", "400", "--json",
                          "--alert-samples", "5", "--warehouse-rows", "5000"], env=env,
                         capture_output=True, text=True, timeout=420)
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    # issue 14's in-process figure, in the format a worker sends (Arrow by default)
    assert figures["in_process_events_per_s"] > 0 and figures["in_process_format"] == "arrow"
    assert figures["in_process_cpu_us_per_event"] > 0 and figures["in_process_cold_cpu_us_per_event"] > 0
    for key in ("raw_events_per_s", "naive_events_per_s", "pipeline_events_per_s", "peak_rss_mb",
                "pipeline_vs_naive", "pipeline_vs_raw", "collector_min_vs_raw", "collector_min_vs_pipeline"):
        assert figures[key] > 0, key
    # (c) stays the first round; three rounds on one worker and their median beside it (worker26)
    rounds = figures["pipeline_events_per_s_rounds"]
    assert len(rounds) == 3 and min(rounds) > 0 and figures["pipeline_events_per_s"] == rounds[0]
    assert abs(figures["pipeline_events_per_s_median"] - sorted(rounds)[1]) <= 1
    assert set(figures["collectors_events_per_s"]) == {"kong", "apisix", "litellm", "otel", "canonical"}
    assert set(figures["collectors_cpu_events_per_s"]) == {"kong", "apisix", "litellm", "otel", "canonical"}
    assert figures["events"] == 400
    for key in ("alert_latency_p99_ms", "decision_latency_p99_ms", "query_p95_ms", "load_rows_per_s",
                "reserve_latency_p50_ms", "reserve_latency_p99_ms", "reserve_requests_per_s", "reserve_worker_cpu_ms",
                "reserve_round_trip_p99_ms", "reserve_client_cpu_ms"):
        assert figures[key] > 0, key
    # every bench reservation was answered 201: before, the bench started once any 201 came back, which the
    # worker gives (holding nothing) before it has read the bench budget; its restore then answered 503s
    assert figures["reserve_failures"] == 0, figures["reserve_failures_by_status"]
    # the split of the reservation latency (reserve7): the worker's time per request from its Server-Timing header,
    # the worker's event-loop lag and GC, and its CPU with no reservation coming
    assert figures["reserve_open_loop_server_p99_ms"] > 0 and figures["reserve_worker_loop_lag_p99_ms"] >= 0
    assert len(figures["reserve_open_loop_gc_collections"]) == 3 and figures["reserve_worker_background_cpu_pct"] >= 0
