"""test_batch.py's tests of `process_batch` (dead-letter reasons, unpriced counts, keys and chunking, size limits),
run again on the columnar path: the worker's default step must pass every test the per-event step passes."""

import pytest
import test_batch  # same directory (pytest's rootdir-relative import); its tests call the module's process_batch

from streams.columnar import process_batch_columnar

book = test_batch.book
TESTS = [name for name in dir(test_batch) if name.startswith("test_")]


@pytest.fixture(autouse=True)
def columnar_step(monkeypatch):
    monkeypatch.setattr(test_batch, "process_batch", process_batch_columnar)


@pytest.mark.parametrize("name", TESTS)
def test_batch_test_on_the_columnar_path(name, request):
    test = getattr(test_batch, name)
    kwargs = {arg: request.getfixturevalue(arg) for arg in test.__code__.co_varnames[:test.__code__.co_argcount]}
    test(**kwargs)
