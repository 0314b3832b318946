"""FOCUS 1.3 export checked against the spec's column rules, with cost centers and shared-cost allocation, by
running `tokenmeter export` and `tokenmeter report` as separate processes on a real chDB warehouse.

The rules below are transcribed from the FOCUS specification (FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec,
specification/datasets/cost_and_usage/columns/*.md and specification/metadata/schema/focus_version.md,
release 1.3); each rule names the column file it comes from."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from warehouse.focus import FOCUS_COLUMNS

pytestmark = pytest.mark.slow(seconds=14)  # rough seconds: longest files first (tests/suite_order.py)

REPO = Path(__file__).resolve().parents[2]
ORG = "focus-org"

# Mandatory columns of the Cost and Usage dataset (column files with "Feature level | Mandatory") plus the
# conditional ones our data triggers (Includes Usage Measurement -> ConsumedQuantity/ConsumedUnit; price lists
# -> SkuId/SkuPriceId/SkuPriceDetails/SkuMeter; split cost allocation -> Allocated*, new in 1.3).
REQUIRED = ("BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
            "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargePeriodEnd",
            "ChargePeriodStart", "ContractedCost", "EffectiveCost", "HostProviderName", "InvoiceIssuerName",
            "ListCost", "PricingQuantity", "PricingUnit", "ServiceCategory", "ServiceName", "ServiceProviderName",
            "ConsumedQuantity", "ConsumedUnit", "SkuId", "SkuPriceId", "SkuPriceDetails", "SkuMeter",
            "AllocatedMethodId", "AllocatedMethodDetails", "AllocatedResourceId", "AllocatedResourceName",
            "AllocatedTags")
# Not null (content constraint "Allows nulls | False"): billedcost.md, billingcurrency.md, chargecategory.md,
# chargeperiodstart.md / end, billingperiodstart.md / end, effectivecost.md, listcost.md, contractedcost.md,
# invoiceissuername.md, servicecategory.md, servicename.md, serviceprovidername.md, hostprovidername.md.
NOT_NULL = ("BilledCost", "BillingAccountId", "BillingCurrency", "BillingPeriodStart", "BillingPeriodEnd",
            "ChargeCategory", "ChargePeriodStart", "ChargePeriodEnd", "ContractedCost", "EffectiveCost", "ListCost",
            "InvoiceIssuerName", "ServiceCategory", "ServiceName", "ServiceProviderName", "HostProviderName")
DECIMALS = ("BilledCost", "ContractedCost", "EffectiveCost", "ListCost", "ConsumedQuantity", "PricingQuantity",
            "ListUnitPrice", "ContractedUnitPrice")  # "Data type | Decimal" (NumericFormat: no exponent)
DATETIMES = ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd")
# Allowed values tables: chargecategory.md, chargeclass.md, chargefrequency.md, pricingcategory.md.
ALLOWED = {"ChargeCategory": {"Usage", "Purchase", "Tax", "Credit", "Adjustment"}, "ChargeClass": {"", "Correction"},
           "ChargeFrequency": {"One-Time", "Recurring", "Usage-Based"},
           "PricingCategory": {"", "Standard", "Dynamic", "Committed", "Other"}}
DATETIME_FORMAT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")  # DateTimeFormat: ISO 8601, UTC, "Z"
NUMERIC_FORMAT = re.compile(r"^-?\d+(\.\d+)?$")  # NumericFormat: no exponent, no thousands separators
PASCAL = re.compile(r"^[A-Z][A-Za-z0-9]*$")
CUSTOM = re.compile(r"^x_[A-Za-z0-9]+$")  # ColumnNamingAndOrdering: custom columns prefixed "x_"

FINANCE = """
cost_centers:
  - match: {team: search}
    cost_center: CC-1100
    gl_account: 6400
    owner: search-lead@example.com
  - match: {project: checkout}
    cost_center: CC-2100
    gl_account: "6410"
    owner: payments@example.com
allocation:
  - name: platform-shared
    scope: {team: platform}
    basis: cost
  - name: untagged-usage
    scope: {team: ""}
    basis: fixed
    shares: {search: 2, ads: 1}
    remainder_to: ads
"""


def _event(i: int, team: str, *, project: str = "", provider: str = "openai", model: str = "gpt-4o",
           day: int = 1, cost_lines: dict[str, str] | None = None) -> dict:
    lines = cost_lines or {"input": f"0.00{i + 1}000000001", "cached_input": "0.000000000333",
                           "output": "0.0004", "reasoning": "0.000100000007"}
    return {
        "event_id": f"focus-{i}", "ts": f"2025-07-{day:02d}T1{i % 10}:00:00Z", "source": "test",
        "provider": provider, "model": model,
        "attribution": {"org": ORG, "team": team, "project": project, "tags": {"env": "prod"}},
        "usage": {"input_tokens": 1200 + i, "cached_input_tokens": 200, "cache_write_tokens": 100,
                  "output_tokens": 300, "reasoning_tokens": 50, "tool_requests": {"web_search": 1}},
        "tokens_source": "provider", "pricing_status": "priced", "priced_at": "2025-07-01T00:00:00Z",
        "cost_usd": str(sum(Decimal(v) for v in lines.values())), "cost_breakdown": lines,
        "price": {"entry": f"{provider}/{model}", "effective_from": "2025-01-01", "catalog_version": "t"},
    }


@pytest.fixture
def july(wh):
    bedrock = {"input": "0.003000000001", "cache_write_5m": "0.000375", "cached_input": "0.00006",
               "output": "0.0045", "reasoning": "0.00075", "web_search": "0.01"}
    events = [_event(0, "search", day=1), _event(1, "search", project="checkout", day=2),
              _event(2, "ads", day=3), _event(3, "ads", provider="bedrock",
                                              model="anthropic.claude-sonnet-4-20250514-v1:0", day=3,
                                              cost_lines=bedrock),
              _event(4, "platform", day=4), _event(5, "platform", day=30), _event(6, "", day=31)]
    wh.insert_priced(events)
    return events


def _cli(settings, finance_file: Path, *args: str) -> bytes:
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENMETER_DATA_DIR=str(settings.data_dir),
               TOKENMETER_COST_CENTERS_FILE=str(finance_file))
    result = subprocess.run([sys.executable, "-m", "app", *args], env=env, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def _check_spec_rules(rows: list[dict[str, str]], columns: list[str]) -> None:
    for name in REQUIRED:
        assert name in columns, f"required column {name} missing"
    for name in columns:
        assert PASCAL.match(name) or CUSTOM.match(name), f"column {name}: not PascalCase nor x_"
    for row in rows:
        for name in NOT_NULL:
            assert row[name] != "", f"{name} is null in {row}"
        for name in DECIMALS:
            assert row[name] == "" or NUMERIC_FORMAT.match(row[name]), f"{name}={row[name]!r} not NumericFormat"
        for name in DATETIMES:
            assert DATETIME_FORMAT.match(row[name]), f"{name}={row[name]!r} not DateTimeFormat"
        for name, allowed in ALLOWED.items():
            assert row[name] in allowed, f"{name}={row[name]!r} not an allowed value"
        assert re.fullmatch(r"[A-Z]{3}", row["BillingCurrency"])  # billingcurrency.md: ISO 4217
        # chargeperiodstart.md / chargeperiodend.md: inclusive start, exclusive end; within the billing period,
        # except a correction of a closed period (appendix correction_handling_examples/closed_billing_period).
        assert row["ChargePeriodStart"] < row["ChargePeriodEnd"]
        if row["ChargeClass"] != "Correction":
            assert row["BillingPeriodStart"] <= row["ChargePeriodStart"] < row["ChargePeriodEnd"] <= row["BillingPeriodEnd"]
        else:
            assert row["ChargePeriodEnd"] <= row["BillingPeriodStart"]
        usage = row["ChargeCategory"] == "Usage" and row["ChargeClass"] != "Correction"
        # consumedquantity.md: null when SkuPriceId null or not Usage; not null for Usage (not Correction).
        if row["SkuPriceId"] == "" or row["ChargeCategory"] != "Usage":
            assert row["ConsumedQuantity"] == ""
        elif row["ChargeClass"] != "Correction":  # MAY be null for a correction
            assert row["ConsumedQuantity"] != ""
        assert (row["ConsumedUnit"] != "") == (row["ConsumedQuantity"] != "")  # consumedunit.md
        # pricingquantity.md / pricingunit.md: not null for Usage or Purchase not Correction; null if no SkuPriceId.
        if usage:
            assert row["PricingQuantity"] != "" and row["PricingUnit"] != ""
        if row["SkuPriceId"] == "":
            assert row["PricingQuantity"] == "" and row["SkuPriceDetails"] == ""  # skupricedetails.md
        if row["SkuPriceDetails"]:  # KeyValueFormat; keys PascalCase or x_
            details = orjson.loads(row["SkuPriceDetails"])
            assert isinstance(details, dict) and all(PASCAL.match(k) or CUSTOM.match(k) for k in details)
        # allocatedmethodid.md: null iff the charge is not a split cost allocation; allocatedmethoddetails.md:
        # JSON object with Elements [{AllocatedRatio, UsageUnit, UsageQuantity}]; allocatedresourceid.md,
        # allocatedtags.md: set with the method.
        allocated = row["AllocatedMethodId"] != ""
        for name in ("AllocatedMethodDetails", "AllocatedResourceId", "AllocatedResourceName", "AllocatedTags"):
            assert (row[name] != "") == allocated, f"{name} vs AllocatedMethodId in {row}"
        if allocated:
            details = orjson.loads(row["AllocatedMethodDetails"])
            assert isinstance(details["Elements"], list) and details["Elements"]
            for element in details["Elements"]:
                assert isinstance(element["AllocatedRatio"], float) and 0 < element["AllocatedRatio"] <= 1
                assert element["UsageUnit"] and isinstance(element["UsageQuantity"], (int, float))
            assert isinstance(orjson.loads(row["AllocatedTags"]), dict)
        if row["Tags"]:
            assert isinstance(orjson.loads(row["Tags"]), dict)  # tags.md: KeyValueFormat


def test_focus_13_export_follows_the_spec_and_equals_the_report(warehouse_settings, wh, july, tmp_path):
    finance = tmp_path / "finance.yaml"
    finance.write_text(FINANCE)
    out = tmp_path / "focus.csv"
    _cli(warehouse_settings, finance, "export", "--month", "2025-07", "--format", "focus", "--out", str(out),
         "--group-by", "org,team")
    text = out.read_text()
    reader = csv.DictReader(io.StringIO(text))
    rows = [r for r in reader if orjson.loads(r["Tags"])["org"] == ORG]
    assert tuple(reader.fieldnames) == FOCUS_COLUMNS
    _check_spec_rules(rows, list(reader.fieldnames))

    # metadata/schema/focus_version.md: FocusVersion in the Schema metadata, a String, "1.3".
    meta = orjson.loads(Path(f"{out}.metadata.json").read_bytes())
    assert meta["Schemas"][0]["FocusVersion"] == "1.3"
    # metadata/dataset_instance (1.3): DatasetInstance objects with DatasetInstanceId and FocusDatasetId.
    instance = meta["DatasetInstance"][0]
    assert instance["DatasetInstanceId"] and instance["FocusDatasetId"] == "CostAndUsage"
    assert meta["Schemas"][0]["DatasetInstanceId"] == instance["DatasetInstanceId"]
    assert [c["ColumnName"] for c in meta["Schemas"][0]["ColumnDefinition"]] == list(FOCUS_COLUMNS)

    report = orjson.loads(_cli(warehouse_settings, finance, "report", "--group-by", "org", "--since", "2025-07-01",
                               "--until", "2025-08-01", "--format", "json"))
    metered = next(Decimal(r["cost_usd"]) for r in report if r["org"] == ORG)
    assert sum(Decimal(r["BilledCost"]) for r in rows) == metered == sum(Decimal(e["cost_usd"]) for e in july)
    assert sum(int(r["x_Events"]) for r in rows) == len(july)

    # One SKU per token kind: tokens as ConsumedQuantity, priced per million; no cached token counted twice.
    bedrock = [r for r in rows if r["ResourceId"].startswith("bedrock/")]
    kinds = {r["x_TokenKind"]: r for r in bedrock}
    assert {"input", "cached_input", "cache_write_5m", "output", "reasoning", "web_search"} <= set(kinds)
    assert kinds["input"]["ConsumedQuantity"] == "903"  # 1203 - 200 cached - 100 cache writes
    assert kinds["cached_input"]["PricingQuantity"] == "0.0002" and kinds["input"]["PricingUnit"] == "1000000 Tokens"
    assert orjson.loads(kinds["cached_input"]["SkuPriceDetails"])["TokenCacheAction"] == "Read"
    assert orjson.loads(kinds["output"]["SkuPriceDetails"])["TokenDirection"] == "Output"
    assert kinds["web_search"]["ConsumedUnit"] == "Requests"
    # Anthropic via Bedrock.
    assert {r["ServiceProviderName"] for r in bedrock} == {"Anthropic"}
    assert {r["HostProviderName"] for r in bedrock} == {r["InvoiceIssuerName"] for r in bedrock} == {"Amazon Web Services"}

    # Allocation: platform's and the untagged spend are split over search and ads; ratios of one origin sum to 1.
    allocated = [r for r in rows if r["AllocatedMethodId"]]
    assert {r["AllocatedMethodId"] for r in allocated} == {"platform-shared", "untagged-usage"}
    assert {r["AllocatedResourceName"] for r in allocated} == {"search", "ads"}
    assert {r["x_AllocatedFromTeam"] for r in allocated} == {"platform", ""}
    origins: dict[tuple, Decimal] = {}
    for r in allocated:
        key = (r["ChargePeriodStart"], r["SkuId"], r["x_AllocatedFromTeam"])
        origins[key] = origins.get(key, Decimal(0)) + Decimal(
            str(orjson.loads(r["AllocatedMethodDetails"])["Elements"][0]["AllocatedRatio"]))
    assert origins and all(abs(total - 1) < Decimal("1e-9") for total in origins.values())
    untagged = [r for r in allocated if r["AllocatedMethodId"] == "untagged-usage"]
    assert {r["AllocatedResourceName"]: orjson.loads(r["AllocatedMethodDetails"])["Elements"][0]["UsageUnit"]
            for r in untagged} == {"search": "Shares", "ads": "Shares"}
    # Cost centers: search's own rows, the checkout project, allocated shares by receiving team; rest unmapped.
    centers = {(orjson.loads(r["Tags"])["team"], r["AllocatedResourceName"], r["x_CostCenter"]) for r in rows}
    assert ("search", "", "CC-1100") in centers and ("ads", "", "unmapped") in centers
    assert ("platform", "search", "CC-1100") in centers and ("platform", "ads", "unmapped") in centers
    checkout = [r for r in rows if r["ChargePeriodStart"].startswith("2025-07-02")]
    assert {r["x_CostCenter"] for r in checkout} == {"CC-2100"} and {r["x_GlAccount"] for r in checkout} == {"6410"}


def test_focus_export_is_reproducible(warehouse_settings, wh, july, tmp_path):
    finance = tmp_path / "finance.yaml"
    finance.write_text(FINANCE)
    first = _cli(warehouse_settings, finance, "export", "--month", "2025-07", "--format", "focus")
    assert first == _cli(warehouse_settings, finance, "export", "--month", "2025-07", "--format", "focus")
