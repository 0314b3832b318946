"""`python -m app.bench_worker --in-process` measures the pricing thread's work a worker does (issue 14, inproc29).

Without `--format` it measured the JSON priced format (batch_overlap._price's default argument) while a worker sends
Arrow by default (TOKENMETER_PRICED_FORMAT, arrow19): its figure was the JSON worker's, ~1.2x the CPU per event of
the default one. These tests run the bench's child for real (one small round, a fresh process each) and read the
format from the priced messages the child wrote, not from what it was asked for.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.bench_worker import measure_in_process

TREE = str(Path(__file__).resolve().parent.parent)


@pytest.mark.parametrize("configured", [None, "json"])
def test_in_process_prices_in_the_format_a_worker_would_send_with_its_allocator_settings(monkeypatch, configured):
    # inproc34: the child set polars' and glibc's settings itself, as streams/worker.py did; the worker now sets
    # pyarrow's purge delay too, so the child imports the tree's worker module first and times what it runs (checked
    # in these runs: a child of its own for it cost ~3 CPU-s, suite36). Unset here, since a worker module imported
    # earlier in this process set it in os.environ, which the child would inherit.
    monkeypatch.delenv("MIMALLOC_PURGE_DELAY", raising=False)
    if configured is None:
        monkeypatch.delenv("TOKENMETER_PRICED_FORMAT", raising=False)
    else:
        monkeypatch.setenv("TOKENMETER_PRICED_FORMAT", configured)
    results = measure_in_process([TREE], 2000, 1, 0.0)
    [(name, [run])] = results.items()
    assert run["format"] == (configured or "arrow")  # the settings' default since arrow19
    assert name.endswith(f"[{configured or 'arrow'}]")
    # the first pass (first plans, imports, lookups learnt) reported apart from the warm ones
    assert run["cold_cpu_us_per_event"] > 0 and run["cpu_us_per_event"] > 0
    assert run["mimalloc_purge_delay"] == "30000"
