"""The built price book kept on disk, so a process whose catalog is unchanged reads it instead of building it.

Every worker, loader and pricing command built its book at start: 43 YAML files parsed, every block validated,
the match patterns compiled: 0.12-0.19 CPU-s a start (docs/pricing.md "A price book built once"). The built book
is pickled to `<cache dir>/<key>.pickle` and read back in ~0.015 CPU-s. The cache directory is
`$TOKENMETER_PRICE_BOOK_CACHE`, else `~/.cache/tokenmeter/price-books` (as tiktoken's files are kept);
`TOKENMETER_PRICE_BOOK_CACHE=` (empty) turns the cache off.

Never a stale book: the key is a sha256 of everything the book is built from, the catalog files' paths and
bytes layer by layer, the overrides file's, the Azure deployments, and the code that builds and holds the book
(the pricing modules' sources and those of ours they import, the Python, pydantic and PyYAML versions). Editing any of them gives another key.
A file that cannot be read back (truncated, garbage, classes since renamed) is ignored and written again.
A pickle runs code when read, so one is read only from a directory and file this user owns that nobody else may
write to; a directory that is not so is neither read nor written. The directory keeps the KEEP books used last
(~0.7 MB each; a read marks a book used): catalogs in temporary directories (tests, `prices import --dry-run`) would
otherwise add one a run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import stat
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("tokenmeter.pricing")

CACHE_ENV = "TOKENMETER_PRICE_BOOK_CACHE"
FORMAT = b"price-book-cache 1"
KEEP = 16
# The modules whose classes a built book holds or whose code decides what it holds: the pricing modules and every
# module of ours they import (tokenmeter.events holds the tool-request kinds the schema validates against), paths
# from the repository's root. tests/streams/pricing/test_book_cache.py checks the list against their imports.
_CODE = ("streams/pricing/book.py", "streams/pricing/book_cache.py", "streams/pricing/catalog.py",
         "streams/pricing/overrides.py", "streams/pricing/resolve.py", "streams/pricing/schema.py",
         "tokenmeter/events.py", "tokenmeter/stored_money.py", "tokenmeter/timefmt.py")
_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path | None:
    configured = os.environ.get(CACHE_ENV)
    if configured is not None:
        return Path(configured).expanduser() if configured.strip() else None
    return Path.home() / ".cache" / "tokenmeter" / "price-books"


@lru_cache(maxsize=1)
def _code_digest() -> bytes:
    import pydantic
    import yaml  # the catalog's YAML reader decides the values the blocks are validated from

    digest = hashlib.sha256(FORMAT + b"\0" + sys.version.encode() + b"\0" + pydantic.VERSION.encode() + b"\0"
                            + yaml.__version__.encode())
    for name in _CODE:
        digest.update(name.encode() + b"\0" + (_ROOT / name).read_bytes() + b"\0")
    return digest.digest()


def book_key(layers: list[list[Path]], overrides_file: Path | None, deployments: dict[str, str]) -> str:
    """sha256 of the code and of every input's path and bytes. OSError when a file cannot be read (the build will
    say which)."""
    digest = hashlib.sha256(_code_digest())
    for files in layers:
        digest.update(b"layer\0")
        for path in files:
            digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    if overrides_file is not None:
        digest.update(b"overrides\0" + str(overrides_file).encode() + b"\0" + overrides_file.read_bytes() + b"\0")
    digest.update(repr(sorted(deployments.items())).encode())
    return digest.hexdigest()


def _private(st: os.stat_result, kind: Callable[[int], bool]) -> bool:
    return kind(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _usable_dir(directory: Path) -> bool:
    """The directory exists (made 0700 if not), is ours and nobody else's to write."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return _private(directory.lstat(), stat.S_ISDIR)
    except OSError:
        return False


def _read(path: Path) -> Any | None:
    try:
        with open(path, "rb") as f:
            if not _private(os.fstat(f.fileno()), stat.S_ISREG):
                return None
            return pickle.load(f)
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - any unreadable cache is only a miss: the book is built instead
        log.info("price book cache %s unreadable (%r): building the book", path, exc)
        return None


def _write(path: Path, book: Any) -> None:
    """Atomically (a temporary file renamed): a reader sees the whole pickle or none."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pickle")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(book, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except Exception as exc:  # noqa: BLE001 - a full disk or an unpicklable book costs the next start a build
        log.info("price book cache %s not written (%r)", path, exc)
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _prune(directory: Path) -> None:
    """Only the KEEP books used last stay (by modification time, which a read refreshes)."""
    try:
        books = sorted(directory.glob("*.pickle"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for stale in books[KEEP:]:
            stale.unlink()
    except OSError:  # another process pruned the same file first
        pass


def cached_build(layers: list[list[Path]], overrides_file: Path | None, deployments: dict[str, str],
                 build: Callable[[], Any], book_type: type) -> Any:
    """The book `build()` would return: read from the cache when its key is there, else built and stored."""
    directory = cache_dir()
    if directory is None or not _usable_dir(directory):
        return build()
    try:
        path = directory / f"{book_key(layers, overrides_file, deployments)}.pickle"
    except OSError:
        return build()  # a file vanished or is unreadable: the build reports it as it always did
    book = _read(path)
    if isinstance(book, book_type):
        try:
            os.utime(path)  # used now: the last to be pruned
        except OSError:
            pass
        return book
    book = build()
    _write(path, book)
    _prune(directory)
    return book
