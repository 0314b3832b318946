"""Estimation error against calls whose provider-reported usage is known (streams/metering/corpus)."""

from __future__ import annotations

import pytest

from streams.metering.accuracy import (
    DEFAULT_CORPUS,
    CorpusError,
    call_errors,
    estimation_error_table,
    load_corpus,
    render_table,
)


def test_openai_families_are_exact_and_every_family_has_a_row():
    rows = {row.family: row for row in estimation_error_table(DEFAULT_CORPUS)}
    families = {e.family for e in call_errors(load_corpus(DEFAULT_CORPUS))}
    assert set(rows) == families >= {"openai-o200k", "openai-cl100k", "claude", "gemini"}
    for family in ("openai-o200k", "openai-cl100k"):
        row = rows[family]
        assert row.exact and row.max_abs_pct_error == 0
        assert row.mean_abs_pct_error_input == 0 and row.mean_abs_pct_error_output == 0
        assert row.published_calls >= 4  # the cookbook's API-reported counts, not only our own computations
    assert rows["claude"].mean_abs_pct_error_output is None  # no published completion text


def test_every_record_states_its_provenance():
    for call in load_corpus(DEFAULT_CORPUS):
        assert call.provenance["kind"] in ("published", "computed")
        assert call.provenance["source"].startswith("https://") and call.provenance.get("notes")


def test_error_is_relative_to_the_reported_count(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(
        '{"id": "a", "model": "claude-x", "content": {"prompt": "hello world", "completion": "hi"},'
        ' "usage": {"input_tokens": 4, "output_tokens": 2}, "provenance": {"kind": "computed", "source": "https://x"}}\n')
    [row] = estimation_error_table(corpus)
    # o200k: "hello world" = 2 tokens * 1.2 -> 3 (25% below 4); "hi" = 1 * 1.2 -> 2 (exact)
    assert (row.family, row.calls, row.mean_abs_pct_error_input, row.mean_abs_pct_error_output) == ("claude", 1, 25.0, 0.0)
    assert row.max_abs_pct_error == 25.0 and not row.exact
    assert "| claude | 1 | 0 | 25.0 | 0.0 | 25.0 |" in render_table([row], "markdown")


@pytest.mark.parametrize("line, message", [
    ('not json', "not JSON"),
    ('{"id": "a", "model": "m", "content": {}, "usage": {"input_tokens": -1},'
     ' "provenance": {"kind": "published", "source": "s"}}', "usage.input_tokens"),
    ('{"id": "a", "model": "m", "content": {}, "usage": {"input_tokens": 1}, "provenance": {"kind": "guess"}}',
     "provenance"),
    ('{"id": "a", "model": "m", "content": {}, "usage": {"input_tokens": 1, "output_tokens": 3},'
     ' "provenance": {"kind": "computed", "source": "s"}}', "content.completion"),
    ('{"id": "a", "content": {}, "usage": {}, "provenance": {}}', "'model'"),
])
def test_bad_corpus_lines_name_the_line_and_field(tmp_path, line, message):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text(line + "\n")
    with pytest.raises(CorpusError, match="bad.jsonl:1") as caught:
        load_corpus(corpus)
    assert message in str(caught.value)
