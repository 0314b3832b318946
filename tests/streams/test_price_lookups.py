"""price_frame's lookups (fuse24): the (provider, model), (batch, service tier), (org, entry) and price-set answers a
price table remembers between chunks, started afresh past LOOKUP_ROWS_MAX. Remembered or not, every batch prices as
the per-row path does."""

import itertools

import orjson
import pytest

from price_support import SELF_HOSTED_AND_ACME
from streams.batch import RawRecord
from streams.columnar import pipeline, price
from streams.columnar.equivalence import compare_batch
from streams.pricing import load_price_book

OVERRIDES = SELF_HOSTED_AND_ACME


def event(i: int, **extra) -> dict:
    return {"event_id": f"e{i}", "ts": "2026-11-01T10:15:00Z", "source": "t", "provider": "openai", "model": "gpt-4o",
            "attribution": {"team": "search"}, "usage": {"input_tokens": 1000, "output_tokens": 10}, **extra}

MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-sonnet-20241022"),
          ("self-hosted", "llama-internal"), ("openai", "no-such-model"), ("nobody", "nothing")]
ORGS = [None, "acme", "globex"]
TIERS = [(False, None), (True, None), (False, "flex"), (False, "priority"), (False, "")]


def batches(count: int, size: int) -> list[list[RawRecord]]:
    shapes = itertools.cycle(itertools.product(MODELS, ORGS, TIERS))
    out = []
    for b in range(count):
        events = []
        for i in range(size):
            (provider, model), org, (batch, tier) = next(shapes)
            extra = {"batch": batch, **({"service_tier": tier} if tier is not None else {})}
            attribution = {"team": "search", **({"org": org} if org else {})}
            events.append(event(b * size + i, provider=provider, model=model, attribution=attribution,
                                usage={"input_tokens": 1000 + i, "output_tokens": 10,
                                       "reasoning_tokens": i % 3}, **extra))
        out.append([RawRecord(orjson.dumps(events[j:j + 25]), "tokenmeter.usage", 0, j) for j in range(0, size, 25)])
    return out


@pytest.mark.parametrize("bound", [3, price.LOOKUP_ROWS_MAX])
def test_lookups_remembered_or_started_afresh_price_as_the_per_row_path(tmp_path, monkeypatch, bound):
    """With a bound of 3 every chunk has more distinct keys than a lookup may hold: each is started afresh with the
    chunk's keys (and the query ends); with the real bound the later batches find every key remembered."""
    monkeypatch.setattr(price, "LOOKUP_ROWS_MAX", bound)
    monkeypatch.setattr(pipeline, "FRAME_MIN_BYTES", 0)  # the frame path too, not only the dict-fed one
    path = tmp_path / "overrides.yaml"
    path.write_text(OVERRIDES)
    book = load_price_book(overrides_path=path)
    for records in batches(3, 200):
        assert compare_batch(records, book) == []
    table = price.price_table(book)
    assert table.pair_ids is not None and table.org_rules is not None and table.set_rows is not None
    if bound == 3:  # started afresh: this chunk's keys only
        assert table.pair_ids.height == len(MODELS)
    else:
        assert table.pair_ids.height == len(MODELS) and table.tier_names.height == len(TIERS)
