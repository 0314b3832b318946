"""Write a span snapshot (a test's list of {name, kind, attributes}) as one OTLP/JSON resourceSpans record.

Some SDK tests pin their spans as attribute snapshots taken from a mock tracer that records no ids and no
times (vercel/ai packages/otel/src/open-telemetry.test.ts). This writes them the way an OTLP/JSON exporter
would: ids as hex, 64-bit ints as decimal strings, arrays as arrayValue. Span ids are numbered in snapshot
order (trace id and span ids given by the case's note), parents follow the `parent` index, and each span
starts at `start` (RFC 3339) + its `offset_ms` and lasts `duration_ms`.

    python tests/conformance/tools/otlp_from_snapshot.py snapshot.json > payload.json
"""

from __future__ import annotations

import json
import sys
from datetime import datetime


def any_value(value):
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [any_value(item) for item in value]}}
    return {"stringValue": str(value)}


def to_otlp(snapshot: dict) -> dict:
    start_ns = int(datetime.fromisoformat(snapshot["start"].replace("Z", "+00:00")).timestamp()) * 10**9
    spans = []
    for index, span in enumerate(snapshot["spans"], start=1):
        begin = start_ns + span.get("offset_ms", 0) * 10**6
        out = {"traceId": snapshot["trace_id"], "spanId": f"{index:016x}"}
        if span.get("parent"):
            out["parentSpanId"] = f"{span['parent']:016x}"
        out |= {"name": span["name"], "kind": span.get("kind", 1), "startTimeUnixNano": str(begin),
                "endTimeUnixNano": str(begin + span.get("duration_ms", 0) * 10**6),
                "attributes": [{"key": key, "value": any_value(value)} for key, value in span["attributes"].items()],
                "status": {}}
        spans.append(out)
    resource = [{"key": key, "value": any_value(value)} for key, value in snapshot.get("resource", {}).items()]
    return {"resourceSpans": [{"resource": {"attributes": resource},
                               "scopeSpans": [{"scope": snapshot["scope"], "spans": spans}]}]}


if __name__ == "__main__":
    print(json.dumps(to_otlp(json.loads(open(sys.argv[1]).read())), indent=1))
