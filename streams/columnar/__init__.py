"""The worker's batch step on columns (issue 14): same results as `streams.batch.process_batch`, computed with
polars over a whole batch instead of pydantic per event. See docs/worker-columnar.md."""

from .pipeline import process_batch_columnar

__all__ = ["process_batch_columnar"]
