"""The call keys of an event: the ids under which one LLM call seen by several sources (a gateway log, an OTel span,
an SDK event) is one call. The warehouse counts a call once by them (warehouse/dedup.py, which describes the keys);
the anomaly detector counts it once too (streams/anomalies/aggregate.py)."""

from __future__ import annotations


def call_keys(provider: str, correlation: dict[str, str] | None) -> list[str]:
    """The call keys of an event (sorted, no duplicates); [] when it carries no usable correlation id."""
    if not correlation:
        return []
    keys = set()
    response_id = (correlation.get("response_id") or "").strip()
    if response_id:
        keys.add(f"response:{provider.strip().lower()}:{response_id}")
    request_id = (correlation.get("request_id") or "").strip()
    if request_id:
        keys.add(f"request:{request_id.lower()}")
    trace_id, span_id = (correlation.get("trace_id") or "").strip(), (correlation.get("span_id") or "").strip()
    if trace_id and span_id and trace_id.strip("0") and span_id.strip("0"):  # all-zero ids are invalid in W3C
        keys.add(f"span:{trace_id.lower()}:{span_id.lower()}")
    return sorted(keys)
