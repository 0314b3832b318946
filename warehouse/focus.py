"""FOCUS 1.3 cost-and-usage rows and metadata for one billing month (https://focus.finops.org, FOCUS_Spec).

Grain: one charge per UTC day, group (`group_by` dimensions), host provider, model and SKU; a SKU is one priced
part of a model: the token kinds input (uncached), cached read, cache write (5 min / 1 h), output and
reasoning, the flat request price and each server-side tool fee. Token rows: ConsumedQuantity = tokens,
ConsumedUnit "Tokens", PricingQuantity = tokens / 1,000,000, PricingUnit "1000000 Tokens"; the part's details
(TokenDirection, TokenCacheAction, Model*) are in SkuPriceDetails, like the spec's AI model billing examples.

ServiceProviderName is the model's developer (Anthropic) and HostProviderName / InvoiceIssuerName the platform
that served and billed it (Amazon Web Services for Bedrock), so "Anthropic via Bedrock" is visible.

Shared-cost allocation (warehouse.allocation) is a data-generator-calculated split: an origin charge in a
rule's scope is replaced by one allocated charge per receiving team, with AllocatedMethodId (the rule's name),
AllocatedMethodDetails ({"Elements": [{AllocatedRatio, UsageUnit, UsageQuantity}]}), AllocatedResourceId /
AllocatedResourceName (the receiving team) and AllocatedTags; the split charges add up to the origin exactly.

Money: BilledCost = EffectiveCost = ListCost = ContractedCost = metered cost (negotiated overrides already in);
unit prices stay null (a month can hold several price versions). What FOCUS has no column for is an `x_`
column: cost center, GL account and owner, the token kind, events. FOCUS metadata (FocusVersion "1.3") cannot
live in a CSV; it is a JSON document delivered next to it (`focus_metadata`), as the spec's Schema metadata
("SHOULD be provided separately from the dataset artifact") allows.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson

from warehouse.charges import TOKEN_PARTS, UNITEMIZED
from warehouse.finance import FinanceConfig, allocated_charges, finance_as_closed
from warehouse.showback import TAG_PREFIX, check_dims, is_tag

FOCUS_VERSION = "1.3"
DATASET_INSTANCE_ID = "5b0f0a53-6c1e-5d0e-9a57-746f6b656e6d"  # fixed: the same dataset instance in every export
MILLION = Decimal(1_000_000)
STRING, DECIMAL, DATETIME, JSON = "String", "Decimal", "Date/Time", "JSON"
# Column -> FOCUS data type, in file order; x_ columns last.
COLUMN_TYPES: dict[str, str] = {
    "AllocatedMethodDetails": JSON, "AllocatedMethodId": STRING, "AllocatedResourceId": STRING,
    "AllocatedResourceName": STRING, "AllocatedTags": JSON,
    "BilledCost": DECIMAL, "BillingAccountId": STRING, "BillingAccountName": STRING, "BillingAccountType": STRING,
    "BillingCurrency": STRING, "BillingPeriodEnd": DATETIME, "BillingPeriodStart": DATETIME,
    "ChargeCategory": STRING, "ChargeClass": STRING, "ChargeDescription": STRING, "ChargeFrequency": STRING,
    "ChargePeriodEnd": DATETIME, "ChargePeriodStart": DATETIME, "ConsumedQuantity": DECIMAL,
    "ConsumedUnit": STRING, "ContractedCost": DECIMAL, "ContractedUnitPrice": DECIMAL, "EffectiveCost": DECIMAL,
    "HostProviderName": STRING, "InvoiceIssuerName": STRING, "ListCost": DECIMAL, "ListUnitPrice": DECIMAL,
    "PricingCategory": STRING, "PricingCurrency": STRING, "PricingQuantity": DECIMAL, "PricingUnit": STRING,
    "ProviderName": STRING, "PublisherName": STRING, "RegionId": STRING, "RegionName": STRING,
    "ResourceId": STRING, "ResourceName": STRING, "ResourceType": STRING, "ServiceCategory": STRING,
    "ServiceName": STRING, "ServiceProviderName": STRING, "ServiceSubcategory": STRING, "SkuId": STRING,
    "SkuMeter": STRING, "SkuPriceDetails": JSON, "SkuPriceId": STRING, "SubAccountId": STRING,
    "SubAccountName": STRING, "SubAccountType": STRING, "Tags": JSON,
    "x_CostCenter": STRING, "x_GlAccount": STRING, "x_CostCenterOwner": STRING, "x_TokenKind": STRING,
    "x_Events": DECIMAL, "x_UnpricedEvents": DECIMAL, "x_AllocatedFromTeam": STRING, "x_CorrectsMonth": STRING,
}
FOCUS_COLUMNS = tuple(COLUMN_TYPES)

# Platform (our provider id) -> the company that hosts and bills it.
HOSTS = {"openai": "OpenAI", "anthropic": "Anthropic", "bedrock": "Amazon Web Services", "azure": "Microsoft",
         "vertex_ai": "Google Cloud", "gemini": "Google", "mistral": "Mistral AI", "cohere": "Cohere",
         "groq": "Groq", "together": "Together AI", "fireworks": "Fireworks AI", "deepseek": "DeepSeek",
         "xai": "xAI", "dashscope": "Alibaba Cloud"}
SERVICES = {"bedrock": "Amazon Bedrock", "azure": "Azure OpenAI", "vertex_ai": "Vertex AI", "gemini": "Gemini API"}
# Model name marker -> developer, for models served by a platform that did not build them.
DEVELOPERS = (("claude", "Anthropic"), ("gpt", "OpenAI"), ("o1", "OpenAI"), ("o3", "OpenAI"), ("o4", "OpenAI"),
              ("gemini", "Google"), ("gemma", "Google"), ("llama", "Meta"), ("mistral", "Mistral AI"),
              ("mixtral", "Mistral AI"), ("command", "Cohere"), ("titan", "Amazon"), ("nova", "Amazon"),
              ("deepseek", "DeepSeek"), ("grok", "xAI"), ("qwen", "Alibaba Cloud"))
METERS = {"input": ("Input Tokens", "Input", "Uncached"), "cached_input": ("Cached Input Tokens", "Input", "Read"),
          "cache_write_5m": ("Cache Write Tokens (5 min)", "Input", "Write"),
          "cache_write_1h": ("Cache Write Tokens (1 h)", "Input", "Write"),
          "output": ("Output Tokens", "Output", None), "reasoning": ("Reasoning Tokens", "Output", None)}


def host_name(provider: str) -> str:
    return HOSTS.get(provider, provider)


def developer_name(provider: str, model: str) -> str:
    name = model.lower().rsplit("/", 1)[-1]
    for marker, developer in DEVELOPERS:
        if marker in name:
            return developer
    return host_name(provider)


def sku(provider: str, model: str, part: str) -> dict[str, Any]:
    """SkuId, SkuMeter, SkuPriceDetails and quantity/pricing units for one priced part of a model."""
    details: dict[str, Any] = {"ModelDeveloper": developer_name(provider, model), "ModelId": model}
    if part in METERS:
        meter, direction, cache = METERS[part]
        details["TokenDirection"] = direction
        if cache:
            details["TokenCacheAction"] = cache
        if part.startswith("cache_write"):
            details["x_CacheTtl"] = "5m" if part.endswith("5m") else "1h"
        units = ("Tokens", "1000000 Tokens", MILLION)
    elif part == UNITEMIZED:
        meter, units = "Unitemized", (None, None, None)
    elif part == "request":
        meter, units = "Requests", ("Requests", "Requests", Decimal(1))
    else:
        meter, units = f"{part} Requests", ("Requests", "1000 Requests", Decimal(1000))
        details["x_ToolKind"] = part
    details["x_Part"] = part
    return {"SkuId": f"{provider}/{model}/{part}", "SkuMeter": meter, "SkuPriceDetails": details, "units": units}


def _day(value: datetime) -> datetime:
    return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _json(value: dict[str, Any] | None) -> str | None:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode() if value is not None else None


def focus_rows(wh, config: FinanceConfig, start: datetime, end: datetime, group_by: list[str],
               team: str | None = None, closes=None) -> list[dict[str, Any]]:
    """FOCUS 1.3 rows (dicts keyed by FOCUS_COLUMNS) of [start, end) = one billing period; `closes`: the
    month-close directory (closed months frozen, corrections in the first open month)."""
    dims = check_dims(list(group_by), "group_by")
    config = finance_as_closed(config, closes, start, end)
    allocated = allocated_charges(wh, config, start, end, extra_dims=dims, closes=closes)
    rows = []
    for charge in allocated.charges:
        if charge.get("moved_out"):
            continue  # replaced by its allocated charges
        if team is not None and charge["team"] != team:
            continue
        rows.append(_row(charge, config, dims, start, end))
    rows.sort(key=lambda r: (r["ChargePeriodStart"], r["SubAccountId"] or "", r["SkuId"],
                             r["AllocatedResourceId"] or "", r["x_CorrectsMonth"] or ""))
    return rows


def _row(charge: dict[str, Any], config: FinanceConfig, dims: list[str], start, end) -> dict[str, Any]:
    provider, model, part = charge["provider"], charge["model"], charge["part"]
    group = {(d[len(TAG_PREFIX):] if is_tag(d) else d): charge.get(d) or "" for d in dims}
    if "origin_team" in charge and "team" in group:
        group["team"] = charge["origin_team"]  # the origin charge's group; the receiver is AllocatedResource*
    label = ",".join(f"{k}={v}" for k, v in group.items())
    unit = sku(provider, model, part)
    consumed_unit, pricing_unit, block = unit["units"]
    quantity = Decimal(charge["quantity"]) if consumed_unit else None
    cost = charge["cost"] if "origin_team" not in charge else charge["allocated"]
    center, account, owner = config.cost_center_of(charge)
    day = _day(charge["day"])
    host, developer = host_name(provider), unit["SkuPriceDetails"]["ModelDeveloper"]
    row: dict[str, Any] = {
        "AllocatedMethodDetails": None, "AllocatedMethodId": None, "AllocatedResourceId": None,
        "AllocatedResourceName": None, "AllocatedTags": None,
        "BilledCost": cost, "BillingAccountId": "tokenmeter", "BillingAccountName": "tokenmeter showback",
        "BillingAccountType": "Showback", "BillingCurrency": "USD",
        "BillingPeriodEnd": end, "BillingPeriodStart": start, "ChargeCategory": "Usage", "ChargeClass": None,
        "ChargeDescription": f"{unit['SkuMeter']} of {model} via {host}" + (f" for {label}" if label else ""),
        "ChargeFrequency": "Usage-Based", "ChargePeriodEnd": day + timedelta(days=1), "ChargePeriodStart": day,
        "ConsumedQuantity": quantity, "ConsumedUnit": consumed_unit, "ContractedCost": cost,
        "ContractedUnitPrice": None, "EffectiveCost": cost, "HostProviderName": host, "InvoiceIssuerName": host,
        "ListCost": cost, "ListUnitPrice": None, "PricingCategory": "Standard" if pricing_unit else None,
        "PricingCurrency": "USD", "PricingQuantity": quantity / block if quantity is not None else None,
        "PricingUnit": pricing_unit, "ProviderName": host, "PublisherName": developer, "RegionId": None,
        "RegionName": None, "ResourceId": f"{provider}/{model}", "ResourceName": model, "ResourceType": "Model",
        "ServiceCategory": "AI and Machine Learning", "ServiceName": SERVICES.get(provider, f"{host} API"),
        "ServiceProviderName": developer, "ServiceSubcategory": "Generative AI", "SkuId": unit["SkuId"],
        "SkuMeter": unit["SkuMeter"], "SkuPriceDetails": _json(unit["SkuPriceDetails"]),
        "SkuPriceId": unit["SkuId"], "SubAccountId": label or None, "SubAccountName": label or None,
        "SubAccountType": "+".join(dims) or None, "Tags": _json(group) if group else None,
        "x_CostCenter": center, "x_GlAccount": account, "x_CostCenterOwner": owner, "x_TokenKind": part,
        "x_Events": charge["events"], "x_UnpricedEvents": charge["unpriced_events"], "x_AllocatedFromTeam": None,
        "x_CorrectsMonth": charge.get("corrects") or None,
    }
    if charge.get("corrects"):  # a late change to a closed month, booked in this (open) billing period
        row["ChargeClass"] = "Correction"
        row["ChargeDescription"] = f"Correction for closed month {charge['corrects']}: {row['ChargeDescription']}"
    if part == UNITEMIZED:  # cost without a priced line: no SKU price, no quantity (spec: ConsumedQuantity)
        row.update({"ChargeCategory": "Adjustment", "SkuPriceId": None, "SkuPriceDetails": None,
                    "PricingCurrency": None})
    if "origin_team" in charge:
        basis = next(r for r in config.allocation if r.name == charge["rule"]).basis
        usage_unit = {"cost": "USD", "tokens": "Tokens", "fixed": "Shares"}[basis]
        row.update({
            "AllocatedMethodId": charge["rule"],
            "AllocatedMethodDetails": _json({"Elements": [{
                # Numeric per the spec (JSON numbers); the money itself stays exact in BilledCost.
                "AllocatedRatio": float(charge["ratio"]), "UsageUnit": usage_unit,
                "UsageQuantity": float(charge["basis_quantity"])}], "x_Basis": basis,
                "x_OriginCost": format(charge["origin_cost"], "f")}),
            "AllocatedResourceId": f"team/{charge['team']}", "AllocatedResourceName": charge["team"],
            "AllocatedTags": _json({"team": charge["team"], "x_CostCenter": center}),
            "x_AllocatedFromTeam": charge["origin_team"],
        })
    return row


def focus_metadata(columns: tuple[str, ...] = FOCUS_COLUMNS, *, created: datetime | None = None,
                   generator_version: str = "") -> dict[str, Any]:
    """FOCUS metadata of an export: the data generator and one Schema object with FocusVersion and the
    column definitions (spec: metadata/schema). SchemaId is a digest of the column definitions, so it
    changes exactly when the structure does."""
    definitions = [{"ColumnName": c, "DataType": COLUMN_TYPES[c],
                    **({"NumberScale": 12} if COLUMN_TYPES[c] == DECIMAL else {})} for c in columns]
    schema_id = hashlib.sha256(orjson.dumps([FOCUS_VERSION, definitions])).hexdigest()[:32]
    return {
        "DataGenerator": {"DataGenerator": "tokenmeter"},
        # 1.3: every dataset instance the generator delivers, tied to its FOCUS dataset (metadata/dataset_instance).
        "DatasetInstance": [{"DatasetInstanceId": DATASET_INSTANCE_ID, "FocusDatasetId": "CostAndUsage",
                             "DatasetInstanceName": "tokenmeter cost and usage, daily charges per SKU"}],
        "Schemas": [{
            "SchemaId": schema_id, "FocusVersion": FOCUS_VERSION, "DataGeneratorVersion": generator_version,
            "DatasetInstanceId": DATASET_INSTANCE_ID,
            "CreationDate": (created or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ColumnDefinition": definitions,
        }],
    }


def is_token_part(part: str) -> bool:
    return part in TOKEN_PARTS
