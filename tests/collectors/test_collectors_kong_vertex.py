"""Kong's `gemini` provider also drives Vertex AI (its `options.gemini` endpoint/project/location), and logs
`meta.provider_name: gemini` either way. The upstream it called is in `ai.proxy.tried_targets` (3.10+ and v2):
host `<region>-aiplatform.googleapis.com` and a `/projects/.../publishers/google/models/...` path is Vertex AI,
which bills some models above the Gemini API (Gemini 2.0 Flash: $0.15 / $0.60 against $0.10 / $0.40).

Found by Kong's own how-to log (Kong/developer.konghq.com app/_how-tos/ai-gateway/
use-claude-code-with-ai-gateway-gemini.md @ bc1cd742, conformance case kong/claude_code_gemini_vertex_gemini20_flash):
the call was priced at the Gemini API rate, a third under the Vertex bill."""

from __future__ import annotations

import orjson

from collectors import parse_record
from collectors.encoded import EncodedEvent

VERTEX_TARGET = {
    "provider": "gemini", "model": "gemini-2.0-flash", "port": 443, "upstream_scheme": "https",
    "host": "us-central1-aiplatform.googleapis.com",
    "upstream_uri": "/v1/projects/example-project-id/locations/us-central1/publishers/google/models/"
                    "gemini-2.0-flash:generateContent",
    "route_type": "llm/v1/chat",
}
GEMINI_API_TARGET = {
    "provider": "gemini", "model": "gemini-2.0-flash", "port": 443, "upstream_scheme": "https",
    "host": "generativelanguage.googleapis.com",
    "upstream_uri": "/v1beta/models/gemini-2.0-flash:generateContent", "route_type": "llm/v1/chat",
}


def _entry(payload, targets):
    entry = payload("kong_openai")
    block = entry["ai"]["proxy"]
    block["meta"].update(provider_name="gemini", request_model="gemini-2.0-flash", response_model="gemini-2.0-flash")
    block["tried_targets"] = targets
    return entry


def _providers(entry, encoded):
    events = parse_record(entry, "kong", encoded=encoded)
    return [orjson.loads(e.json)["provider"] if isinstance(e, EncodedEvent) else e.provider for e in events]


def test_a_gemini_provider_calling_vertex_ai_is_vertex_ai(payload):
    entry = _entry(payload, [VERTEX_TARGET])
    assert _providers(entry, encoded=False) == ["vertex_ai"]


def test_the_batch_form_reads_the_vertex_upstream_too(payload):
    entry = _entry(payload, [VERTEX_TARGET])
    assert _providers(entry, encoded=True) == ["vertex_ai"]


def test_the_last_tried_target_is_the_one_that_answered(payload):
    entry = _entry(payload, [GEMINI_API_TARGET, VERTEX_TARGET])
    assert _providers(entry, encoded=False) == ["vertex_ai"]
    entry = _entry(payload, [VERTEX_TARGET, GEMINI_API_TARGET])
    assert _providers(entry, encoded=False) == ["gemini"]


def test_the_gemini_api_and_entries_without_targets_stay_gemini(payload):
    assert _providers(_entry(payload, [GEMINI_API_TARGET]), encoded=False) == ["gemini"]
    entry = _entry(payload, [])
    del entry["ai"]["proxy"]["tried_targets"]
    assert _providers(entry, encoded=False) == ["gemini"]
    assert _providers(entry, encoded=True) == ["gemini"]


HOSTILE_TARGETS = [
    "us-central1-aiplatform.googleapis.com",  # a string, not a list
    {"host": "us-central1-aiplatform.googleapis.com"},  # one target, not a list of them
    ["us-central1-aiplatform.googleapis.com"],  # a list of strings
    [{"host": 42}], [{"host": None}], [{"host": ["us-central1-aiplatform.googleapis.com"]}],
    [{"host": "evil.example/us-central1-aiplatform.googleapis.com"}],  # only the host's end counts
    [{"host": "aiplatform.googleapis.com.evil.example"}],
    [{"host": "-" * 200_000 + "x"}],  # huge: no backtracking blow-up
    [{"host": {"nested": [[[[{"host": "aiplatform.googleapis.com"}]]]]}}],
    [VERTEX_TARGET, None],  # the answering target is not an object
]


def test_hostile_tried_targets_leave_the_provider_gemini_in_both_forms(payload):
    """A `tried_targets` of the wrong shape, a host that only contains the Vertex name, or a huge one: the call
    stays `gemini` (priced at the Gemini API's rate, as Kong named it), read the same by both forms, no crash."""
    for targets in HOSTILE_TARGETS:
        entry = _entry(payload, targets)
        assert _providers(entry, encoded=False) == ["gemini"], targets if len(str(targets)) < 200 else "huge"
        assert _providers(entry, encoded=True) == ["gemini"], targets if len(str(targets)) < 200 else "huge"
