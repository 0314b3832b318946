"""`tokenmeter collect http`: an HTTP ingest endpoint that writes canonical events to Kafka.

Routes
    POST /v1/events          canonical event (object), batch (array) or JSON lines (application/x-ndjson);
                             CloudEvents (application/cloudevents+json, application/cloudevents-batch+json)
    POST /v1/traces          OTLP/HTTP traces, JSON or application/x-protobuf (gzip is decoded by aiohttp)
    POST /v1/logs/{dialect}  gateway log entries: kong, apisix, litellm, ... or `auto` (detected per record);
                             an object, an array (a batch), or newline-separated objects (APISIX `new_line`)
    GET  /healthz (liveness), GET /readyz (readiness: Kafka answers now), GET /metrics (Prometheus text)

Answers: 202 {"accepted": N, "skipped": M} once Kafka acknowledged every event (OTLP gets 200 and an empty
ExportTraceServiceResponse in the request's encoding, as the OTLP spec asks); 400 {"error", "errors": [{index,
path, reason}]} for bad input to /v1/events; 401 bad/missing key; 408 when the body does not arrive within
TOKENMETER_COLLECT_BODY_TIMEOUT_SECONDS (the connection is closed: a slow client cannot hold it; a connection
whose request head does not arrive within that time is closed without an answer); 413 body too
large (--max-body-bytes / TOKENMETER_COLLECT_MAX_BODY_BYTES); 415 a Content-Type the route does not read
(JSON, JSON lines, CloudEvents, OTLP protobuf: see ROUTE_TYPES); 503 + Retry-After when Kafka does not
acknowledge. A body of more than MAX_RECORDS_PER_REQUEST records (array entries or lines) is a 400 naming the limit.
A request to /v1/events with any bad record is rejected WHOLE (nothing written): the sender fixes
or drops the listed records and re-sends, and since event ids are deterministic a re-send never double counts.

/v1/logs/{dialect} and /v1/traces are what gateways and OTel exporters post, and none of them re-sends a corrected
batch (Kong's http-log retries the same body, then drops it; APISIX's loggers, LiteLLM's generic_api and the
Collector's otlphttp exporter drop it on a 400), so a 400 there lost every good entry of the batch and left no dead
letter. Those routes write the good entries, dead-letter each bad record with its reason (stage `collect:http`,
with the route and the record's index), and answer 202 {"accepted", "skipped", "dead_lettered", "errors"}; OTLP
answers 200 with `partialSuccess` {rejectedSpans, errorMessage}. A body that is not JSON at all is still a 400.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from collectors import DIALECTS, AttributionMapping, DialectError, parse_record
from collectors.batch import collection_paused
from collectors.decode import refuse_json_value
from collectors.dialects.otel import decode_encoded
from collectors.sink import KafkaSink, SinkUnavailable
from tokenmeter.events import UsageEvent

log = logging.getLogger("tokenmeter.collect.http")

RETRY_AFTER_S = "5"
NDJSON_TYPES = {"application/x-ndjson", "application/jsonl", "application/json-lines", "application/x-jsonlines"}
CLOUDEVENT_TYPES = {"application/cloudevents+json", "application/cloudevents-batch+json"}
OPEN_PATHS = {"/healthz", "/readyz", "/metrics"}
JSON_TYPES = {"application/json"} | NDJSON_TYPES
def _decoded_codings() -> tuple[str, ...]:
    """The Content-Encodings aiohttp's parser decodes here (brotli and zstd only with their modules installed)."""
    from aiohttp.compression_utils import HAS_BROTLI, HAS_ZSTD

    return ("gzip", "deflate") + (("zstd",) if HAS_ZSTD else ()) + (("br",) if HAS_BROTLI else ())


DECODED_CODINGS = _decoded_codings()
ROUTE_TYPES = {  # Content-Types each route reads; anything else (text/plain, forms, none) is 415
    "/v1/events": JSON_TYPES | CLOUDEVENT_TYPES,
    "/v1/traces": {"application/json", "application/x-protobuf"},
    "/v1/logs/{dialect}": JSON_TYPES,
}
DEFAULT_BODY_TIMEOUT_S = 10.0
# Records in one request body. Real batches are far smaller (APISIX 1000, OTel 512 spans, a 5 MB body holds a few
# thousand gateway entries); a body of a million `1`s took the event loop for 77 s and 2.2 GB (hostile24).
MAX_RECORDS_PER_REQUEST = 100_000


@dataclass
class RecordError:
    index: int
    reason: str
    path: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "path": self.path, "reason": self.reason}


class BadRequest(Exception):
    def __init__(self, message: str, errors: list[RecordError] | None = None):
        super().__init__(message)
        self.errors = errors or []


def split_records(body: bytes, content_type: str, dialect: str | None) -> list[Any]:
    """The records of a body: JSON lines split per line; a JSON array split when the dialect batches."""
    if not body.strip():
        raise BadRequest("empty body")
    if content_type in NDJSON_TYPES:
        return _lines(body)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if body.count(b"\n") >= 1:  # newline-separated objects sent as application/json (APISIX new_line)
            return _lines(body)
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    batches = dialect is None or DIALECTS[dialect].arrays_are_batches
    if isinstance(value, list) and batches:
        return _counted(value)
    return [value]


def _counted(records: list[Any]) -> list[Any]:
    if len(records) > MAX_RECORDS_PER_REQUEST:
        raise BadRequest(f"body holds {len(records)} records; at most {MAX_RECORDS_PER_REQUEST} per request: "
                         "send smaller batches")
    return records


def _lines(body: bytes) -> list[Any]:
    records, errors = [], []
    for number, line in enumerate(_counted(body.splitlines())):
        if not line.strip():
            continue
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            errors.append(RecordError(number, f"line {number + 1} is not valid JSON: {exc}"))
    if errors:
        raise BadRequest(f"{len(errors)} line(s) are not valid JSON", errors)
    return records


def parse_all(records: list[Any], dialect: str | None,
              mapping: AttributionMapping | None) -> tuple[list[UsageEvent], int]:
    """(events, records holding no LLM call), or BadRequest listing every failing record by index."""
    events, skipped, failures = parse_keeping(records, dialect, mapping)
    if failures:
        raise BadRequest(f"{len(failures)} of {len(records)} record(s) rejected; nothing was written",
                         [RecordError(index, exc.reason, exc.path) for index, exc in failures])
    return events, skipped


def parse_keeping(records: list[Any], dialect: str | None, mapping: AttributionMapping | None
                  ) -> tuple[list[UsageEvent], int, list[tuple[int, DialectError]]]:
    """(events, records holding no LLM call, (index, error) of every record that failed): the good entries of a
    partly bad record are among the events, as the file and Kafka collectors keep them."""
    events: list[UsageEvent] = []
    failures: list[tuple[int, DialectError]] = []
    skipped = 0
    with collection_paused():
        for index, record in enumerate(records):
            try:
                refuse_json_value(record)  # a body's value is JSON: a string in it is not a text record
                found = parse_record(record, dialect, mapping, encoded=True)
            except DialectError as exc:  # kept without its frames: ~1.9 KB each, a million in one hostile body
                failures.append((index, exc.with_traceback(None)))
                events.extend(exc.partial)
                continue
            skipped += not found
            events.extend(found)
    return events, skipped, failures


class IngestServer:
    def __init__(self, sink: KafkaSink, api_keys: list[str], max_body_bytes: int,
                 mapping: AttributionMapping | None = None, body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S):
        self.sink = sink
        self.body_timeout_s = body_timeout_s
        self.api_keys = [k.encode() for k in api_keys if k]
        self.max_body_bytes = max_body_bytes
        self.mapping = mapping
        self.requests: dict[tuple[str, int], int] = defaultdict(int)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes,
                              middlewares=[self._count_requests, self._authenticate, self._check_content_type])
        app.router.add_post("/v1/events", self.post_events)
        app.router.add_post("/v1/traces", self.post_traces)
        app.router.add_post("/v1/logs/{dialect}", self.post_logs)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        return app

    # Middlewares ---------------------------------------------------------------------------------
    @web.middleware
    async def _count_requests(self, request: web.Request, handler) -> web.StreamResponse:  # noqa: ANN001
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "other"
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self.requests[(route, exc.status)] += 1
            raise
        self.requests[(route, response.status)] += 1
        return response

    @web.middleware
    async def _authenticate(self, request: web.Request, handler) -> web.StreamResponse:  # noqa: ANN001
        if self.api_keys and request.path not in OPEN_PATHS and not self._key_ok(request):
            return _json({"error": "missing or invalid API key (Authorization: Bearer <key> or x-api-key)"}, 401,
                         headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    @web.middleware
    async def _check_content_type(self, request: web.Request, handler) -> web.StreamResponse:  # noqa: ANN001
        resource = request.match_info.route.resource
        accepted = ROUTE_TYPES.get(resource.canonical if resource else "")
        if accepted and request.method == "POST" and request.content_type not in accepted:
            given = request.headers.get("Content-Type") or "none"
            response = _json({"error": f"Content-Type {given!r} is not read here; send one of "
                                       f"{', '.join(sorted(accepted))}", "accepted": sorted(accepted)}, 415,
                             headers={"Accept-Post": ", ".join(sorted(accepted))})
            response.force_close()  # the body was not read
            return response
        coding = request.headers.get("Content-Encoding", "").strip().lower()
        if accepted and request.method == "POST" and coding not in ("", "identity", *DECODED_CODINGS):
            # aiohttp hands over a body in another coding as it came: read as JSON it was a 400 about invalid UTF-8
            # in "line 1", "line 2"... (walk32: otlphttp's `compression: snappy` or `lz4`)
            response = _json({"error": f"Content-Encoding {coding[:64]!r} is not decoded here; send one of "
                                       f"{', '.join(DECODED_CODINGS)} or none"}, 415,
                             headers={"Accept-Encoding": ", ".join(DECODED_CODINGS)})
            response.force_close()
            return response
        return await handler(request)

    def _key_ok(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
        given_bytes = given.encode("utf-8", "surrogatepass")  # undecodable bytes arrive as lone surrogates: a 401
        # Compare with every key, no early exit, so timing does not reveal which key nearly matched.
        matched = False
        for key in self.api_keys:
            matched |= hmac.compare_digest(given_bytes, key)
        return matched and bool(given)

    # Handlers -------------------------------------------------------------------------------------
    async def post_events(self, request: web.Request) -> web.Response:
        dialect = "cloudevents" if request.content_type in CLOUDEVENT_TYPES else "canonical"
        return await self._ingest(request, dialect)

    async def post_logs(self, request: web.Request) -> web.Response:
        name = request.match_info["dialect"]
        if name != "auto" and name not in DIALECTS:
            return _json({"error": f"unknown dialect {name!r}", "known": ["auto", *DIALECTS]}, 404)
        dialect = None if name == "auto" else name
        label = dialect or "auto"
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        try:
            records = split_records(body, request.content_type, dialect)
        except BadRequest as exc:
            return self._bad_request(exc, label, 1)
        events, skipped, failures = parse_keeping(records, dialect, self.mapping)
        response = await self._publish(events, label, len(records), skipped,
                                       self._letters(request, records, failures, label))
        if response.status != 202 or not failures:
            return response
        return _json({"accepted": len(events), "skipped": skipped, "dead_lettered": len(failures),
                      "errors": [RecordError(i, e.reason, e.path).to_json() for i, e in failures[:100]]}, 202)

    def _letters(self, request: web.Request, records: list[Any], failures: list[tuple[int, DialectError]],
                 label: str) -> list[dict[str, Any]]:
        """One dead letter per failed record, saying where it came from (the sender cannot re-send it fixed)."""
        if failures:
            log.warning("%s: %d of %d record(s) dead-lettered, e.g. [%d] %s", request.path, len(failures),
                        len(records), failures[0][0], failures[0][1])
        return [(self.sink.binary_letter if type(records[index]) is bytes else self.sink.letter)(
            exc.reason, records[index], route=request.path, index=index, path=exc.path, dialect=label,
            peer=request.remote or "") for index, exc in failures]

    async def post_traces(self, request: web.Request) -> web.Response:
        protobuf = request.content_type == "application/x-protobuf"
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        try:
            if protobuf:
                try:
                    record = decode_encoded(body) if body.strip() else {}  # the batch form reads the message
                except DialectError as exc:
                    raise BadRequest(f"not OTLP protobuf TracesData: {exc.reason}") from None
                records = [record]
            else:
                records = split_records(body, request.content_type, "otel")
        except BadRequest as exc:
            return self._bad_request(exc, "otel", 1)
        events, skipped, failures = parse_keeping(records, "otel", self.mapping)
        # a dead letter holds the record as it came (the body kept as hex only when a span failed: bodies run to MBs)
        as_sent = [body] if protobuf and failures else records
        response = await self._publish(events, "otel", len(records), skipped,
                                       self._letters(request, as_sent, failures, "otel"))
        if response.status != 202:
            return response
        headers = {"X-Tokenmeter-Accepted": str(len(events))}
        rejected = sum(exc.failed for _, exc in failures)
        message = "; ".join(str(exc) for _, exc in failures[:5])[:2000]
        if protobuf:  # an empty ExportTraceServiceResponse is full success; else its partial_success
            answer = b"" if not failures else _otlp_partial_success(rejected, message)
            return web.Response(body=answer, status=200, content_type="application/x-protobuf", headers=headers)
        partial = {"partialSuccess": {"rejectedSpans": str(rejected), "errorMessage": message}} if failures else {}
        return _json(partial, 200, headers=headers)

    async def _ingest(self, request: web.Request, dialect: str | None) -> web.Response:
        label = dialect or "auto"
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        records: list[Any] = []
        try:
            records = split_records(body, request.content_type, dialect)
            events, skipped = parse_all(records, dialect, self.mapping)
        except BadRequest as exc:
            return self._bad_request(exc, label, max(len(records), 1))
        return await self._publish(events, label, len(records), skipped)

    async def _body(self, request: web.Request) -> bytes | web.Response:
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            return self._too_large()
        try:
            return await asyncio.wait_for(request.read(), self.body_timeout_s)
        except web.HTTPRequestEntityTooLarge:
            return self._too_large()
        except asyncio.TimeoutError:
            log.warning("408: body from %s not complete within %g s", request.remote, self.body_timeout_s)
            response = _json({"error": f"request body not received within {self.body_timeout_s:g} s"}, 408)
            response.force_close()
            # Answer now and close: aiohttp would otherwise keep reading the rest of the body ("lingering
            # close", 10 s) before closing, and a slow client would hold the connection all that time.
            await response.prepare(request)
            await response.write_eof()
            if request.protocol is not None:
                request.protocol.force_close()  # the answer is flushed before the socket closes
            return response

    def _too_large(self) -> web.Response:
        return _json({"error": f"body exceeds the {self.max_body_bytes} byte limit; send smaller batches"}, 413)

    def _bad_request(self, exc: BadRequest, dialect: str, records: int) -> web.Response:
        self.sink.counters.count(dialect, "read", records)
        self.sink.counters.count(dialect, "rejected", len(exc.errors) or records)
        return _json({"error": str(exc), "errors": [e.to_json() for e in exc.errors[:100]],
                      "error_count": len(exc.errors)}, 400)

    async def _publish(self, events: list[UsageEvent], dialect: str, records: int, skipped: int,
                       letters: list[dict[str, Any]] | None = None) -> web.Response:
        self.sink.counters.count(dialect, "read", records)
        try:
            await self.sink.publish(events, dialect)
            if letters:  # after the events: a 503 here makes the sender re-send them (same ids, counted once)
                await self.sink.dead_letter(letters)
                self.sink.counters.count(dialect, "rejected", len(letters))
        except SinkUnavailable as exc:
            log.warning("503: %s", exc)
            return _json({"error": "event store unavailable, retry later", "detail": str(exc)}, 503,
                         headers={"Retry-After": RETRY_AFTER_S})
        self.sink.counters.count(dialect, "skipped", skipped)
        return _json({"accepted": len(events), "skipped": skipped}, 202)

    async def healthz(self, request: web.Request) -> web.Response:
        c = self.sink.counters
        return _json({"status": "ok", "read": c.read, "written": c.written, "rejected": c.rejected,
                      "skipped": c.skipped}, 200)

    async def readyz(self, request: web.Request) -> web.Response:
        """The readiness probe: 503 while Kafka does not answer (every POST would get 503), so a load balancer
        sends the gateway's requests elsewhere. /healthz stays the liveness probe: a restart brings no broker back."""
        problem = await self.sink.readiness()
        if problem is not None:
            return _json({"status": "unavailable", "detail": problem}, 503, headers={"Retry-After": RETRY_AFTER_S})
        return _json({"status": "ready"}, 200)

    async def metrics(self, request: web.Request) -> web.Response:
        c = self.sink.counters
        lines = ["# HELP tokenmeter_collect_http_requests_total HTTP requests by route and status.",
                 "# TYPE tokenmeter_collect_http_requests_total counter"]
        for (route, status), n in sorted(self.requests.items()):
            lines.append(f'tokenmeter_collect_http_requests_total{{route="{route}",code="{status}"}} {n}')
        for what, help_text in (("read", "records received"), ("written", "events accepted (Kafka acknowledged)"),
                                ("rejected", "records rejected as bad input")):
            name = f"tokenmeter_collect_records_{what}_total" if what != "written" else \
                "tokenmeter_collect_events_accepted_total"
            lines += [f"# HELP {name} {help_text.capitalize()}, by dialect.", f"# TYPE {name} counter"]
            for dialect, counts in sorted(c.by_dialect.items()):
                lines.append(f'{name}{{dialect="{dialect}"}} {counts.get(what, 0)}')
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})


def _otlp_partial_success(rejected_spans: int, message: str) -> bytes:
    """An ExportTraceServiceResponse with partial_success set (the OTLP spec's answer when some spans were refused)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    answer = ExportTraceServiceResponse()
    answer.partial_success.rejected_spans = rejected_spans
    answer.partial_success.error_message = message
    return answer.SerializeToString()


def _json(data: Any, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


async def serve_http(sink: KafkaSink, host: str, port: int, api_keys: list[str], max_body_bytes: int,
                     mapping: AttributionMapping | None, stop,  # noqa: ANN001 - asyncio.Event
                     body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S) -> None:
    if not api_keys:
        log.warning("!!! NO API KEYS CONFIGURED: /v1/* accepts writes from anyone who can reach %s:%s. "
                    "Use --api-key / --api-keys-file (TOKENMETER_COLLECT_API_KEYS) in production. !!!", host, port)
    await sink.start()
    server = IngestServer(sink, api_keys, max_body_bytes, mapping, body_timeout_s)
    # keepalive_timeout bounds the wait for a request head too (aiohttp closes a connection still waiting for one):
    # its default, 3630 s, let a client hold a connection with half a head or nothing (hostile24). An idle keep-alive
    # connection is closed after the same time; senders reconnect.
    runner = web.AppRunner(server.app(), access_log=None, keepalive_timeout=body_timeout_s)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("collect http listening on http://%s:%s (Kafka %s)", host, port, sink.bootstrap_servers)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await sink.stop()
