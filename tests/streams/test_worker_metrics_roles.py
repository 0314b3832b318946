"""trust35: a pricing-role worker (no budget owner, docs/production.md "Worker roles") served
`tokenmeter_budget_alerts_total 0` and `tokenmeter_decision_requests_total 0`, a budgets-role worker
`tokenmeter_worker_events_total 0` and the other pricing counters: a dashboard summing or alerting per replica
read a role's silence as a real zero. Each role now serves the families of what it runs, and says its role in
`tokenmeter_worker_info{role=...}`; read from the workers' real /metrics."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from process_support import http_status, start_worker, stop, wait_for
from test_worker_metrics_format import _families, _metrics

from tokenmeter.settings import free_port

pytestmark = pytest.mark.slow(seconds=15)
ROOT = Path(__file__).resolve().parents[2]
PRICING = {"tokenmeter_worker_events_total", "tokenmeter_worker_priced_total", "tokenmeter_worker_deadletter_total",
           "tokenmeter_worker_refused_batches_total", "tokenmeter_worker_usage_assumed_total"}
OWNER = {"tokenmeter_budget_alerts_total", "tokenmeter_decision_requests_total"}
SHARED = {"tokenmeter_worker_agent_errors_total", "tokenmeter_worker_agents_failing", "tokenmeter_budgets"}


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    """A pricing worker adopts role all's usage offsets and prices what it finds: not the session broker's usage."""
    return own_broker


def test_each_role_serves_the_metric_families_of_what_it_runs(kafka_bootstrap, tmp_path):
    workers = {}
    try:
        for role in ("pricing", "budgets"):
            port = free_port()
            env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENMETER_KAFKA_BOOTSTRAP=kafka_bootstrap,
                       TOKENMETER_DATA_DIR=str(tmp_path / role), TOKENMETER_API_PORT=str(port),
                       TOKENMETER_WORKER_ROLE=role)
            workers[role] = (port, start_worker(env, tmp_path / f"{role}.log"))
        for role, (port, _) in workers.items():
            wait_for(lambda port=port: http_status(f"http://127.0.0.1:{port}/health") == 200, timeout=90,
                     what=f"the {role} worker healthy")
        texts = {role: _metrics(port) for role, (port, _) in workers.items()}
    finally:
        for _, proc in workers.values():
            stop(proc)
    pricing, budgets = (set(_families(texts[r])[0]) for r in ("pricing", "budgets"))
    assert PRICING | SHARED <= pricing and not OWNER & pricing, sorted(pricing)
    assert OWNER | SHARED <= budgets and not PRICING & budgets, sorted(budgets)
    for role, text in texts.items():
        assert f'tokenmeter_worker_info{{role="{role}"}} 1' in text.splitlines(), text
