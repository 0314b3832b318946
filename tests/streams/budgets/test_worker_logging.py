"""The worker's log level is the root logger's level: Faust's terminal spinner must not turn on DEBUG records."""

import logging

import pytest


@pytest.mark.parametrize("level", ["warning", "error"])
def test_a_warning_level_worker_builds_no_debug_records(level, tmp_path):
    from streams.worker import create_worker_app, faust_worker
    from tokenmeter.settings import Settings

    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        settings = Settings(kafka_bootstrap="127.0.0.1:1", log_level=level, data_dir=tmp_path)
        worker = faust_worker(create_worker_app(settings), settings)
        worker._setup_logging()  # what mode does when the worker starts (override_logging)
        assert not logging.getLogger("aiokafka.producer.producer").isEnabledFor(logging.DEBUG)
        assert root.level == getattr(logging, level.upper())
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
