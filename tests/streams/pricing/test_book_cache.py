"""The built price book is kept on disk (streams/pricing/book_cache.py): a later process with the same catalog reads
it instead of parsing and validating the YAML again; an edited file, a corrupt cache file or a directory others
may write to never gives a wrong book."""

from __future__ import annotations

import os
import pickle
import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from streams.pricing import book as book_module
from streams.pricing.catalog import BUNDLED_CATALOG_DIR, CatalogBuilder


@pytest.fixture
def catalog(tmp_path, monkeypatch):
    """Two bundled files in a catalog of their own; the cache in tmp_path; this process's memo of books emptied
    (as in a new process) and every file the builder reads counted."""
    directory = tmp_path / "catalog"
    directory.mkdir()
    for name in ("openai.yaml", "anthropic.yaml"):
        shutil.copy(BUNDLED_CATALOG_DIR / name, directory / name)
    monkeypatch.setenv("TOKENMETER_PRICE_BOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(book_module, "_book_cache", {})
    reads: list[str] = []
    add_file = CatalogBuilder.add_file

    def counted(self, path):
        reads.append(path.name)
        return add_file(self, path)

    monkeypatch.setattr(CatalogBuilder, "add_file", counted)
    return directory, tmp_path / "cache", reads


def _same_state(value):
    """A book's whole state as plain values, to compare two books. Not `pickle.dumps(a) == pickle.dumps(b)`: pickle
    writes a string met twice as a reference to the first, and which equal strings are one object depends on what the
    process interned before (unpickling interns attribute names), so equal books pickled differently once run after
    other tests in one xdist worker (CI, 2026-12-07: index 40175, b'\\xdc' != b'D')."""
    if isinstance(value, dict):
        return {"dict": sorted(((repr(k), _same_state(v)) for k, v in value.items()), key=lambda kv: kv[0])}
    if isinstance(value, (list, tuple)):
        return [type(value).__name__, [_same_state(v) for v in value]]
    if isinstance(value, (set, frozenset)):
        return ["set", sorted(repr(_same_state(v)) for v in value)]
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return [type(value).__qualname__, _same_state(vars(value))]
    if hasattr(value, "__slots__"):
        return [type(value).__qualname__, [_same_state(getattr(value, n, None)) for n in value.__slots__]]
    return [type(value).__qualname__, repr(value)]


def _new_process(monkeypatch) -> None:
    monkeypatch.setattr(book_module, "_book_cache", {})


def _gpt4o_input(book) -> Decimal:
    return book.entries["openai/gpt-4o"].versions[-1].prices["input"]


def test_the_next_process_reads_the_book_the_first_built(catalog, monkeypatch):
    directory, cache, reads = catalog
    built = book_module.load_price_book(catalog_dir=directory)
    assert sorted(reads) == ["anthropic.yaml", "openai.yaml"]
    assert len(list(cache.glob("*.pickle"))) == 1
    _new_process(monkeypatch)
    reads.clear()
    cached = book_module.load_price_book(catalog_dir=directory)
    assert reads == []  # no YAML parsed, nothing validated
    assert cached is not built
    assert _same_state(cached) == _same_state(built)  # the same entries, versions, patterns and resolver
    assert cached.catalog_version == built.catalog_version
    for provider, model in (("openai", "gpt-4o-2024-11-20"), ("openai", "GPT-4o"), ("anthropic", "claude-3-5-haiku-latest"),
                            ("openai", "ft:gpt-4o-mini-2024-07-18:org::abc"), ("openai", "no-such-model")):
        assert cached.resolve(provider, model) == built.resolve(provider, model), model


def test_an_edited_catalog_file_is_read_again(catalog, monkeypatch):
    directory, cache, reads = catalog
    assert _gpt4o_input(book_module.load_price_book(catalog_dir=directory)) == Decimal("2.50")
    path = directory / "openai.yaml"
    text = path.read_text()
    path.write_text(text.replace('input: "2.50"\n        cached_input: "1.25"',
                                 'input: "2.75"\n        cached_input: "1.25"', 1))
    _new_process(monkeypatch)
    reads.clear()
    book = book_module.load_price_book(catalog_dir=directory)
    assert sorted(reads) == ["anthropic.yaml", "openai.yaml"]
    assert book.entries["openai/gpt-4o"].versions[1].prices["input"] == Decimal("2.75")
    assert len(list(cache.glob("*.pickle"))) == 2


def test_a_corrupt_cache_file_is_ignored_and_written_again(catalog, monkeypatch):
    directory, cache, reads = catalog
    good = book_module.load_price_book(catalog_dir=directory)
    [path] = cache.glob("*.pickle")
    for damage in (b"", b"not a pickle", path.read_bytes()[:1000], pickle.dumps({"entries": {}})):
        path.write_bytes(damage)
        _new_process(monkeypatch)
        reads.clear()
        book = book_module.load_price_book(catalog_dir=directory)
        assert sorted(reads) == ["anthropic.yaml", "openai.yaml"]
        assert _same_state(book) == _same_state(good)
        assert pickle.loads(path.read_bytes()).catalog_version == good.catalog_version  # written again, whole
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temporary file left behind


def test_a_cache_others_may_write_is_not_read(catalog, monkeypatch):
    directory, cache, reads = catalog
    book_module.load_price_book(catalog_dir=directory)
    [path] = cache.glob("*.pickle")
    os.chmod(path, 0o666)
    _new_process(monkeypatch)
    reads.clear()
    book_module.load_price_book(catalog_dir=directory)
    assert len(reads) == 2  # a file anyone may write could hold any code: built instead
    os.chmod(cache, 0o777)
    _new_process(monkeypatch)
    reads.clear()
    book_module.load_price_book(catalog_dir=directory)
    assert len(reads) == 2


def test_an_empty_setting_turns_the_cache_off(catalog, monkeypatch, tmp_path):
    directory, cache, reads = catalog
    monkeypatch.setenv("TOKENMETER_PRICE_BOOK_CACHE", "")
    book_module.load_price_book(catalog_dir=directory)
    _new_process(monkeypatch)
    book_module.load_price_book(catalog_dir=directory)
    assert len(reads) == 4
    assert not cache.exists()


def test_the_cache_keeps_the_books_used_last(catalog, monkeypatch):
    """Catalogs in temporary directories give a new key each run: the directory keeps KEEP books, the ones used last."""
    from streams.pricing import book_cache

    directory, cache, reads = catalog
    monkeypatch.setattr(book_cache, "KEEP", 2)
    path = directory / "openai.yaml"
    text = path.read_text()

    def load(price: str | None):
        for book in cache.glob("*.pickle"):  # older by a second: a file's time has the kernel's coarse tick, so a
            stat = book.stat()  # read and a write in one tick tied and the prune kept either (flaky under -n 2)
            os.utime(book, ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**9))
        path.write_text(text if price is None else text.replace(
            'input: "2.50"\n        cached_input: "1.25"', f'input: "{price}"\n        cached_input: "1.25"', 1))
        _new_process(monkeypatch)
        return book_module.load_price_book(catalog_dir=directory)

    first = load(None)
    [a] = cache.glob("*.pickle")
    load("2.71")
    [b] = set(cache.glob("*.pickle")) - {a}
    load(None)  # the first book read again: used after the "2.71" one
    load("2.72")
    assert len(list(cache.glob("*.pickle"))) == 2 and a.exists() and not b.exists()
    reads.clear()
    assert _same_state(load(None)) == _same_state(first)
    assert reads == []


def test_the_key_covers_every_module_of_ours_the_book_is_built_with():
    """A module that decides what the built book holds but is missing from the key would serve a stale book after
    an upgrade (a wrong price, silently). Before, tokenmeter/events.py (the tool-request kinds the schema validates)
    and tokenmeter/timefmt.py were imported by the pricing modules and not in the key."""
    import ast

    from streams.pricing import book_cache

    root = Path(book_cache.__file__).resolve().parents[2]

    def ours(module: str | None, current: Path, level: int) -> Path | None:
        if level:
            base = current.parent
            for _ in range(level - 1):
                base = base.parent
            path = base / (module or "").replace(".", "/")
        elif module and module.split(".")[0] in ("tokenmeter", "streams"):
            path = root / module.replace(".", "/")
        else:
            return None
        return next((c for c in (path.with_suffix(".py"), path / "__init__.py") if c.is_file()), None)

    seen: set[Path] = set()
    todo = [root / "streams/pricing" / name for name in ("book.py", "catalog.py", "schema.py", "resolve.py",
                                                          "overrides.py")]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for node in ast.walk(ast.parse(current.read_text())):
            found = ([ours(node.module, current, node.level)] if isinstance(node, ast.ImportFrom) else
                     [ours(alias.name, current, 0) for alias in node.names] if isinstance(node, ast.Import) else [])
            todo += [path for path in found if path is not None and path.name != "__init__.py"]
    assert {str(path.relative_to(root)) for path in seen} == set(book_cache._CODE)
