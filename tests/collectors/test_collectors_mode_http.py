"""`tokenmeter collect http` end to end: a real server subprocess, real broker, payloads read back from Kafka."""

from __future__ import annotations

import copy
import gzip
import hashlib
import uuid

import httpx
import orjson
import pytest
from test_collectors_mode_support import canonical_event, count_ids, events_of, read_topic, start_http, stop_process

from tokenmeter import topics
from tokenmeter.settings import free_port

pytestmark = pytest.mark.slow(seconds=11)  # rough seconds: longest files first (tests/suite_order.py)
KEY = "test-key-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def server(kafka_bootstrap, tmp_path_factory):
    url, proc = start_http(tmp_path_factory.mktemp("http"), kafka_bootstrap, "--api-key", "other-key",
                       "--api-key", KEY, "--max-body-bytes", "64KB")
    try:
        yield url
    finally:
        assert stop_process(proc) == 0  # SIGTERM -> clean exit


def _post(url: str, path: str, body, content_type: str = "application/json", key: str | None = KEY,
          **headers: str) -> httpx.Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(url + path, content=data, headers={"content-type": content_type, **headers}, timeout=30)


def test_real_payloads_round_trip_through_kafka(server, kafka_bootstrap, payload):
    kong = payload("kong_openai")
    kong["request"]["id"] = kong_id = uuid.uuid4().hex
    otlp = payload("otlp_traces")
    trace_id = uuid.uuid4().hex
    otlp["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] = trace_id
    canonical = [canonical_event(f"http-{uuid.uuid4().hex}") for _ in range(3)]
    ndjson = [canonical_event(f"http-nd-{uuid.uuid4().hex}", team="nd") for _ in range(2)]
    cloudevent = payload("cloudevent_openmeter")
    cloudevent["id"] = uuid.uuid4().hex

    assert _post(server, "/v1/logs/kong", kong).json() == {"accepted": 1, "skipped": 0}
    traces = _post(server, "/v1/traces", gzip.compress(orjson.dumps(otlp)), **{"content-encoding": "gzip"})
    assert traces.status_code == 200 and traces.headers["X-Tokenmeter-Accepted"] == "1"
    batch = _post(server, "/v1/events", canonical)
    assert (batch.status_code, batch.json()["accepted"]) == (202, 3)
    lines = b"\n".join(orjson.dumps(e) for e in ndjson) + b"\n"
    assert _post(server, "/v1/events", lines, "application/x-ndjson", key=None, **{"x-api-key": KEY}).status_code == 202
    assert _post(server, "/v1/events", cloudevent, "application/cloudevents+json").status_code == 202
    assert _post(server, "/v1/events", canonical[0]).json()["accepted"] == 1  # single object; a re-send

    ids = {kong_id, f"{trace_id}:eee19b7ec3c1b174", f"my-app:{cloudevent['id']}"} | {
        e["event_id"] for e in canonical + ndjson}
    counts = count_ids(kafka_bootstrap, topics.USAGE, ids)
    assert set(counts) == ids
    assert counts[canonical[0]["event_id"]] == 2 and sum(counts.values()) == len(ids) + 1


def test_otlp_protobuf_traces_round_trip_through_kafka(server, kafka_bootstrap):
    """OTLP/HTTP with `application/x-protobuf` (the Collector's otlphttp exporter default): the spans read from the
    message by the OTel batch form, each event on the usage topic once."""
    from collectors.bench import gateway_records

    [record], ids = gateway_records("otel", 20, seed=uuid.uuid4().hex)
    response = _post(server, "/v1/traces", record, "application/x-protobuf")
    assert (response.status_code, response.headers["X-Tokenmeter-Accepted"]) == (200, "20")
    assert response.content == b""  # an empty ExportTraceServiceResponse: full success
    counts = count_ids(kafka_bootstrap, topics.USAGE, set(ids))
    assert counts == {event_id: 1 for event_id in ids}


def test_canonical_batch_is_one_keyed_micro_batch(server, kafka_bootstrap):
    from test_collectors_mode_support import read_topic

    team = f"team-{uuid.uuid4().hex}"
    batch = [canonical_event(f"mb-{uuid.uuid4().hex}", team=team) for _ in range(5)]
    assert _post(server, "/v1/events", batch).status_code == 202
    values = read_topic(kafka_bootstrap, topics.USAGE,
                        lambda vs: any(isinstance(v, list) and v and v[0].get("attribution", {}).get("team") == team
                                       for v in vs))
    [message] = [v for v in values if isinstance(v, list) and v[0].get("attribution", {}).get("team") == team]
    assert [e["event_id"] for e in message] == [e["event_id"] for e in batch]
    assert len(events_of([message])) == 5


def test_bad_input_is_400_with_per_record_errors(server):
    good = canonical_event(f"bad-{uuid.uuid4().hex}")
    bad = canonical_event("x", usage={"input_tokens": -1})
    response = _post(server, "/v1/events", [good, bad, {"event_id": "y"}])
    assert response.status_code == 400
    body = response.json()
    assert "nothing was written" in body["error"]
    assert [e["index"] for e in body["errors"]] == [1, 2]
    assert "usage.input_tokens" in body["errors"][0]["reason"]

    assert "not valid JSON" in _post(server, "/v1/events", b"{nope").json()["error"]
    lines = _post(server, "/v1/events", b'{"a":1}\n{oops\n', "application/x-ndjson").json()
    assert lines["errors"][0]["index"] == 1
    assert _post(server, "/v1/logs/nosuch", {}).status_code == 404
    assert _post(server, "/v1/traces", b"\x00\x01garbage", "application/x-protobuf").status_code == 400


def _letters_about(bootstrap: str, marker: str) -> list[dict]:
    values = read_topic(bootstrap, topics.DEADLETTER, lambda vs: any(marker in orjson.dumps(v).decode() for v in vs))
    return [v for v in values if marker in orjson.dumps(v).decode()]


def test_a_gateway_batch_with_a_bad_entry_keeps_the_rest_and_dead_letters_it(server, kafka_bootstrap, payload):
    """Kong's http-log, APISIX's http-logger and LiteLLM's generic_api post batches and never send a corrected one:
    on a 400 Kong retries the same body until `max_retry_time` and drops it, APISIX and LiteLLM drop it at once. One
    entry tokenmeter could not read made the whole batch (up to 100 Kong entries, 512 LiteLLM payloads) a 400:
    nothing metered, nothing dead-lettered. /v1/logs now writes the good entries and dead-letters the bad one."""
    good = payload("kong_openai")
    good["request"]["id"] = good_id = uuid.uuid4().hex
    bad = copy.deepcopy(good)
    bad["request"]["id"] = bad_id = uuid.uuid4().hex
    del bad["started_at"]
    response = _post(server, "/v1/logs/kong", [good, bad])
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["dead_lettered"]) == (1, 1)
    assert body["errors"][0]["index"] == 1 and "started_at" in body["errors"][0]["reason"]
    assert count_ids(kafka_bootstrap, topics.USAGE, {good_id}) == {good_id: 1}
    [letter] = _letters_about(kafka_bootstrap, bad_id)
    assert "missing started_at" in letter["reason"] and letter["stage"] == "collect:http"
    assert (letter["route"], letter["index"]) == ("/v1/logs/kong", 1)


def test_otlp_spans_that_cannot_be_read_are_a_partial_success_and_dead_letters(server, kafka_bootstrap, payload):
    """The Collector's otlphttp exporter drops a batch answered 400 (a permanent error): a span without a model took
    the batch's good spans with it. Now the good spans are written, the record dead-lettered, and the answer is the
    OTLP partial success (`rejectedSpans`), which the exporter logs."""
    otlp = payload("otlp_traces")
    spans = otlp["resourceSpans"][0]["scopeSpans"][0]["spans"]
    trace_id = uuid.uuid4().hex
    spans[0]["traceId"] = trace_id
    broken = copy.deepcopy(spans[0])
    broken["spanId"] = "0123456789abcdef"
    broken["attributes"] = [a for a in broken["attributes"] if "model" not in a["key"]]
    spans.append(broken)
    response = _post(server, "/v1/traces", otlp)
    assert response.status_code == 200, response.text
    assert response.json()["partialSuccess"]["rejectedSpans"] == "1"
    assert "missing model" in response.json()["partialSuccess"]["errorMessage"]
    good_id = f"{trace_id}:{spans[0]['spanId']}"
    assert count_ids(kafka_bootstrap, topics.USAGE, {good_id}) == {good_id: 1}
    [letter] = _letters_about(kafka_bootstrap, trace_id)
    assert "missing model" in letter["reason"] and letter["route"] == "/v1/traces"

    # The same as OTLP/protobuf (what the otlphttp exporter and Envoy AI Gateway send): the answer's partial_success
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                          ExportTraceServiceResponse)

    for span in spans:
        span["traceId"] = uuid.uuid4().hex
    request = json_format.ParseDict(otlp, ExportTraceServiceRequest())  # proto JSON: ids read as base64
    body = request.SerializeToString()
    response = _post(server, "/v1/traces", body, "application/x-protobuf")
    assert (response.status_code, response.headers["X-Tokenmeter-Accepted"]) == (200, "1")
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 1 and "missing model" in answer.partial_success.error_message
    [letter] = _letters_about(kafka_bootstrap, request.resource_spans[0].scope_spans[0].spans[1].trace_id.hex())
    assert letter["payload"] == "hex:" + body.hex()  # the protobuf body as it came
    # its size and hash are the body's, not the hex text's: replay decodes the hex and checks them (fix30)
    assert (letter["payload_bytes"], letter["payload_sha256"]) == (len(body), hashlib.sha256(body).hexdigest())


def test_readyz_answers_200_while_kafka_answers(server):
    """The readiness probe asks Kafka now (a metadata request), without an API key, as /healthz."""
    ready = httpx.get(server + "/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text


def test_auth_and_size_limit(server):
    event = canonical_event(f"auth-{uuid.uuid4().hex}")
    assert _post(server, "/v1/events", event, key=None).status_code == 401
    assert _post(server, "/v1/events", event, key="wrong").status_code == 401
    assert _post(server, "/v1/events", event, key="other-key").status_code == 202
    huge = [canonical_event(f"big-{i}") for i in range(1000)]
    assert _post(server, "/v1/events", huge).status_code == 413
    assert httpx.get(server + "/healthz").status_code == 200  # health is open

    metrics = httpx.get(server + "/metrics").text
    assert 'tokenmeter_collect_events_accepted_total{dialect="canonical"}' in metrics
    assert 'code="401"' in metrics and 'code="413"' in metrics


def test_dead_broker_answers_503(tmp_path):
    dead = f"127.0.0.1:{free_port()}"
    url, proc = start_http(tmp_path, dead, "--kafka-timeout", "2")
    try:
        response = _post(url, "/v1/events", canonical_event(f"dead-{uuid.uuid4().hex}"), key=None)
        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()
        assert "unavailable" in response.json()["error"]
        # walk30 noticed: /healthz said ok while every POST got 503. It stays the liveness probe (a restart does not
        # bring Kafka back); /readyz is the readiness probe a load balancer takes the collector out of rotation by.
        assert httpx.get(url + "/healthz", timeout=5).status_code == 200
        ready = httpx.get(url + "/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable", ready.text
        assert dead in ready.json()["detail"], ready.text
    finally:
        stop_process(proc)
    assert "NO API KEYS CONFIGURED" in (tmp_path / f"http-{url.rsplit(':', 1)[1]}.log").read_text()
