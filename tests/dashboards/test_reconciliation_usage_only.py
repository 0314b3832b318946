"""left24: the provider's usage report arrives before its cost report (OpenAI's costs come in daily buckets, usage
hourly; both lag). A day and model with usage buckets but no cost bucket yet was shown as "provider billed $0.00",
flagged as a 100 % difference, and counted into the headline totals as a $0 bill; it is "not reported" (None) now,
as a day with nothing at all already was, with the provider's token count still shown. Real chDB, no server."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from dash_seed import EXTRA_TABLES, _t, priced_events
from dashboards.access import ScopedWarehouse
from dashboards.reconciliation_data import reconcile, totals
from dashboards.users import Principal
from tokenmeter.settings import load_settings
from warehouse_template import empty_warehouse_in


def test_usage_without_a_cost_report_is_not_a_zero_bill(tmp_path, tmp_path_factory):
    from warehouse import open_warehouse

    wh = open_warehouse(load_settings(data_dir=empty_warehouse_in(tmp_path, tmp_path_factory)), writer=True, serve=False)
    try:
        now = datetime.now(timezone.utc)
        wh.insert_priced(priced_events(now))
        wh.backend.command(EXTRA_TABLES["provider_usage"])
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        day = f"{_t(today)}, {_t(today + timedelta(days=1))}"
        wh.backend.command(
            "INSERT INTO provider_usage (id, provider, kind, bucket_start, bucket_end, model, cost_usd, input_tokens,"
            f" output_tokens, fetched_at) VALUES ('pu-cost', 'openai', 'cost', {day}, 'gpt-4o', 0.333333333333,"
            f" 0, 0, {_t(now)}), ('pu-usage', 'openai', 'usage', {day}, 'gpt-4o-mini', 0, 5000, 500,"
            f" {_t(now)})")
        rows = {r.model: r for r in reconcile(ScopedWarehouse(wh, Principal("fin", "finance")), today, today + timedelta(days=1)) if r.provider == "openai"}
    finally:
        wh.close()
    mini = rows["gpt-4o-mini"]
    assert mini.ours_cost > 0 and mini.provider_tokens == 5500
    assert mini.provider_cost is None and mini.difference is None and not mini.flagged
    ours, theirs = totals(list(rows.values()))
    assert (ours, theirs) == (rows["gpt-4o"].ours_cost, Decimal("0.333333333333"))  # the billed model only
