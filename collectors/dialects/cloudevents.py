"""CloudEvents 1.0 in structured JSON mode: one event or a batch (a JSON array), as OpenMeter ingests them.

`id` is the idempotency key; CloudEvents makes `source` + `id` unique, so event_id = `<source>:<id>` (the same
event re-sent deduplicates; two producers both numbering from "00001" do not collide).
ts: `time`, else the event body's `ts`, else the time of reading. `data` (or base64 `data_base64`) holds either
- a canonical-like body: any UsageEvent fields (model, provider, usage, attribution, operation, status,
  latency_ms, ...), validated with the contract; envelope fields fill event_id/ts/source; or
- an OpenMeter-style token meter body `{tokens, model, type, provider?}`: type `input`/`prompt`/`system` ->
  usage.input_tokens = tokens; `output`/`completion` -> usage.output_tokens = tokens. Each such event is its own
  UsageEvent (an LLM call reported as input + output events counts as two requests).
provider: data.provider, else the mapping's `provider`, else implied by the model name.
Attribution defaults: extension attributes team/project/feature/org/user/apikey/route, then data.<dim>;
user falls back to `subject` (OpenMeter's metered entity), project to `source`.
Versions covered: CloudEvents 1.0 structured mode (single and batch). Cannot carry: in OpenMeter-style bodies the
cache and reasoning split (and a body without `type` cannot tell input from output: dead-lettered).
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from collectors.attribution import AttributionMapping, RecordView
from collectors.coerce import as_dict, to_datetime, to_str, to_tokens
from collectors.dialects.base import Dialect, make_event, now_utc, require_object
from collectors.dialects.common import count_lost_zero_usage
from collectors.errors import DialectError, join_path
from collectors.providers import guess_provider, normalize_provider
from tokenmeter.events import UsageEvent

NAME = "cloudevents"
_INPUT_TYPES = {"input", "prompt", "system"}
_OUTPUT_TYPES = {"output", "completion"}
_ENVELOPE_ONLY = {"event_id"}


def _data(envelope: dict[str, Any], path: str) -> dict[str, Any]:
    data = envelope.get("data")
    if data is None and envelope.get("data_base64") is not None:
        try:
            data = base64.b64decode(envelope["data_base64"], validate=True)
        except (ValueError, TypeError):
            raise DialectError("not valid base64", join_path(path, "data_base64")) from None
    if isinstance(data, (bytes, str)):
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise DialectError("expected a JSON object, got text that is not JSON", join_path(path, "data")) from None
    if data is None:
        raise DialectError("missing data", path or None)
    return as_dict(data, join_path(path, "data"), optional=False)


def _provider(data: dict[str, Any], model: Any, mapping: AttributionMapping, path: str) -> str:
    name = to_str(data.get("provider"), join_path(path, "data.provider")) or mapping.provider
    provider = normalize_provider(name) or guess_provider(model if isinstance(model, str) else None)
    if not provider:
        raise DialectError(f"no provider for model {model!r}: add data.provider or set `provider` in the mapping",
                           join_path(path, "data.provider"))
    return provider


def _meter_usage(data: dict[str, Any], path: str) -> dict[str, int]:
    tokens = to_tokens(data.get("tokens"), join_path(path, "data.tokens"))
    kind = data.get("type")
    if not isinstance(kind, str) or kind.lower() not in _INPUT_TYPES | _OUTPUT_TYPES:
        raise DialectError(f"expected one of input, prompt, system, output, completion; got {kind!r}",
                           join_path(path, "data.type"))
    return {"input_tokens": tokens} if kind.lower() in _INPUT_TYPES else {"output_tokens": tokens}


def parse_envelope(envelope: Any, mapping: AttributionMapping, path: str) -> list[UsageEvent]:
    envelope = require_object(envelope, path, "CloudEvent")
    spec = envelope.get("specversion")
    if spec is not None and not str(spec).startswith("1."):
        raise DialectError(f"unsupported CloudEvents version {spec!r}", join_path(path, "specversion"))
    ce_id = to_str(envelope.get("id"), join_path(path, "id"))
    ce_source = to_str(envelope.get("source"), join_path(path, "source"))
    if not ce_id:
        raise DialectError("missing id (the idempotency key)", join_path(path, "id"))
    if not ce_source:
        raise DialectError("missing source", join_path(path, "source"))
    data = _data(envelope, path)
    ts = to_datetime(envelope.get("time"), join_path(path, "time"))
    view = RecordView(envelope)

    if "tokens" in data:  # OpenMeter token meter
        model = to_str(data.get("model"), join_path(path, "data.model"))
        if not model:
            raise DialectError("missing model", join_path(path, "data.model"))
        return [make_event(
            path,
            event_id=f"{ce_source}:{ce_id}",
            ts=ts or now_utc(),
            source=NAME,
            provider=_provider(data, model, mapping, path),
            model=model,
            attribution=mapping.resolve(NAME, view),
            usage=_meter_usage(data, path),
        )]

    body = {k: v for k, v in data.items() if k not in _ENVELOPE_ONLY}
    body["event_id"] = f"{ce_source}:{ce_id}"
    body["ts"] = ts or to_datetime(data.get("ts"), join_path(path, "data.ts")) or now_utc()
    body.setdefault("source", NAME)
    body["provider"] = _provider(data, data.get("model"), mapping, path)
    native = data.get("attribution")
    body["attribution"] = mapping.resolve(NAME, view, native=as_dict(native, join_path(path, "data.attribution")))
    try:
        return [count_lost_zero_usage(make_event("", **body))]  # zeros beside content: a lost count, as canonical
    except DialectError as exc:
        raise DialectError(exc.reason.replace("invalid event: ", "invalid event in data: "),
                           join_path(path, "data")) from None


DIALECT = Dialect(NAME, "CloudEvents (single or batch) with canonical-like or OpenMeter-style token data",
                  parse_envelope)
