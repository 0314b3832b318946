"""The batch form's shared shortcuts (collectors/encoded.py, speed round 4): each gives exactly what the general
code it stands in for gives, over random inputs and at the edges (the accepted time range, the exact-millisecond
limit, zero fractions). The whole readers are held to the per-entry parsers in test_collectors_batch_form.py and
test_collectors_equivalence.py."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from collectors.coerce import epoch_to_datetime
from collectors.encoded import EXACT_EPOCH_MS_LIMIT, epoch_micros_text, epoch_millis_text, utc_text
from tokenmeter.events import EARLIEST_EVENT_TS, MAX_EVENT_FUTURE

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _edges_ms() -> list[int]:
    earliest = int((EARLIEST_EVENT_TS - _EPOCH) / timedelta(milliseconds=1))
    latest = int((datetime.now(timezone.utc) + MAX_EVENT_FUTURE - _EPOCH) / timedelta(milliseconds=1))
    return [10**11, earliest - 1, earliest, earliest + 1, earliest + 1000, latest - 5000, latest + 5000,
            EXACT_EPOCH_MS_LIMIT - 1, 1_787_113_201_000, 1_787_113_201_719]


def test_epoch_milliseconds_read_as_the_kong_and_apisix_parsers_read_them() -> None:
    rng = random.Random(14)
    now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
    samples = _edges_ms() + [rng.randrange(10**11, EXACT_EPOCH_MS_LIMIT) for _ in range(5000)] \
        + [rng.randrange(now_ms - 10**11, now_ms + 3 * 86_400_000) for _ in range(5000)]
    for ms in samples:
        assert epoch_micros_text(ms * 1000) == utc_text(epoch_to_datetime(ms, "started_at")), ms
        assert epoch_millis_text(ms) == epoch_micros_text(ms * 1000), ms  # Kong's: the fraction from a table
    for ms in range(1_787_113_201_000, 1_787_113_202_001):  # every millisecond suffix, a whole second's too
        assert epoch_millis_text(ms) == epoch_micros_text(ms * 1000), ms


def test_epoch_microseconds_read_as_the_otel_parser_reads_them() -> None:
    rng = random.Random(15)
    now_us = int(datetime.now(timezone.utc).timestamp() * 1e6)
    samples = [rng.randrange(0, 2**52) for _ in range(3000)] \
        + [rng.randrange(now_us - 10**14, now_us + 3 * 86_400 * 10**6) for _ in range(5000)] \
        + [ms * 1000 for ms in _edges_ms()] + [ms * 1000 + 1 for ms in _edges_ms()]
    for micros in samples:
        assert epoch_micros_text(micros) == utc_text(_EPOCH + timedelta(microseconds=micros)), micros


def test_a_whole_second_has_no_fraction_and_the_cache_stays_bounded() -> None:
    assert epoch_micros_text(1_787_113_201 * 10**6) == "2026-08-19T04:20:01Z"
    assert epoch_micros_text(1_787_113_201 * 10**6 + 719_000) == "2026-08-19T04:20:01.719000Z"
    from collectors import encoded
    for second in range(1_700_000_000, 1_700_000_000 + 5000):
        epoch_micros_text(second * 10**6)
    assert len(encoded._SECOND_TEXT) <= 4096


def test_litellm_time_text_respelled_from_its_source_as_isoformat_writes_it() -> None:
    from collectors.dialects.litellm import _time
    from collectors.encoded import naive_utc_text
    rng = random.Random(16)
    texts = ["2025-01-24 09:20:01.000000", "2025-01-24 09:20:01.000001", "2019-12-31 23:59:59.999999",
             "2020-01-01 00:00:00.000000", (datetime.now(timezone.utc) + MAX_EVENT_FUTURE * 2).strftime(
                 "%Y-%m-%d %H:%M:%S.%f")]
    texts += [f"{rng.randrange(2019, 2027)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d} "
              f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}."
              f"{rng.choice([0, rng.randrange(10**6)]):06d}" for _ in range(3000)]
    for text in texts:
        ts = _time(text)
        assert naive_utc_text(ts, text) == naive_utc_text(ts), text


def test_litellm_common_tags_are_tags_without_error_paths() -> None:
    from collectors.dialects.litellm import _common_tags, _tags
    from collectors.errors import DialectError
    cases = [{}, {"request_tags": None}, {"request_tags": []}, {"request_tags": "a:b"}, {"request_tags": {"a": 1}},
             {"request_tags": ["a:b", "c=d", "e", " f : ", "g=h:i", "j:k=l", "", "  ", 3, None, ["x"], "=v", ":"]},
             {"request_tags": ["feature:x"], "end_user": " u1 "}, {"end_user": ""}, {"end_user": 5},
             {"request_tags": ["a"], "cache_hit": True}, {"cache_hit": "true"}]
    for payload in cases:
        try:
            expected = _tags(payload, "")
        except DialectError:
            expected = None
        assert _common_tags(payload) == expected, payload


def test_provider_and_operation_names_read_the_same_from_the_cache() -> None:
    from collectors.dialects.common import normalize_operation
    from collectors.providers import normalize_provider
    names = ["openai", " OpenAI ", "azure", "", "  ", "Bedrock", "vertex_ai", "chat", "acompletion", " Embeddings ",
             "aembedding", "text_completion", "unknown-op", "x" * 300]
    first = [(normalize_provider(n), normalize_operation(n), normalize_operation(n, "embeddings")) for n in names]
    again = [(normalize_provider(n), normalize_operation(n), normalize_operation(n, "embeddings")) for n in names]
    assert first == again
    assert normalize_operation("  ", "embeddings") == "embeddings" and normalize_operation("  ") == "chat"
    assert normalize_provider(None) is None and normalize_operation(None) == "chat" and normalize_operation(5) == "chat"
    for i in range(3000):  # many distinct names: the caches stay bounded
        normalize_provider(f"p{i}"), normalize_operation(f"o{i}")
    from collectors import providers
    from collectors.dialects import common
    assert len(providers._NORMALIZED) <= 1024 and len(common._NORMALIZED) <= 1024


def test_resolve_parts_is_resolve_values_of_the_same_view() -> None:
    """`AttributionMapping.resolve_parts` (the batch form's readers: no RecordView per event, header and attribute
    text read inline) and `resolve_values` of the RecordView of the same parts give what trying each selector's
    `RecordView.lookup`, first value found, gives: every selector kind, values of every type, mixed-case and
    non-mapping headers, the dialects' default mappings and a custom one."""
    import copy

    from collectors.attribution import NO_ATTRIBUTES, AttributionMapping, RecordView, view_headers

    custom = AttributionMapping.from_dict({
        "team": ["header:X-Team", "field:a.0.b", "attr:team"], "org": "const: acme ",
        "project": ["span:p", "resource:p", "field:deep.er"], "user": ["field:u", "header:x-user"],
        "route": ["resource:r", "span:r"], "feature": ["attr:f", "header:X-F"],
        "tags": {"t": ["header:x-t", "attr:t"], "r": "resource:r", "s": "span:s", "c": "const:k",
                 "i": ["field:0.b", "field:-1"]},  # a list record's index as the first step
        "inherit_defaults": False})
    mappings = [(custom, "x")] + [(AttributionMapping(), name) for name in ("kong", "litellm", "otel", "apisix")]
    values: list = [None, "", "  ", " v ", 0, 7, 1.5, True, [], ["h1", "h2"], [" ", "h"], {}, {"k": "v"}]
    rng = random.Random(17)
    for _ in range(3000):
        def pick():
            return copy.deepcopy(rng.choice(values))
        record = {"a": [{"b": pick()}], "deep": {"er": pick()}, "u": pick(), "consumer": {"username": pick()},
                  "metadata": {"user_api_key_team_id": pick(), "user_api_key_hash": pick()}, "route": {"name": pick()}}
        if rng.random() < 0.1:  # not an object: a field selector finds nothing there (or an index in a list)
            record = rng.choice([[{"b": pick()}, pick()], [], "text", 3, None])
        headers = rng.choice([None, [], "x", {name: pick() for name in ("X-Team", "x-t", "X-F", "x-feature",
                                                                          "x-tokenmeter-team", "X-User")
                                              if rng.random() < 0.5}])
        span = {key: pick() for key in ("team", "p", "r", "f", "t", "s", "tokenmeter.team", "user.id")
                if rng.random() < 0.4}
        resource = {key: pick() for key in ("team", "p", "r", "f", "t", "service.name") if rng.random() < 0.4}
        tags = rng.choice([None, {}, {"feature": "x", "empty": ""}])
        for mapping, dialect in mappings:
            view = RecordView(record, headers=headers, span_attrs=span, resource_attrs=resource)
            expected = {}
            for dim, selectors in mapping.selectors(dialect).items():  # each selector's lookup, first found
                found = next((v for v in map(view.lookup, selectors) if v is not None), None)
                if found is not None:
                    expected[dim] = found
            expected_tags = {k: v for k, v in tags.items() if v} if tags else {}
            for name, selectors in mapping.tags.items():
                found = next((v for v in map(view.lookup, selectors) if v is not None), None)
                if found is not None:
                    expected_tags[name] = found
            expected["tags"] = expected_tags
            assert mapping.resolve_values(dialect, view, auto_tags=tags) == expected
            got = mapping.resolve_parts(dialect)(record, view_headers(headers), span or NO_ATTRIBUTES,
                                                 resource or NO_ATTRIBUTES, tags)
            assert got == expected, (dialect, record, headers, span, resource)


def test_collection_paused_until_delivered_always_resumes_collection() -> None:
    """The Kafka bridge pauses the cyclic GC over a batch's conversion and delivery: collection resumes after
    the batch (also when it fails), stays off when it was off, and resumes by itself when a delivery outlasts
    DELIVERY_PAUSE_LIMIT_S (a broker outage must not pile up garbage)."""
    import asyncio
    import gc

    import pytest

    from collectors import batch

    async def scenario() -> None:
        assert gc.isenabled()
        async with batch.collection_paused_until_delivered():
            assert not gc.isenabled()
            with batch.collection_paused():  # the conversion's own pause nests
                assert not gc.isenabled()
            assert not gc.isenabled()
            await asyncio.sleep(0)
        assert gc.isenabled()
        with pytest.raises(RuntimeError):
            async with batch.collection_paused_until_delivered():
                raise RuntimeError("delivery failed")
        assert gc.isenabled()
        gc.disable()
        try:
            async with batch.collection_paused_until_delivered():
                pass
            assert not gc.isenabled()
        finally:
            gc.enable()
        original = batch.DELIVERY_PAUSE_LIMIT_S
        batch.DELIVERY_PAUSE_LIMIT_S = 0.01
        try:
            async with batch.collection_paused_until_delivered():
                for _ in range(500):  # a delivery waiting on a broker that is down
                    if gc.isenabled():
                        break
                    await asyncio.sleep(0.01)
                assert gc.isenabled()
        finally:
            batch.DELIVERY_PAUSE_LIMIT_S = original
        assert gc.isenabled()

    asyncio.run(scenario())


def test_litellm_time_shape_without_the_regex() -> None:
    """LiteLLM's time text is told apart by its separators, `isascii` and `fromisoformat` (collect10), where a
    regex fullmatch did it: both take and refuse the same texts, over valid times mutated at every position with
    the characters that could fool either (non-ASCII digits, UTC offsets and `Z`, other separators, ISO week
    dates, dropped and added characters)."""
    import re

    from collectors.dialects.litellm import _time

    shape = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}")

    def by_regex(value):  # the reading before collect10
        if value is None:
            return None
        if type(value) is not str or shape.fullmatch(value) is None:
            return False
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return False

    rng = random.Random(18)
    pool = list("0123456789+-Zz T:.,W_x") + ["\u0663", "\uff13", "\u00a0", "\u2212", "\u00e9"]
    valid = ["2025-01-24 09:20:49.847371", "2025-02-29 09:20:49.847371", "2024-02-29 24:00:00.000000",
             "2025-13-01 00:00:00.000000", "0000-01-01 00:00:00.000000", "9999-12-31 23:59:59.999999"]
    texts: list = [None, 5, 1.5, b"2025-01-24 09:20:49.847371", "", "2025-01-24T09:20:49.847371",
                   "2025-01-24 09:20:49.847+00", "2025-01-24 09:20:49.84737Z", "2025-01-24 09:20:49.8+00:00",
                   "2025-W04-5 09:20:49.847371", "2025-024 09:20:49.84737100", "20250124 092049.84737100000",
                   "2025-01-24 09:20:49,847371", "2025-01-24 09:20:49.847371 ", " 2025-01-24 09:20:49.847371"]
    for _ in range(20_000):
        text = list(rng.choice(valid) if rng.random() < 0.5 else
                    f"{rng.randrange(1, 10000):04d}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d} "
                    f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}."
                    f"{rng.randrange(10**6):06d}")
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            at = rng.randrange(len(text) + 1)
            action = rng.random()
            if action < 0.7 and at < len(text):
                text[at] = rng.choice(pool)
            elif action < 0.85:
                text.insert(at, rng.choice(pool))
            elif text:
                del text[min(at, len(text) - 1)]
        texts.append("".join(text))
    for offset in ("+00", "-01", "Z", "+0000", "+00:00"):  # an offset in place of the fraction's last digits
        texts.append("2025-01-24 09:20:49." + "847371"[:6 - len(offset)] + offset)
    for text in texts:
        assert _time(text) == by_regex(text), text


def test_headers_already_lower_case_are_read_as_lower_cased_headers() -> None:
    """`view_headers` hands back a record's own header dict when its names are lower-case text already (collect10:
    lower-casing every name of every Kong entry was ~7% of its time): the same names, values and order as
    lower-casing them, whatever the mix of cases, repeats and name sets; the cache of name sets stays bounded."""
    from collectors import attribution
    from collectors.attribution import _lower_keys, view_headers

    rng = random.Random(19)
    names = ["host", "x-team", "X-Team", "X-TEAM", "x-tokenmeter-team", "Content-Type", "content-type", "x-1",
             "123", "", "ß", "ẞ", "x-ünïcode", "\u0130x", "x-feature"]
    values: list = ["v", " v ", "", None, 3, ["a", "b"], {"k": "v"}]
    for _ in range(5000):
        headers = {rng.choice(names): rng.choice(values) for _ in range(rng.randrange(0, 7))}
        got = view_headers(headers)
        assert list(got.items()) == list(_lower_keys(headers).items()), headers
        assert list(view_headers(headers).items()) == list(got.items())  # a name set seen before: from the cache
    for i in range(3000):
        view_headers({f"x-h{i}": "v"})
    assert len(attribution._ALREADY_LOWER) <= 1024
    assert view_headers(None) == {} and view_headers([("x", "y")]) == {} and view_headers({}) == {}


def test_litellm_tag_texts_split_once_read_as_split_each_time() -> None:
    """`_tags_of` keeps each tag text's split in a bounded cache: the same tags, first time and again, as the
    split written out per tag (the loop it replaced), and a str subclass is split without the cache."""
    from collectors.dialects import litellm

    def split_each_time(raw_tags: list) -> dict:
        tags = {}
        for raw in raw_tags:
            if not isinstance(raw, str) or not raw.strip():
                continue
            if "=" in raw or ":" in raw:
                key, sep, value = raw.replace("=", ":", 1).partition(":")
                value = value.strip()
                tags[key.strip()] = value if sep and value else "true"
            else:
                tags[raw.strip()] = "true"
        return tags

    class Text(str):
        pass

    raw_tags = ["a:b", "c=d", "e", " f : ", "g=h:i", "j:k=l", "", "  ", 3, None, ["x"], "=v", ":", "a:again",
                Text("s:t"), Text("  "), "k=", "k:"]
    for _ in range(2):
        assert litellm._tags_of(raw_tags, {}) == split_each_time(raw_tags)
    many = [f"t{i}:v{i}" for i in range(5000)]
    assert litellm._tags_of(many, {}) == split_each_time(many)
    assert len(litellm._TAG_PAIRS) <= 4096
    huge = ["k:" + "v" * 1_000_000]  # a hostile record's tag: read, never kept (4,096 of them would hold 4 GB)
    assert litellm._tags_of(huge, {}) == split_each_time(huge)
    assert not any(len(text) > litellm._TAG_CACHED_CHARS for text in litellm._TAG_PAIRS)
